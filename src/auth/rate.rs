//! Rates over time: a token bucket ([`TokenBucket`], for `max_connection_rate` and
//! `max_publish_rate`) and flapping detection ([`Flapping`], EMQX's `flapping_detect`).
//!
//! Both are plain values owned by one core and told the time (`now`); neither reads a
//! clock nor shares anything between threads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Admits `rate` events a second on average, and up to `burst` at once after a quiet
/// spell. It starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Events a second.
    rate: f64,
    /// In nano-tokens (a token is `NANOS` of them), so that whole rates over whole
    /// nanoseconds add up exactly.
    burst: u64,
    tokens: u64,
    last: Instant,
}

/// Nano-tokens in one token.
const NANOS: u64 = 1_000_000_000;

impl TokenBucket {
    /// `rate` events per second, `burst` at most at once (at least one).
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = (burst.max(1.0) * NANOS as f64) as u64;
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one: whether the event is admitted.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as f64;
        self.last = self.last.max(now);
        let earned = (elapsed * self.rate).min(self.burst as f64) as u64;
        self.tokens = self.tokens.saturating_add(earned).min(self.burst);
        if self.tokens >= NANOS {
            self.tokens -= NANOS;
            true
        } else {
            false
        }
    }
}

/// The flapping settings: `max_disconnects` disconnects of one client id within `window`
/// ban it for `ban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlappingPolicy {
    pub max_disconnects: u32,
    pub window: Duration,
    pub ban: Duration,
}

#[derive(Debug)]
struct Record {
    /// When the window of counted disconnects began (the first of them).
    since: Instant,
    disconnects: u32,
    banned_until: Option<Instant>,
}

/// Disconnects per client id, on the core that owns those ids (so no other core ever
/// needs them). Entries whose window and ban have both passed are swept once the map has
/// doubled since the last sweep, so memory stays proportional to the recent flappers.
#[derive(Debug)]
pub struct Flapping {
    policy: FlappingPolicy,
    records: HashMap<String, Record>,
    sweep_at: usize,
}

/// How many entries the map may hold before its first sweep.
const FIRST_SWEEP: usize = 1024;

impl Flapping {
    pub fn new(policy: FlappingPolicy) -> Flapping {
        Flapping {
            policy,
            records: HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }

    /// Until when `client_id` is banned, if it is at `now`.
    pub fn banned_until(&self, client_id: &str, now: Instant) -> Option<Instant> {
        self.records
            .get(client_id)
            .and_then(|r| r.banned_until)
            .filter(|&until| until > now)
    }

    /// Counts a disconnect of `client_id`; returns true when this one bans it.
    pub fn disconnected(&mut self, client_id: &str, now: Instant) -> bool {
        if self.records.len() >= self.sweep_at {
            self.sweep(now);
        }
        let policy = self.policy;
        let record = self.records.entry(client_id.to_string()).or_insert(Record {
            since: now,
            disconnects: 0,
            banned_until: None,
        });
        if record.banned_until.is_some_and(|until| until > now) {
            return false;
        }
        if now.saturating_duration_since(record.since) > policy.window {
            record.since = now;
            record.disconnects = 0;
        }
        record.banned_until = None;
        record.disconnects += 1;
        if record.disconnects >= policy.max_disconnects {
            record.banned_until = Some(now + policy.ban);
            record.since = now;
            record.disconnects = 0;
            return true;
        }
        false
    }

    fn sweep(&mut self, now: Instant) {
        let window = self.policy.window;
        self.records.retain(|_, r| {
            r.banned_until.is_some_and(|until| until > now)
                || now.saturating_duration_since(r.since) <= window
        });
        self.sweep_at = (self.records.len() * 2).max(FIRST_SWEEP);
    }

    pub fn tracked(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, t0);
        let admitted = (0..20).filter(|_| bucket.take(t0)).count();
        assert_eq!(admitted, 5, "the burst, at once");
        assert!(!bucket.take(t0 + Duration::from_millis(50)), "half a token");
        assert!(
            bucket.take(t0 + Duration::from_millis(100)),
            "one token a tenth of a second"
        );
        assert!(!bucket.take(t0 + Duration::from_millis(100)));
        // Ten seconds of quiet fill it to its burst, not beyond.
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..20).filter(|_| bucket.take(later)).count(), 5);
        // Over a long run it admits its rate: 1,000 tries over 10 s, 10 a second admitted.
        let mut bucket = TokenBucket::new(10.0, 1.0, t0);
        let admitted = (0..1000)
            .filter(|i| bucket.take(t0 + Duration::from_millis(10 * i)))
            .count();
        assert!((100..=101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_clock_that_goes_back_takes_nothing_extra() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut bucket = TokenBucket::new(1.0, 1.0, t0);
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0 - Duration::from_secs(3)));
        assert!(!bucket.take(t0 + Duration::from_millis(500)));
        assert!(bucket.take(t0 + Duration::from_secs(1)));
    }

    fn policy() -> FlappingPolicy {
        FlappingPolicy {
            max_disconnects: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
        }
    }

    #[test]
    fn n_disconnects_in_the_window_ban_until_the_ban_ends() {
        let t0 = Instant::now();
        let mut flapping = Flapping::new(policy());
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!flapping.disconnected("c", at(0)));
        assert!(!flapping.disconnected("c", at(10)));
        assert!(flapping.banned_until("c", at(10)).is_none());
        assert!(flapping.disconnected("c", at(20)), "the third bans");
        assert_eq!(flapping.banned_until("c", at(21)), Some(at(320)));
        assert!(flapping.banned_until("other", at(21)).is_none());
        assert!(flapping.banned_until("c", at(320)).is_none(), "ban over");
        // Counting starts again after the ban.
        assert!(!flapping.disconnected("c", at(321)));
        assert!(!flapping.disconnected("c", at(322)));
        assert!(flapping.disconnected("c", at(323)));
    }

    #[test]
    fn disconnects_spread_wider_than_the_window_do_not_ban() {
        let t0 = Instant::now();
        let mut flapping = Flapping::new(policy());
        for i in 0..10 {
            let now = t0 + Duration::from_secs(40 * i);
            assert!(!flapping.disconnected("c", now), "disconnect {i}");
        }
    }

    #[test]
    fn old_entries_are_swept() {
        let t0 = Instant::now();
        let mut flapping = Flapping::new(policy());
        for i in 0..FIRST_SWEEP {
            flapping.disconnected(&format!("c{i}"), t0);
        }
        assert_eq!(flapping.tracked(), FIRST_SWEEP);
        flapping.disconnected("late", t0 + Duration::from_secs(61));
        assert_eq!(flapping.tracked(), 1);
    }
}
