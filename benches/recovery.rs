//! Persistent-session scale: memory per session and per queued reference, the rate of
//! publishing into offline queues, and how fast a core's log replays (records/s and queued
//! references/s) into a ready engine, checkpoint included.
//!
//! Not a criterion bench: each step runs once at full size (1,000,000 sessions and
//! 10,000,000 queued references by default), as a restart would.
//!
//! A second case holds one session with many subscriptions (25,000, 50,000 and 100,000
//! filters by default): one SUBSCRIBE carrying them all, then the replay of the log as
//! written (SUBSCRIBE records) and after a checkpoint (one SNAPSHOT record). Both must stay
//! linear in the number of filters, or one client could slow every restart.
//!
//! ```sh
//! cargo bench --bench recovery                     # full size, both cases
//! BERTH_BENCH_SESSIONS=100000 cargo bench --bench recovery
//! BERTH_BENCH_CASE=subscriptions BERTH_BENCH_SUBSCRIPTIONS=25000,50000,100000 \
//!     cargo bench --bench recovery                 # one session, many subscriptions
//! ```
//! The journal is the broker's own memory-mapped log, in a temporary directory under
//! `BERTH_BENCH_DIR` (default: the system's temporary directory), with `fsync = never` so
//! that the numbers show the log and the engine rather than the disk. Replays read it back
//! with `Log::open`, as a restart does. `BERTH_BENCH_JOURNAL=mem` keeps the journal in
//! memory instead, to show the engine alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use berth::broker::journal::{Journal, LogJournal, MemJournal};
use berth::broker::{Broker, Rebuild, SessionPolicy, WallClock};
use berth::ownership::CoreId;
use berth::protocol::{PacketId, Properties, Publish, QoS, Subscribe, SubscriptionOptions};
use berth::session::state::QueueLimits;
use berth::store::{FsyncPolicy, Log, LogConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Anonymous resident memory: the engine's heap (a mapped log would be file-backed).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        max_session_expiry: Duration::from_secs(7200),
        limits: QueueLimits {
            max_messages: 1000,
            ..QueueLimits::default()
        },
        max_sessions: usize::MAX,
        max_subscriptions: usize::MAX,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let case = std::env::var("BERTH_BENCH_CASE").unwrap_or_else(|_| "all".to_owned());
    if case == "all" || case == "subscriptions" {
        let sizes = std::env::var("BERTH_BENCH_SUBSCRIPTIONS")
            .unwrap_or_else(|_| "25000,50000,100000".to_owned());
        for n in sizes.split(',').filter_map(|n| n.trim().parse().ok()) {
            one_session(n);
        }
    }
    if case == "all" || case == "fleet" {
        fleet();
    }
}

/// One persistent session subscribed to `n` filters in one SUBSCRIBE, then replayed.
fn one_session(n: usize) {
    let store = Store::from_env();
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut broker = Broker::with_journal(CoreId(0), 1, policy(), store.fresh(), clock);
    let id = ByteString::from_static("many-filters");
    broker
        .connect(&id, false, Duration::from_secs(3600), 100, now)
        .expect("session limit");
    let filters = (0..n)
        .map(|i| {
            let filter = ByteString::from(format!("site/{}/sensor/{i}/+", i % 100));
            let options = SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            };
            (filter, options)
        })
        .collect();
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        filters,
    };
    let rss0 = rss_bytes();
    let started = Instant::now();
    let outcome = broker.subscribe(&id, subscribe, now);
    let elapsed = started.elapsed();
    assert_eq!(outcome.sub_ack.reason_codes.len(), n);
    drop(outcome);
    println!(
        "one session, {n} subscriptions in one SUBSCRIBE: {:.3} s, {} B of memory per subscription",
        elapsed.as_secs_f64(),
        (rss_bytes() - store.memory_bytes()).saturating_sub(rss0) / n as u64
    );
    broker.disconnect(&id, None, now);
    drop(broker);
    let mut broker = replay(
        &format!("one session, {n} subscriptions, replay of SUBSCRIBE records"),
        &store,
        clock,
    );
    broker.checkpoint(now).expect("checkpoint");
    drop(broker);
    drop(replay(
        &format!("one session, {n} subscriptions, replay of a SNAPSHOT"),
        &store,
        clock,
    ));
}

