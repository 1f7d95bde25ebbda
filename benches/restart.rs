//! A restart of the real broker binary over a large data directory: how long from exec to
//! the ready line, and how much memory the recovered state takes.
//!
//! The data directory is written the way the broker writes it: one engine per core, each
//! over its own memory-mapped log, holding the persistent sessions whose client ids that
//! core owns, each subscribed (groups of `BERTH_BENCH_GROUP` sessions share a filter) and
//! offline with `BERTH_BENCH_QUEUED` QoS 1 messages of 64 B queued. Then `berth` starts on
//! it and the bench waits for `berth listening on ...`.
//!
//! ```sh
//! cargo bench --bench restart                              # 1,000,000 sessions x 10
//! BERTH_BENCH_SESSIONS=100000 cargo bench --bench restart
//! ```
//! `BERTH_BENCH_DIR` picks where the temporary data directory goes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use berth::broker::journal::LogJournal;
use berth::broker::{Broker, SessionPolicy, WallClock};
use berth::ownership::{owner_of, CoreId};
use berth::protocol::{PacketId, Properties, Publish, QoS, Subscribe, SubscriptionOptions};
use berth::session::state::QueueLimits;
use berth::store::{FsyncPolicy, Log, LogConfig};

const CORES: usize = 2;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// Writes core `core`'s share of the sessions into `data/core-<core>`; returns how many.
fn populate(data: &Path, core: usize, sessions: usize, group: usize, queued: usize) -> usize {
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::new(data.join(format!("core-{core}")))
    };
    let (log, _) = Log::open(config, |_, _, _| {}).expect("open the log");
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut broker = Broker::with_journal(
        CoreId(core),
        CORES,
        policy(),
        Box::new(LogJournal::new(log, false)),
        clock,
    );
    let mut made = 0;
    let groups = sessions.div_ceil(group);
    for g in 0..groups {
        let filter = ByteString::from(format!("fleet/{g}/cmd"));
        for i in 0..group {
            let id = ByteString::from(format!("device-{g:05}-{i:05}"));
            if owner_of(&id, CORES) != CoreId(core) {
                continue;
            }
            broker
                .connect(&id, false, Duration::from_secs(3600), 100, now)
                .expect("session limit");
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).expect("nonzero"),
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
            made += 1;
        }
    }
    let payload = Bytes::from(vec![b'x'; 64]);
    for _ in 0..queued {
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
            // Only this core's engine: what it would send to the other core is dropped,
            // since that core gets the same publishes from its own loop.
            let _ = broker.publish(&ByteString::from_static("backend"), publish, now);
        }
    }
    made
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let sessions = env("BERTH_BENCH_SESSIONS", 1_000_000);
    let queued = env("BERTH_BENCH_QUEUED", 10);
    let group = env("BERTH_BENCH_GROUP", 1000).min(sessions);
    let parent = std::env::var_os("BERTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("berth-restart-bench-")
        .tempdir_in(parent)
        .expect("temporary data directory");
    let data = dir.path().join("data");

    let started = Instant::now();
    let made: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CORES)
            .map(|core| {
                let data = data.clone();
                s.spawn(move || populate(&data, core, sessions, group, queued))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("populate"))
            .collect()
    });
    // What `berth` itself writes on first start (server::storage::check_layout).
    std::fs::write(
        data.join("layout.toml"),
        format!("# written by berth; do not edit\nformat = 1\ncores = {CORES}\n"),
    )
    .expect("layout.toml");
    let total: usize = made.iter().sum();
    println!(
        "data directory: {total} sessions ({made:?} per core), {} queued references, written in {:.1} s",
        total * queued,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--listen", "127.0.0.1:0", "--cores", &CORES.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(["--fsync", "never", "--sys-interval", "0", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the ready line");
    let ready = started.elapsed();
    assert!(
        line.starts_with("berth listening on"),
        "berth did not start: {line:?}"
    );
    let pid = child.id();
    let rss = status_kib(pid, "VmRSS:");
    let anon = status_kib(pid, "RssAnon:");
    println!(
        "berth ready in {:.2} s ({:.0} sessions/s, {:.0} queued references/s); RSS {} MiB, of it anonymous {} MiB = {} B per session with its queue",
        ready.as_secs_f64(),
        total as f64 / ready.as_secs_f64(),
        (total * queued) as f64 / ready.as_secs_f64(),
        rss / 1024,
        anon / 1024,
        anon * 1024 / total.max(1) as u64
    );
    let _ = child.kill();
    let _ = child.wait();
}
