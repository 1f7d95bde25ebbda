//! Opening a log directory: reading every segment back in order, salvaging the intact records
//! of damaged ones, cutting a torn tail and choosing the head segment. The rules are listed in
//! the module documentation above.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::Advice;

use super::format::{scan, Damage, Scan, SegmentHeader, SEGMENT_HEADER};
use super::segment::{self, Sealed, Segment};
use super::{Position, StoreError};

/// What [`Log::open`](super::Log::open) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Wall time of the whole open: listing, scanning, cutting, creating the head if needed.
    pub elapsed: Duration,
    /// Segment files found (trailing empty ones included).
    pub segments_scanned: u64,
    /// Intact records passed to `visit`.
    pub records: u64,
    /// Their body bytes.
    pub body_bytes: u64,
    /// Where a torn tail was cut off the head segment.
    pub torn_tail: Option<Position>,
    /// Bytes zeroed when cutting it (from the torn record to the last non-zero byte).
    pub cut_bytes: u64,
    /// Damaged bytes that were skipped and left on disk as they are, in log order.
    pub damaged: Vec<Damaged>,
    /// Segments that were read (their intact records replayed) but are never appended to
    /// again, with the reason: a header that fails its checks, a file length other than the
    /// header says, damage followed by valid records. They stay on disk, readable, until
    /// reclaimed.
    pub sealed: Vec<(u64, &'static str)>,
    /// Segments none of whose records could be read (file shorter than a header, another
    /// format version or alignment), with the reason. They stay on disk until reclaimed.
    pub bad_segments: Vec<(u64, &'static str)>,
    /// Segment ids missing between the oldest and the newest segment file: (first, last).
    pub missing: Vec<(u64, u64)>,
    /// Empty segments after the newest data (made ahead of need) that were deleted.
    pub empty_removed: u64,
}

/// A damaged range of a segment that recovery skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// Where the records stopped.
    pub at: Position,
    /// Bytes skipped: to the next valid record, or to the last non-zero byte of the segment.
    pub bytes: u64,
    /// The check that failed.
    pub reason: &'static str,
    /// Whether valid records followed in the same segment (read on from there).
    pub valid_after: bool,
}

impl RecoveryReport {
    /// True when nothing was damaged or missing.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none()
            && self.damaged.is_empty()
            && self.sealed.is_empty()
            && self.bad_segments.is_empty()
            && self.missing.is_empty()
    }
}

const VALID_AFTER_DAMAGE: &str = "damaged records followed by valid ones";

pub struct Recovered {
    pub older: VecDeque<Sealed>,
    pub current: Segment,
    pub head: Position,
    pub report: RecoveryReport,
}

/// A segment as found by the scan, before the head is chosen.
enum Found {
    Readable {
        segment: Segment,
        scan: Scan,
        /// Why it must never be appended to, if it must not.
        sealed: Option<&'static str>,
    },
    Unreadable(Sealed),
}

impl Found {
    fn id(&self) -> u64 {
        match self {
            Found::Readable { segment, .. } => segment.id,
            Found::Unreadable(sealed) => sealed.id(),
        }
    }

    /// Readable, appendable and without a single record: made ahead of need.
    fn is_trailing_empty(&self) -> bool {
        matches!(
            self,
            Found::Readable { scan, sealed: None, .. } if scan.records == 0 && scan.is_clean()
        )
    }
}

pub fn recover(
    dir: &Path,
    segment_size: u64,
    durable: bool,
    mut visit: impl FnMut(Position, u8, &[u8]),
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let mut report = RecoveryReport::default();
    let mut found: Vec<Found> = Vec::new();
    for (id, path, len) in list_segments(dir)? {
        report.segments_scanned += 1;
        if let Some(previous) = found.last().map(Found::id) {
            if id > previous + 1 {
                report.missing.push((previous + 1, id - 1));
            }
        }
        found.push(read_segment(id, path, len, &mut report, &mut visit)?);
    }
    let newest_id = found.last().map(Found::id);

    let trailing = found
        .iter()
        .rev()
        .take_while(|f| f.is_trailing_empty())
        .count();
    let mut empties = found.split_off(found.len() - trailing).into_iter();
    let (mut current, head_offset, torn) = match found.pop() {
        Some(Found::Readable {
            segment,
            scan,
            sealed: None,
        }) if scan.damaged.is_empty() => (segment, scan.end, scan.tail),
        last => {
            if let Some(mut f) = last {
                // The newest data cannot take appends: damage followed by valid records
                // (kept, so never written after), or a sealed or unreadable segment.
                if let Found::Readable {
                    segment,
                    sealed: sealed @ None,
                    ..
                } = &mut f
                {
                    *sealed = Some(VALID_AFTER_DAMAGE);
                    report.sealed.push((segment.id, VALID_AFTER_DAMAGE));
                }
                found.push(f);
            }
            match empties.next() {
                Some(Found::Readable { segment, .. }) => (segment, SEGMENT_HEADER, None),
                _ => {
                    let id = newest_id.map_or(0, |id| id + 1);
                    (
                        Segment::create(dir, id, segment_size, durable)?,
                        SEGMENT_HEADER,
                        None,
                    )
                }
            }
        }
    };
    for f in empties {
        if let Found::Readable { segment, .. } = f {
            let path = segment.path.clone();
            drop(segment);
            fs::remove_file(&path).map_err(|e| StoreError::io("delete empty segment", &path, e))?;
            report.empty_removed += 1;
        }
    }
    let mut older: VecDeque<Sealed> = VecDeque::with_capacity(found.len());
    for f in found {
        older.push_back(match f {
            Found::Readable { segment, scan, .. } => {
                note_damage(&mut report, segment.id, &scan);
                if durable {
                    sync_data(&segment)?;
                }
                Sealed::Readable(segment)
            }
            Found::Unreadable(sealed) => sealed,
        });
    }
    if let Some(tail) = torn {
        cut_tail(&mut current, tail, &mut report);
    }
    if durable {
        sync_data(&current)?;
    }
    current.prefault_from(head_offset);
    report.elapsed = started.elapsed();
    let head = Position {
        segment: current.id,
        offset: head_offset as u32,
    };
    Ok(Recovered {
        older,
        current,
        head,
        report,
    })
}

