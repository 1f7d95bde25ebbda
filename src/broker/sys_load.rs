//! `$SYS/broker/load/...`: Mosquitto's load averages, exponentially decayed rates per
//! minute over 1, 5 and 15 minutes, worked out by core 0 each time it publishes `$SYS`.
//!
//! As Mosquitto does (`sys_tree.c`, `calc_load`): over an interval of `dt` seconds in
//! which a counter rose by `n`, the rate is `n * 60 / dt` per minute, and each average
//! moves towards it, `new = rate + exp(-dt / window) * (old - rate)`. Payloads are
//! written with two decimals. Pure: the elapsed time comes in as an argument.

use std::time::Duration;

use super::Stat;

/// The counters that have load averages, and the name under `$SYS/broker/load/` of each.
pub const LOADS: [(Stat, &str); 9] = [
    (Stat::MessagesReceived, "messages/received"),
    (Stat::MessagesSent, "messages/sent"),
    (Stat::PublishReceived, "publish/received"),
    (Stat::PublishSent, "publish/sent"),
    (Stat::PublishDropped, "publish/dropped"),
    (Stat::BytesReceived, "bytes/received"),
    (Stat::BytesSent, "bytes/sent"),
    (Stat::SocketsAccepted, "sockets"),
    (Stat::Connects, "connections"),
];

/// The windows of the averages, with the topic suffix of each.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Every load topic, in the order [`Load::figures`] yields them.
pub fn topics() -> impl Iterator<Item = String> {
    LOADS.iter().flat_map(|(_, name)| {
        WINDOWS
            .iter()
            .map(move |(_, window)| format!("$SYS/broker/load/{name}/{window}"))
    })
}

/// The averages and what they last saw.
#[derive(Debug, Default)]
pub struct Load {
    /// When they were last moved (time since start) and the counters then; `None` until
    /// the first update, which only takes the starting point.
    last: Option<(Duration, [u64; LOADS.len()])>,
    averages: [[f64; WINDOWS.len()]; LOADS.len()],
}

impl Load {
    /// Moves the averages to `totals` (the broker-wide counters, in [`LOADS`] order) seen
    /// at `uptime`. An update less than a second after the last is ignored (a rate over
    /// nothing says nothing).
    pub fn update(&mut self, uptime: Duration, totals: [u64; LOADS.len()]) {
        let Some((then, before)) = self.last else {
            self.last = Some((uptime, totals));
            return;
        };
        let dt = uptime.saturating_sub(then).as_secs_f64();
        if dt < 1.0 {
            return;
        }
        for (i, averages) in self.averages.iter_mut().enumerate() {
            // A counter never goes down; one that seems to (a core not heard from yet)
            // counts as no change.
            let rate = totals[i].saturating_sub(before[i]) as f64 * 60.0 / dt;
            for (average, (window, _)) in averages.iter_mut().zip(WINDOWS) {
                *average = rate + (-dt / window).exp() * (*average - rate);
            }
        }
        self.last = Some((uptime, totals));
    }

    /// Every load topic and its payload (`"12.34"`).
    pub fn figures(&self) -> impl Iterator<Item = (String, String)> + '_ {
        topics().zip(
            self.averages
                .iter()
                .flat_map(|row| row.iter().map(|average| format!("{average:.2}"))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_steady_rate_is_approached_faster_by_the_shorter_windows() {
        let mut load = Load::default();
        let mut totals = [0u64; LOADS.len()];
        load.update(at(0), totals);
        // 10 messages received every 10 s: 60 per minute.
        for step in 1..=6 {
            totals[0] += 10;
            load.update(at(10 * step), totals);
        }
        let figures: Vec<(String, String)> = load.figures().collect();
        let value = |topic: &str| {
            let (_, payload) = figures.iter().find(|(t, _)| t == topic).expect(topic);
            payload.parse::<f64>().expect("a number")
        };
        let one = value("$SYS/broker/load/messages/received/1min");
        let five = value("$SYS/broker/load/messages/received/5min");
        let fifteen = value("$SYS/broker/load/messages/received/15min");
        // After one minute the 1 min average is at 1 - 1/e of the rate.
        assert!((one - 60.0 * (1.0 - (-1.0f64).exp())).abs() < 0.01, "{one}");
        assert!(one > five && five > fifteen && fifteen > 0.0);
        assert_eq!(value("$SYS/broker/load/messages/sent/1min"), 0.0);
        assert_eq!(figures.len(), LOADS.len() * WINDOWS.len());
    }

    #[test]
    fn updates_closer_than_a_second_are_ignored() {
        let mut load = Load::default();
        load.update(at(0), [0; LOADS.len()]);
        load.update(Duration::from_millis(500), [100; LOADS.len()]);
        assert!(load.figures().all(|(_, payload)| payload == "0.00"));
        load.update(at(60), [100; LOADS.len()]);
        assert!(load.figures().all(|(_, payload)| payload != "0.00"));
    }
}
