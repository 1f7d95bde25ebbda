//! Behaviour of the log through its public API; `damage.rs` does damage to its files by
//! hand.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use futures_lite::future::block_on;

use super::format::{framed_len, RECORD_HEADER, SEGMENT_HEADER};
use super::segment::file_name;
use super::*;

mod damage;

type Replayed = Vec<(Position, u8, Vec<u8>)>;

const SMALL: u64 = 64 << 10;

fn config(dir: &Path, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        segment_size: SMALL,
        fsync,
        lacking_room: Default::default(),
    }
}

fn open(dir: &Path) -> (Log, RecoveryReport, Replayed) {
    open_with(config(dir, FsyncPolicy::Never))
}

fn open_with(config: LogConfig) -> (Log, RecoveryReport, Replayed) {
    let mut seen = Vec::new();
    let (log, report) = Log::open(config, |pos, kind, body| {
        seen.push((pos, kind, body.to_vec()))
    })
    .unwrap();
    (log, report, seen)
}

/// A body that says which record it is, of a length that varies with it.
fn body(i: usize) -> Vec<u8> {
    let mut body = format!("record-{i}-").into_bytes();
    body.resize(body.len() + (i * 37) % 200, (i % 251) as u8);
    body
}

fn fill(log: &mut Log, count: usize) -> Replayed {
    (0..count)
        .map(|i| {
            let b = body(i);
            let kind = (i % 7) as u8;
            (log.append(kind, &b).unwrap(), kind, b)
        })
        .collect()
}

fn patch(dir: &Path, segment: u64, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(dir.join(file_name(segment)))
        .unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn append_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report, seen) = open(dir.path());
    assert!(seen.is_empty() && report.is_clean());
    let a = log.append(1, b"hello").unwrap();
    let b = log.append(0, b"").unwrap();
    let c = log.append_with(255, 300, |buf| buf.fill(0xAB)).unwrap();
    assert_eq!(
        a,
        Position {
            segment: 0,
            offset: SEGMENT_HEADER as u32
        }
    );
    assert!(a < b && b < c);
    assert_eq!(log.read(a).unwrap(), (1, &b"hello"[..]));
    assert_eq!(log.read(b).unwrap(), (0, &b""[..]));
    assert_eq!(log.read(c).unwrap(), (255, &[0xAB; 300][..]));
    assert_eq!(
        log.head().offset as usize,
        c.offset as usize + framed_len(300)
    );
    assert!(matches!(log.read(log.head()), Err(StoreError::NoRecord(_))));
    assert!(matches!(
        log.read(Position {
            segment: 0,
            offset: 3
        }),
        Err(StoreError::NoRecord(_))
    ));
}

#[test]
fn many_records_roll_across_small_segments_and_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    let segments: Vec<u64> = log.segments().collect();
    assert!(segments.len() >= 5, "only {segments:?}");
    assert_eq!(segments, (0..segments.len() as u64).collect::<Vec<_>>());
    assert_eq!(log.disk_bytes(), segments.len() as u64 * SMALL);
    for (pos, kind, body) in &written {
        assert_eq!(log.read(*pos).unwrap(), (*kind, &body[..]));
    }
    drop(log);

    let (log, report, seen) = open(dir.path());
    assert_eq!(seen, written);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 3000);
    assert_eq!(report.empty_removed, 1, "the segment made ahead of need");
    assert_eq!(log.segments().collect::<Vec<_>>(), segments);
}

#[test]
fn a_record_larger_than_a_segment_is_an_error_and_the_largest_that_fits_works() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let max = log.config().max_body();
    let err = log.append(0, &vec![1; max + 1]).unwrap_err();
    assert!(matches!(err, StoreError::RecordTooLarge { .. }), "{err}");
    log.append(0, b"x").unwrap();
    let pos = log.append(9, &vec![2; max]).unwrap();
    assert_eq!(
        pos,
        Position {
            segment: 1,
            offset: SEGMENT_HEADER as u32
        }
    );
    assert_eq!(log.read(pos).unwrap().1.len(), max);
}