/// Lists the damage of a segment that is not the head (whose tail is cut instead).
fn note_damage(report: &mut RecoveryReport, segment: u64, scan: &Scan) {
    let ranges = scan.damaged.iter().map(|d| (d, true));
    for (d, valid_after) in ranges.chain(scan.tail.iter().map(|d| (d, false))) {
        report.damaged.push(Damaged {
            at: Position {
                segment,
                offset: d.at as u32,
            },
            bytes: (d.until - d.at) as u64,
            reason: d.reason,
            valid_after,
        });
    }
}

/// Zeroes the head segment's torn tail: from the end of its intact records to its last
/// non-zero byte (a damaged record, or a record whose write was cut short before its header
/// was written, with no valid record after it: the head is never chosen otherwise). Either
/// way the bytes past the head are zero again, as appends expect.
fn cut_tail(head: &mut Segment, tail: Damage, report: &mut RecoveryReport) {
    head.map[tail.at..tail.until].fill(0);
    report.torn_tail = Some(Position {
        segment: head.id,
        offset: tail.at as u32,
    });
    report.cut_bytes = (tail.until - tail.at) as u64;
}

/// Segment files of `dir` as (id, path, length), in id order. Deletes `.tmp` leftovers of a
/// segment whose creation was interrupted.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, StoreError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(id) = segment::parse_file_name(&name) {
            let len = entry
                .metadata()
                .map_err(|e| StoreError::io("stat", &path, e))?
                .len();
            segments.push((id, path, len));
        } else if name
            .strip_suffix(".tmp")
            .and_then(segment::parse_file_name)
            .is_some()
        {
            fs::remove_file(&path)
                .map_err(|e| StoreError::io("delete unfinished segment", &path, e))?;
        }
    }
    segments.sort_unstable_by_key(|&(id, _, _)| id);
    Ok(segments)
}

/// Maps one segment file and replays its intact records. Only a file too short for a header,
/// or a header that is intact and names another format, keeps its records unread; any other
/// header damage seals the segment (never appended to) but its records, each checked by its
/// own CRC, are read.
fn read_segment(
    id: u64,
    path: PathBuf,
    len: u64,
    report: &mut RecoveryReport,
    visit: &mut impl FnMut(Position, u8, &[u8]),
) -> Result<Found, StoreError> {
    if len < SEGMENT_HEADER as u64 || len > u64::from(u32::MAX) {
        report.bad_segments.push((id, "file length out of bounds"));
        return Ok(Found::Unreadable(Sealed::Unreadable {
            id,
            path,
            size: len,
        }));
    }
    let segment = Segment::open(id, path)?;
    let len = segment.size;
    let sealed = match SegmentHeader::decode(&segment.map) {
        Err(reason @ ("unknown format version" | "unknown record alignment"))
        | Err(reason @ "shorter than a segment header") => {
            report.bad_segments.push((id, reason));
            let Segment { path, .. } = segment;
            return Ok(Found::Unreadable(Sealed::Unreadable {
                id,
                path,
                size: len,
            }));
        }
        Err(reason) => Some(reason),
        Ok(header) if header.id != id => Some("segment id differs from the file name"),
        Ok(header) if header.size > len => Some("file shorter than its header says (truncated)"),
        Ok(header) if header.size < len => Some("file longer than its header says"),
        Ok(_) => None,
    };
    if let Some(reason) = sealed {
        report.sealed.push((id, reason));
    }
    // Fault the whole file in with one call instead of one fault per page; only a hint.
    let _ = segment.map.advise(Advice::PopulateRead);
    let scanned = scan(&segment.map, |offset, kind, body| {
        report.body_bytes += body.len() as u64;
        visit(
            Position {
                segment: id,
                offset: offset as u32,
            },
            kind,
            body,
        );
    });
    report.records += scanned.records;
    Ok(Found::Readable {
        segment,
        scan: scanned,
        sealed,
    })
}

/// Makes the replayed data of a segment durable: a crashed process leaves its writes in the
/// page cache, unsynced.
fn sync_data(segment: &Segment) -> Result<(), StoreError> {
    segment
        .map
        .flush_range(0, segment.map.len())
        .map_err(|e| StoreError::io("msync", &segment.path, e))
}
