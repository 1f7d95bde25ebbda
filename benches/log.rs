//! The per-core memory-mapped log on its own: how fast records append (by body size and
//! fsync policy), what a group commit costs under `fsync = always` (records per msync), and
//! how fast a log replays at open.
//!
//! Not a criterion bench: each case appends a fixed volume once, as a broker would, into a
//! fresh log in a temporary directory under `BERTH_BENCH_DIR` (default: the system's
//! temporary directory, which should be a real disk, not tmpfs, for the msync figures).
//!
//! ```sh
//! cargo bench --bench log
//! BERTH_BENCH_LOG_MIB=256 cargo bench --bench log     # volume per case (default 512 MiB)
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth::store::{FsyncPolicy, Log, LogConfig, DEFAULT_SEGMENT_SIZE};

/// Body sizes: a small session record, a 64-byte message as the broker frames it, larger
/// messages.
const BODIES: [usize; 4] = [24, 120, 1024, 4096];
/// Records per msync under `Always`: one per record, then groups as a busy core makes them.
const GROUPS: [usize; 4] = [1, 16, 256, 4096];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("BERTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("berth-log-bench-")
        .tempdir_in(parent)
        .expect("temporary log directory")
}

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Log {
    let config = LogConfig {
        fsync,
        ..LogConfig::new(dir)
    };
    let (log, report) = Log::open(config, |_, _, _| {}).expect("open the log");
    assert!(report.is_clean(), "fresh log damaged: {report:?}");
    log
}

fn rate(what: &str, records: usize, bytes: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what:<44} {records:>9} records {:>8.2} s {:>12.0} records/s {:>9.1} MiB/s",
        secs,
        records as f64 / secs,
        bytes as f64 / secs / f64::from(1 << 20)
    );
}

fn main() {
    let volume = env("BERTH_BENCH_LOG_MIB", 512) << 20;
    println!(
        "segments of {} MiB; {} MiB appended per case",
        DEFAULT_SEGMENT_SIZE >> 20,
        volume >> 20
    );

    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(1)),
    ] {
        for body in BODIES {
            let dir = bench_dir();
            let mut log = open(dir.path(), fsync);
            let payload = vec![0xA5u8; body];
            let records = volume / body;
            let started = Instant::now();
            for _ in 0..records {
                log.append(8, &payload).expect("append");
            }
            let elapsed = started.elapsed();
            rate(
                &format!("append {body} B, fsync {fsync:?}"),
                records,
                records * body,
                elapsed,
            );
            drop(log);

            if fsync == FsyncPolicy::Never {
                let started = Instant::now();
                let mut seen = 0usize;
                let mut bytes = 0usize;
                let config = LogConfig {
                    fsync,
                    ..LogConfig::new(dir.path())
                };
                let (log, report) = Log::open(config, |_, _, b| {
                    seen += 1;
                    bytes += b.len();
                })
                .expect("reopen the log");
                let elapsed = started.elapsed();
                assert!(report.is_clean(), "log damaged: {report:?}");
                assert_eq!(seen, records, "replay lost records");
                rate(&format!("replay {body} B (open)"), seen, bytes, elapsed);
                drop(log);
            }
        }
    }

    // Group commit: `Always` resolves a durable wait once an msync covers it. The broker
    // holds every PUBACK of one read batch behind one such wait.
    let body = 120;
    let payload = vec![0x5Au8; body];
    let budget = Duration::from_secs(3);
    for group in GROUPS {
        let dir = bench_dir();
        let mut log = open(dir.path(), FsyncPolicy::Always);
        let started = Instant::now();
        let mut records = 0usize;
        while started.elapsed() < budget {
            for _ in 0..group {
                log.append(8, &payload).expect("append");
            }
            records += group;
            futures_lite::future::block_on(log.durable()).expect("msync");
        }
        rate(
            &format!("append {body} B, fsync Always, {group}/msync"),
            records,
            records * body,
            started.elapsed(),
        );
    }
}