#[test]
fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1000, 4097, 8 << 30] {
        let config = LogConfig {
            segment_size: size,
            ..config(dir.path(), FsyncPolicy::Never)
        };
        assert!(
            matches!(Log::open(config, |_, _, _| {}), Err(StoreError::Config(_))),
            "{size}"
        );
    }
    let zero = config(dir.path(), FsyncPolicy::Interval(Duration::ZERO));
    assert!(matches!(
        Log::open(zero, |_, _, _| {}),
        Err(StoreError::Config(_))
    ));
}

#[test]
fn remove_segments_before_frees_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 3000);
    let head = log.head().segment;
    let before = log.disk_bytes();
    assert_eq!(log.remove_segments_before(2).unwrap(), 2 * SMALL);
    assert_eq!(log.disk_bytes(), before - 2 * SMALL);
    assert_eq!(log.segments().next(), Some(2));
    assert_eq!(log.remove_segments_before(2).unwrap(), 0);
    for (pos, kind, body) in &written {
        match log.read(*pos) {
            Ok(found) => assert_eq!(found, (*kind, &body[..])),
            Err(e) => assert!(
                pos.segment < 2 && matches!(e, StoreError::NoRecord(_)),
                "{e}"
            ),
        }
    }
    // The head segment is never removed, whatever is asked.
    log.remove_segments_before(u64::MAX).unwrap();
    assert_eq!(log.segments().collect::<Vec<_>>(), vec![head]);
    let pos = log.append(5, b"still appending").unwrap();
    drop(log);
    assert!(!dir.path().join(file_name(0)).exists());
    let (_, report, seen) = open(dir.path());
    let expected: Vec<_> = written
        .iter()
        .filter(|(p, _, _)| p.segment == head)
        .cloned()
        .collect();
    assert_eq!(seen[..seen.len() - 1], expected[..]);
    assert_eq!(seen.last().unwrap().0, pos);
    assert!(report.is_clean());
}

#[test]
fn always_durable_resolves_after_msync_and_callers_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open_with(config(dir.path(), FsyncPolicy::Always));
    block_on(log.durable()).unwrap(); // Nothing appended yet.
    let written = fill(&mut log, 2000); // Several segments: the flusher follows rolls.
    let first = log.durable();
    log.append(1, b"one more").unwrap();
    let second = log.durable();
    block_on(async { futures_lite::future::zip(first, second).await })
        .0
        .unwrap();
    block_on(log.durable()).unwrap();
    drop(log);
    let (_, report, seen) = open_with(config(dir.path(), FsyncPolicy::Always));
    assert!(report.is_clean());
    assert_eq!(seen.len(), written.len() + 1);
}

#[test]
fn interval_and_never_durable_are_ready_at_once() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open_with(config(dir.path(), policy));
        fill(&mut log, 100);
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(log.durable()))
                .is_some()
        );
    }
}

#[test]
fn dropped_durable_future_does_not_hold_up_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open_with(config(dir.path(), FsyncPolicy::Always));
    log.append(1, b"x").unwrap();
    let mut pending = log.durable();
    let _ = block_on(futures_lite::future::poll_once(&mut pending));
    drop(pending);
    log.append(1, b"y").unwrap();
    block_on(log.durable()).unwrap();
}

