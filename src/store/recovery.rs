//! Opening a log directory: reading every segment back in order, cutting a torn tail and
//! choosing the head segment. The rules are listed in the module documentation above.

use std::collections::VecDeque;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use memmap2::Advice;

use super::format::{last_nonzero_end, scan, ScanEnd, SegmentHeader, SEGMENT_HEADER};
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
    /// Where a torn tail was cut off the newest segment.
    pub torn_tail: Option<Position>,
    /// Bytes zeroed when cutting it (from the torn record to the last non-zero byte).
    pub cut_bytes: u64,
    /// Damaged records in older segments, with the check that failed. The rest of each of those
    /// segments was not read; the segment is left as it is.
    pub corrupt: Vec<(Position, &'static str)>,
    /// Segments whose header could not be trusted, with the reason; none of their records
    /// were read. They stay on disk until reclaimed.
    pub bad_segments: Vec<(u64, &'static str)>,
    /// Empty segments after the newest data (made ahead of need) that were deleted.
    pub empty_removed: u64,
}

impl RecoveryReport {
    /// True when nothing was damaged: no torn tail, no corrupt record, no bad segment.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.corrupt.is_empty() && self.bad_segments.is_empty()
    }
}

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
        records: u64,
        end: ScanEnd,
    },
    Unreadable(Sealed),
}

impl Found {
    fn is_trailing_empty(&self) -> bool {
        matches!(
            self,
            Found::Readable {
                records: 0,
                end: ScanEnd::Clean { .. },
                ..
            }
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
    let mut found = Vec::new();
    for (id, path, len) in list_segments(dir)? {
        report.segments_scanned += 1;
        found.push(read_segment(id, path, len, &mut report, &mut visit)?);
    }

    let trailing = found
        .iter()
        .rev()
        .take_while(|f| f.is_trailing_empty())
        .count();
    let mut empties = found.split_off(found.len() - trailing).into_iter();
    let mut older: VecDeque<Sealed> = VecDeque::with_capacity(found.len());
    let (mut current, head_offset) = match found.pop() {
        Some(Found::Readable { segment, end, .. }) => {
            let from = match end {
                ScanEnd::Clean { end } => end,
                ScanEnd::Damaged { at, .. } => at,
            };
            (segment, from)
        }
        last => {
            let newest_id = last.as_ref().map(|f| match f {
                Found::Readable { segment, .. } => segment.id,
                Found::Unreadable(sealed) => sealed.id(),
            });
            if let Some(f) = last {
                found.push(f);
            }
            match empties.next() {
                Some(Found::Readable { segment, .. }) => (segment, SEGMENT_HEADER),
                _ => {
                    let id = newest_id.map_or(0, |id| id + 1);
                    (
                        Segment::create(dir, id, segment_size, durable)?,
                        SEGMENT_HEADER,
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
    for f in found {
        older.push_back(match f {
            Found::Readable { segment, end, .. } => {
                if let ScanEnd::Damaged { at, reason } = end {
                    report.corrupt.push((
                        Position {
                            segment: segment.id,
                            offset: at as u32,
                        },
                        reason,
                    ));
                }
                if durable {
                    sync_data(&segment, end)?;
                }
                Sealed::Readable(segment)
            }
            Found::Unreadable(sealed) => sealed,
        });
    }
    cut_tail(&mut current, head_offset, &mut report);
    if durable {
        sync_data(
            &current,
            ScanEnd::Clean {
                end: current.map.len(),
            },
        )?;
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

/// Zeroes the head segment from `from` (the end of its intact records) to its last non-zero
/// byte: a damaged record, or a record whose write was cut short before its header was written.
/// Either way the bytes past the head are zero again, as appends expect.
fn cut_tail(head: &mut Segment, from: usize, report: &mut RecoveryReport) {
    let cut_end = last_nonzero_end(&head.map, from);
    if cut_end > from {
        head.map[from..cut_end].fill(0);
        report.torn_tail = Some(Position {
            segment: head.id,
            offset: from as u32,
        });
        report.cut_bytes = (cut_end - from) as u64;
    }
}

/// Segment files of `dir` as (id, path, length), in id order. Deletes `.tmp` leftovers of a
/// segment whose creation was interrupted.
fn list_segments(dir: &Path) -> Result<Vec<(u64, std::path::PathBuf, u64)>, StoreError> {
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

fn read_segment(
    id: u64,
    path: std::path::PathBuf,
    len: u64,
    report: &mut RecoveryReport,
    visit: &mut impl FnMut(Position, u8, &[u8]),
) -> Result<Found, StoreError> {
    if len < SEGMENT_HEADER as u64 || len > u32::MAX as u64 {
        report.bad_segments.push((id, "file length out of bounds"));
        return Ok(Found::Unreadable(Sealed::Unreadable {
            id,
            path,
            size: len,
        }));
    }
    let segment = Segment::open(id, path, len)?;
    let checked = SegmentHeader::decode(&segment.map).and_then(|header| {
        if header.id != id {
            Err("segment id differs from the file name")
        } else if header.size != len {
            Err("segment size differs from the file length")
        } else {
            Ok(())
        }
    });
    if let Err(reason) = checked {
        report.bad_segments.push((id, reason));
        let Segment { path, .. } = segment;
        return Ok(Found::Unreadable(Sealed::Unreadable {
            id,
            path,
            size: len,
        }));
    }
    // Fault the whole file in with one call instead of one fault per page; only a hint.
    let _ = segment.map.advise(Advice::PopulateRead);
    let (records, end) = scan(&segment.map, |offset, kind, body| {
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
    report.records += records;
    Ok(Found::Readable {
        segment,
        records,
        end,
    })
}

/// Makes the replayed data of a segment durable: a crashed process leaves its writes in the
/// page cache, unsynced.
fn sync_data(segment: &Segment, end: ScanEnd) -> Result<(), StoreError> {
    let end = match end {
        ScanEnd::Clean { end } | ScanEnd::Damaged { at: end, .. } => end,
    };
    segment
        .map
        .flush_range(0, end)
        .map_err(|e| StoreError::io("msync", &segment.path, e))
}
