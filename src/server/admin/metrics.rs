//! `GET /metrics`: the cores' figures in the Prometheus text exposition format (version
//! 0.0.4), one series per core (label `core`), gathered when scraped: the cores count in
//! plain per-core cells, no atomics on their paths. Names follow Prometheus' conventions:
//! the `berth_` prefix, base units, `_total` on counters.

use std::fmt::Write as _;

use crate::broker::Stat;

/// A figure's name, type and help line.
fn describe(stat: Stat) -> (&'static str, &'static str, &'static str) {
    use Stat::*;
    match stat {
        ClientsConnected => ("berth_connections", "gauge", "Clients connected."),
        ClientsDisconnected => (
            "berth_sessions_offline",
            "gauge",
            "Persistent sessions whose client is away.",
        ),
        Subscriptions => ("berth_subscriptions", "gauge", "Subscriptions held."),
        RetainedMessages => (
            "berth_retained_messages",
            "gauge",
            "Retained messages (every core holds all of them).",
        ),
        MessagesReceived => (
            "berth_packets_received_total",
            "counter",
            "MQTT control packets received from clients.",
        ),
        MessagesSent => (
            "berth_packets_sent_total",
            "counter",
            "MQTT control packets written to clients.",
        ),
        PublishReceived => (
            "berth_messages_received_total",
            "counter",
            "PUBLISH packets received from clients.",
        ),
        PublishSent => (
            "berth_messages_sent_total",
            "counter",
            "PUBLISH packets written to clients.",
        ),
        PublishDropped => (
            "berth_messages_dropped_total",
            "counter",
            "Messages dropped: a full queue or outbox, or a packet over a client's maximum.",
        ),
        PublishRefused => (
            "berth_messages_refused_total",
            "counter",
            "QoS 1/2 PUBLISH packets refused because the store could not take them.",
        ),
        BytesReceived => (
            "berth_received_bytes_total",
            "counter",
            "Bytes read from clients.",
        ),
        BytesSent => (
            "berth_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
        ),
        StoreBytes => (
            "berth_log_disk_bytes",
            "gauge",
            "Bytes of log segments on disk.",
        ),
        StoreMessages => (
            "berth_stored_messages",
            "gauge",
            "Messages held for sessions (each stored once per core).",
        ),
        StoreQueued => (
            "berth_queued_messages",
            "gauge",
            "Messages waiting in session queues or windows, one per session.",
        ),
        StoreErrors => (
            "berth_log_errors_total",
            "counter",
            "Records the log could not take (disk full, I/O error).",
        ),
        SubscriptionsRefused => (
            "berth_subscriptions_refused_total",
            "counter",
            "SUBSCRIBE filters refused with Quota exceeded (max_subscriptions).",
        ),
    }
}

/// The exposition of every core's figures (`per_core[i]` is core i's).
pub fn render(per_core: &[Vec<(Stat, u64)>], uptime_secs: u64) -> String {
    let mut out = String::new();
    for stat in Stat::ALL {
        let (name, kind, help) = describe(stat);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, figures) in per_core.iter().enumerate() {
            if let Some((_, value)) = figures.iter().find(|(s, _)| *s == stat) {
                let _ = writeln!(out, "{name}{{core=\"{core}\"}} {value}");
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP berth_uptime_seconds Seconds since the broker started.\n\
         # TYPE berth_uptime_seconds gauge\nberth_uptime_seconds {uptime_secs}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_one_family_with_a_series_per_core() {
        let core = |n| Stat::ALL.iter().map(|&s| (s, n)).collect::<Vec<_>>();
        let text = render(&[core(1), core(2)], 5);
        for stat in Stat::ALL {
            let (name, kind, _) = describe(stat);
            assert!(name.starts_with("berth_"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert!(
                text.contains(&format!("{name}{{core=\"1\"}} 2\n")),
                "{name}"
            );
        }
        assert!(text.ends_with("berth_uptime_seconds 5\n"));
    }
}