#[test]
fn append_error_when_the_next_segment_cannot_be_made_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("core-0");
    let (mut log, _, _) = open(&log_dir);
    // The background thread may be creating the next segment in there right now, which
    // makes a removal fail (ENOTEMPTY, or a file renamed under it): try until it is gone.
    let mut removed = std::fs::remove_dir_all(&log_dir);
    for _ in 0..100 {
        if removed.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        removed = std::fs::remove_dir_all(&log_dir);
    }
    removed.unwrap();
    let mut error = None;
    for i in 0..10_000 {
        if let Err(e) = log.append(0, &body(i)) {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("appends past two segments in a deleted directory must fail");
    assert!(
        matches!(&error, StoreError::Io { path, .. } if path.starts_with(&log_dir)),
        "{error}"
    );
    // Once the disk is usable again, appends go on.
    std::fs::create_dir_all(&log_dir).unwrap();
    let pos = log.append(0, b"recovered").unwrap();
    assert_eq!(log.read(pos).unwrap().1, b"recovered");
}

#[test]
fn a_panicking_writer_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    log.append(1, b"before").unwrap();
    let head = log.head();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.append_with(2, 50, |buf| {
            buf.fill(0xEE);
            panic!("writer failed");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(log.head(), head);
    log.append(3, b"after").unwrap();
    drop(log);
    let (_, report, seen) = open(dir.path());
    assert!(report.is_clean(), "{report:?}");
    let bodies: Vec<_> = seen.into_iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies, vec![b"before".to_vec(), b"after".to_vec()]);
}

#[test]
fn segments_keep_their_size_when_the_configured_size_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open(dir.path());
    let written = fill(&mut log, 1000);
    drop(log);
    let bigger = LogConfig {
        segment_size: SMALL * 2,
        ..config(dir.path(), FsyncPolicy::Never)
    };
    let (mut log, report, seen) = open_with(bigger.clone());
    assert!(report.is_clean());
    assert_eq!(seen, written);
    let more = fill(&mut log, 1000);
    drop(log);
    let (log, _, seen) = open_with(bigger);
    assert_eq!(seen.len(), 2000);
    assert_eq!(seen[1000..], more[..]);
    let sizes: Vec<u64> = log
        .segments()
        .map(|id| {
            std::fs::metadata(dir.path().join(file_name(id)))
                .unwrap()
                .len()
        })
        .collect();
    assert!(
        sizes.contains(&SMALL) && sizes.contains(&(SMALL * 2)),
        "{sizes:?}"
    );
}

#[test]
fn unfinished_segment_files_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join(format!("{}.tmp", file_name(4)));
    std::fs::write(&tmp, b"half made").unwrap();
    std::fs::write(dir.path().join("README"), b"not ours").unwrap();
    let (_, report, _) = open(dir.path());
    assert!(report.is_clean());
    assert!(!tmp.exists());
    assert!(dir.path().join("README").exists());
}

#[test]
fn segments_start_small_and_double_up_to_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_size: 4 * FIRST_SEGMENT_SIZE,
        ..config(dir.path(), FsyncPolicy::Never)
    };
    let sizes = |dir: &Path| -> Vec<u64> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| (e.file_name(), e.metadata().unwrap().len()))
            .collect();
        files.sort();
        files.into_iter().map(|(_, len)| len).collect()
    };
    let (mut log, _, _) = open_with(config.clone());
    let m = FIRST_SEGMENT_SIZE;
    // An idle log: its first segment and the one prepared after it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sizes(dir.path()).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sizes(dir.path()), vec![m, 2 * m]);
    // 12 MiB of 64 KiB records fill segments of 1, 2, 4 and 4 MiB, and then some.
    let record = vec![7u8; 64 << 10];
    for _ in 0..192 {
        log.append(1, &record).unwrap();
    }
    let grown = sizes(dir.path());
    assert_eq!(&grown[..4], &[m, 2 * m, 4 * m, 4 * m], "{grown:?}");
    // A record bigger than the next segment rolls on until one holds it.
    drop(log);
    let fresh = tempfile::tempdir().unwrap();
    let (mut log, _, _) = open_with(LogConfig {
        dir: fresh.path().to_path_buf(),
        ..config.clone()
    });
    let big = vec![9u8; (3 * m) as usize];
    let at = log.append(2, &big).unwrap();
    assert_eq!(log.read(at).unwrap(), (2, &big[..]));
    let after = log.append(3, b"after").unwrap();
    drop(log);
    let (_, report, replayed) = open_with(LogConfig {
        dir: fresh.path().to_path_buf(),
        ..config
    });
    assert!(report.is_clean(), "{report:?}");
    let kinds: Vec<(Position, u8, usize)> =
        replayed.iter().map(|(p, k, b)| (*p, *k, b.len())).collect();
    assert_eq!(kinds, vec![(at, 2, big.len()), (after, 3, 5)]);
}
