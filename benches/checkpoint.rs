//! How long a checkpoint stalls its core: the longest single step (the executor runs
//! nothing else during a step) and the whole checkpoint, on the broker's own
//! memory-mapped log (`fsync = never`, 64 MiB segments) in a temporary directory under
//! `BERTH_BENCH_DIR` (default: the system's temporary directory).
//!
//! Three cores' worth of state, each checkpointed once:
//! - `idle`: `BERTH_BENCH_SESSIONS` (default 1,000,000) offline persistent sessions with
//!   one subscription each;
//! - `held`: one offline subscriber holding `BERTH_BENCH_HELD` (default 1,700) messages
//!   of `BERTH_BENCH_PAYLOAD` bytes (default 1 MiB), the slow-subscriber case: its
//!   segments are all live, so they are kept and the messages not copied;
//! - `sparse`: the same subscriber holding a quarter as many, each between three
//!   messages another session acknowledged: the old segments are a quarter live, so the
//!   held messages are copied (a step copies at most `CheckpointLimits::bytes`).
//!
//! Not a criterion bench: each checkpoint runs once at full size, as in a server, with
//! the pause `Broker::checkpoint_pause` asks for between steps (the server sleeps that
//! long; here the thread does), which totals count.
//! `BERTH_BENCH_ONE_GO=1` runs each checkpoint as one step (`Broker::checkpoint`), which
//! is what the executor did before checkpoints were stepwise.
//!
//! ```sh
//! cargo bench --bench checkpoint
//! BERTH_BENCH_SESSIONS=100000 BERTH_BENCH_HELD=200 cargo bench --bench checkpoint
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use berth::broker::journal::{Journal, LogJournal};
use berth::broker::{Broker, SessionPolicy, WallClock};
use berth::ownership::CoreId;
use berth::protocol::{
    Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
};
use berth::session::state::QueueLimits;
use berth::store::{FsyncPolicy, Log, LogConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn policy(held: usize) -> SessionPolicy {
    SessionPolicy {
        max_session_expiry: Duration::from_secs(7200),
        limits: QueueLimits {
            max_messages: held.max(1000),
            ..QueueLimits::default()
        },
        max_sessions: usize::MAX,
        max_subscriptions: usize::MAX,
    }
}

fn subscribe(broker: &mut Broker, id: &ByteString, filter: &str, now: Instant) {
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        filters: vec![(
            ByteString::from(filter),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    };
    broker.subscribe(id, subscribe, now);
}

fn publish(broker: &mut Broker, topic: &str, payload: &Bytes, now: Instant) -> Vec<u16> {
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: payload.clone(),
    };
    let effects = broker.publish(&ByteString::from_static("backend"), publish, now);
    effects
        .to_clients
        .into_iter()
        .filter_map(|(_, p)| match p.into_packet() {
            Packet::Publish(p) => p.packet_id.map(PacketId::get),
            _ => None,
        })
        .collect()
}

struct Core {
    broker: Broker,
    _dir: tempfile::TempDir,
}

fn core(held: usize) -> Core {
    let parent = std::env::var_os("BERTH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("berth-checkpoint-bench-")
        .tempdir_in(parent)
        .expect("temporary log directory");
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = Log::open(config, |_, _, _| {}).expect("open the log");
    let journal: Box<dyn Journal> = Box::new(LogJournal::new(log, false));
    let clock = WallClock::now_from_system();
    let broker = Broker::with_journal(CoreId(0), 1, policy(held), journal, clock);
    Core { broker, _dir: dir }
}

fn idle(sessions: usize, now: Instant) -> Core {
    let mut c = core(0);
    for i in 0..sessions {
        let id = ByteString::from(format!("device-{i:07}"));
        c.broker
            .connect(&id, false, Duration::from_secs(3600), 100, now)
            .expect("session limit");
        subscribe(&mut c.broker, &id, &format!("fleet/{}/cmd", i / 1000), now);
        c.broker.disconnect(&id, None, now);
    }
    c
}

/// One offline subscriber holding `held` messages of `payload`, each after `dead`
/// messages that an online session acknowledged at once.
fn held(held: usize, dead: usize, payload: usize, now: Instant) -> Core {
    let mut c = core(held);
    let slow = ByteString::from_static("slow");
    c.broker
        .connect(&slow, false, Duration::from_secs(3600), 100, now)
        .unwrap();
    subscribe(&mut c.broker, &slow, "big/#", now);
    c.broker.disconnect(&slow, None, now);
    let fast = ByteString::from_static("fast");
    c.broker
        .connect(&fast, false, Duration::from_secs(3600), 100, now)
        .unwrap();
    subscribe(&mut c.broker, &fast, "dead/#", now);
    let payload = Bytes::from(vec![b'x'; payload]);
    for _ in 0..held {
        for _ in 0..dead {
            for id in publish(&mut c.broker, "dead/x", &payload, now) {
                let ack = Ack {
                    packet_id: PacketId::new(id).unwrap(),
                    reason_code: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                };
                c.broker.on_ack(&fast, Packet::PubAck(ack), now);
            }
        }
        publish(&mut c.broker, "big/x", &payload, now);
    }
    c
}

fn checkpoint(name: &str, mut c: Core, now: Instant) {
    // Building wrote the log faster than its background thread prepares segments (64 MiB
    // allocated and prefaulted each); a server's checkpoint starts on its once-a-second
    // tick. Let the preparation catch up, so that the steps measure the checkpoint.
    std::thread::sleep(Duration::from_secs(1));
    let one_go = std::env::var("BERTH_BENCH_ONE_GO").as_deref() == Ok("1");
    let disk_before = c.broker.disk_bytes();
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    let mut steps = 0;
    let mut times = Vec::new();
    let report = loop {
        let step = Instant::now();
        let result = if one_go {
            Some(c.broker.checkpoint(now).expect("checkpoint"))
        } else {
            c.broker.checkpoint_step(now).expect("checkpoint step")
        };
        longest = longest.max(step.elapsed());
        times.push((step.elapsed(), steps));
        steps += 1;
        if let Some(report) = result {
            break report;
        }
        // The pause the server leaves between steps (the log's segment preparation
        // keeps ahead of a checkpoint paced so).
        std::thread::sleep(c.broker.checkpoint_pause());
    };
    times.sort();
    let slowest: Vec<String> = times
        .iter()
        .rev()
        .take(4)
        .map(|(t, i)| format!("#{i} {:.2} ms", t.as_secs_f64() * 1e3))
        .collect();
    let median = times[times.len() / 2].0;
    let total = started.elapsed();
    println!(
        "{name}: checkpoint of {} sessions, {} messages copied, {} kept, in {steps} steps: longest step {:.2} ms, median {:.3} ms, total {:.2} s (pauses between steps included); log {:.0} -> {:.0} MiB; slowest steps: {}",
        report.sessions,
        report.messages,
        report.kept,
        longest.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        disk_before as f64 / (1 << 20) as f64,
        c.broker.disk_bytes() as f64 / (1 << 20) as f64,
        slowest.join(", "),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sessions = env("BERTH_BENCH_SESSIONS", 1_000_000);
    let held_count = env("BERTH_BENCH_HELD", 1700);
    let payload = env("BERTH_BENCH_PAYLOAD", 1 << 20);
    let now = Instant::now();

    let started = Instant::now();
    let c = idle(sessions, now);
    println!(
        "idle: {sessions} offline sessions built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    checkpoint("idle", c, now);

    let started = Instant::now();
    let c = held(held_count, 0, payload, now);
    println!(
        "held: {held_count} messages of {payload} B held by one session, built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    checkpoint("held", c, now);

    let sparse = (held_count / 4).max(1);
    let started = Instant::now();
    let c = held(sparse, 3, payload, now);
    println!(
        "sparse: {sparse} messages of {payload} B held, each after 3 acknowledged ones, built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    checkpoint("sparse", c, now);
}