/// A fleet of persistent sessions, each with one subscription and a few queued messages.
fn fleet() {
    let sessions = env("BERTH_BENCH_SESSIONS", 1_000_000);
    let per_session = env("BERTH_BENCH_QUEUED", 10);
    let group = env("BERTH_BENCH_GROUP", 1000).min(sessions);
    let groups = sessions / group;
    let store = Store::from_env();
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut broker = Broker::with_journal(CoreId(0), 1, policy(), store.fresh(), clock);

    let rss0 = rss_bytes();
    let started = Instant::now();
    for g in 0..groups {
        let filter = ByteString::from(format!("fleet/{g}/cmd"));
        for i in 0..group {
            let id = ByteString::from(format!("device-{g:05}-{i:05}"));
            broker
                .connect(&id, false, Duration::from_secs(3600), 100, now)
                .expect("session limit");
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).unwrap(),
                properties: Properties::default(),
                filters: vec![(
                    filter.clone(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )],
            };
            broker.subscribe(&id, subscribe, now);
            broker.disconnect(&id, None, now);
        }
    }
    let sessions_time = started.elapsed();
    // An in-memory journal's own bytes are not the engine's: leave them out.
    let rss1 = rss_bytes() - store.memory_bytes();
    println!(
        "{sessions} persistent sessions (each subscribed, offline): {:.2} s, {:.0} sessions/s, {} B of memory per session",
        sessions_time.as_secs_f64(),
        sessions as f64 / sessions_time.as_secs_f64(),
        rss1.saturating_sub(rss0) / sessions as u64
    );

    let payload = Bytes::from(vec![b'x'; 64]);
    let started = Instant::now();
    let mut published = 0u64;
    for m in 0..per_session {
        for g in 0..groups {
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: ByteString::from(format!("fleet/{g}/cmd")),
                packet_id: PacketId::new(1),
                properties: Properties::default(),
                payload: payload.clone(),
            };
            let _ = m;
            broker.publish(&ByteString::from_static("backend"), publish, now);
            published += 1;
        }
    }
    let publish_time = started.elapsed();
    let refs = published * group as u64;
    let rss2 = rss_bytes() - store.memory_bytes();
    println!(
        "{published} messages of 64 B into {refs} offline queue slots: {:.2} s, {:.0} queued references/s, {:.1} B of memory per queued reference (message table included)",
        publish_time.as_secs_f64(),
        refs as f64 / publish_time.as_secs_f64(),
        rss2.saturating_sub(rss1) as f64 / refs as f64
    );
    println!(
        "log ({}): {:.1} MiB",
        store.describe(),
        broker.disk_bytes() as f64 / (1 << 20) as f64
    );
    drop(broker);

    let mut broker = replay("replay of the log as written", &store, clock);

    let started = Instant::now();
    let report = broker.checkpoint(now).expect("checkpoint");
    println!(
        "checkpoint: {} sessions, {} messages in {:.2} s; log now {:.1} MiB",
        report.sessions,
        report.messages,
        started.elapsed().as_secs_f64(),
        broker.disk_bytes() as f64 / (1 << 20) as f64
    );
    drop(broker);
    drop(replay("replay after a checkpoint", &store, clock));
}

/// Where the journal lives.
enum Store {
    Memory(MemJournal),
    Disk(tempfile::TempDir),
}

impl Store {
    fn from_env() -> Store {
        if std::env::var("BERTH_BENCH_JOURNAL").as_deref() == Ok("mem") {
            return Store::Memory(MemJournal::new(4096));
        }
        let parent = std::env::var_os("BERTH_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("berth-recovery-bench-")
            .tempdir_in(parent)
            .expect("temporary log directory");
        Store::Disk(dir)
    }

    fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "in memory".to_owned(),
            Store::Disk(dir) => format!("memory-mapped, {}", dir.path().display()),
        }
    }

    /// Heap bytes the journal itself holds (not the engine's).
    fn memory_bytes(&self) -> u64 {
        match self {
            Store::Memory(journal) => journal.disk_bytes(),
            Store::Disk(_) => 0,
        }
    }

    /// An empty journal for the first run.
    fn fresh(&self) -> Box<dyn Journal> {
        self.open(|_, _, _| {})
    }

    /// Opens the journal, showing every record to `visit` first, as a restart does.
    fn open(&self, mut visit: impl FnMut(berth::store::Position, u8, &[u8])) -> Box<dyn Journal> {
        match self {
            Store::Memory(journal) => {
                journal.replay(|pos, kind, body| visit(pos, kind, body));
                Box::new(journal.clone())
            }
            Store::Disk(dir) => {
                let config = LogConfig {
                    fsync: FsyncPolicy::Never,
                    ..LogConfig::new(dir.path())
                };
                let (log, report) = Log::open(config, visit).expect("open the log");
                assert!(report.is_clean(), "bench log damaged: {report:?}");
                Box::new(LogJournal::new(log, false))
            }
        }
    }
}

fn replay(what: &str, store: &Store, clock: WallClock) -> Broker {
    let started = Instant::now();
    let mut rebuild = Rebuild::new(clock);
    let journal = store.open(|pos, kind, body| rebuild.visit(pos, kind, body));
    let records = rebuild.records;
    let (broker, report) =
        Broker::recover(CoreId(0), 1, policy(), journal, rebuild, Instant::now());
    let elapsed = started.elapsed();
    println!(
        "{what}: {records} records -> {} sessions, {} queued references in {:.2} s ({:.0} records/s, {:.0} references/s)",
        report.sessions,
        report.queued,
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        report.queued as f64 / elapsed.as_secs_f64()
    );
    broker
}
