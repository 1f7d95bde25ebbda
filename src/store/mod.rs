//! The per-core, memory-mapped, append-only, segmented log: opaque records (`kind: u8`,
//! `body: &[u8]`) appended by one core's executor thread, read back by position, replayed in
//! order at open, reclaimed a whole segment at a time. What the records mean (sessions,
//! messages, acks) is decided above this layer.
//!
//! **Guarantees.** An append never waits on the disk: it copies into a segment that was
//! created, `fallocate`d and prefaulted on a background thread before it was needed, and msync
//! runs on another background thread. A record that [`Log::append`] returned a position for
//! survives a crash of the process (the page cache keeps it); it survives a crash of the
//! machine once a [`Log::durable`] future covering it resolved under [`FsyncPolicy::Always`]
//! (or one interval later under [`FsyncPolicy::Interval`]). Open replays the intact records,
//! every one it can reach past damaged bytes, in the order they were appended, and never
//! appends after damaged bytes. A log directory belongs to one `Log` in one process (the
//! broker holds a lock on its data directory): files of a live log must not be written,
//! truncated or deleted by anything else (they are memory-mapped).
//!
//! # On-disk format, version 1
//!
//! A log is a directory (`<data-dir>/core-<n>`) of segment files named `seg-<id>.log`, `<id>`
//! being the segment id in 20 decimal digits, so that names sort in id order. Each new segment
//! takes the next id. Any other file is ignored, except `seg-<id>.log.tmp`: a segment whose
//! creation was interrupted, deleted at open. A segment file is allocated whole when it is
//! created (`fallocate`, never sparse), appears under its final name only once its header is
//! written (it is renamed from `.tmp`), and never changes length afterwards. Integers are
//! little-endian. CRCs are CRC-32C (Castagnoli, as in iSCSI and ext4).
//!
//! Segment header, bytes 0..64 of the file:
//!
//! | offset | bytes | field                                                  |
//! |-------:|------:|--------------------------------------------------------|
//! |      0 |     8 | magic, ASCII `BERTHLOG`                                |
//! |      8 |     4 | format version: 1                                      |
//! |     12 |     4 | record alignment: 8                                    |
//! |     16 |     8 | segment id (the same as in the file name)              |
//! |     24 |     8 | segment size in bytes (the same as the file length)    |
//! |     32 |     4 | CRC-32C of bytes 0..32                                 |
//! |     36 |    28 | reserved, zero                                         |
//!
//! Records follow from offset 64, each starting at a multiple of 8 (its [`Position`] is the
//! segment id and that offset):
//!
//! | offset | bytes | field                                                           |
//! |-------:|------:|-----------------------------------------------------------------|
//! |      0 |     4 | frame length: 16 + body length (so never 0)                     |
//! |      4 |     4 | CRC-32C of bytes 0..4 followed by bytes 8..frame length         |
//! |      8 |     1 | kind, opaque to the log                                         |
//! |      9 |     7 | reserved, zero (covered by the CRC)                             |
//! |     16 |     n | body                                                            |
//!
//! then zero bytes up to the next multiple of 8, where the next record starts. The CRC covers
//! the length, the kind and the body. A record never spans segments: one that does not fit in
//! what is left of the head segment goes to the next segment, and the rest stays zero.
//! **Zeroed space is the end of data**: at a record boundary, 16 zero bytes, or fewer than 16
//! bytes left in the segment, end the segment's records. The writer keeps everything past its
//! head zero, and writes a record's body before its header.
//!
//! # Recovery: what [`Log::open`] does, in order
//!
//! Recovery keeps every record whose frame checks that it can reach, and never appends after
//! damaged bytes.
//!
//! 1. Segment files are read in the order of the ids in their names. Ids missing between the
//!    oldest and the newest file are reported ([`RecoveryReport::missing`]): berth never makes
//!    such a gap (checkpoints delete the oldest segments, open deletes empty ones at the end),
//!    so their records were lost.
//! 2. A file shorter than 64 bytes, or a header whose CRC checks but that names another format
//!    version or record alignment, is *unreadable*: listed in [`RecoveryReport::bad_segments`],
//!    none of its records read, kept on disk until reclaimed, never appended to. Any other
//!    failed header check (magic, CRC, reserved bytes, id different from the file name, size
//!    different from the file length: a truncated file) *seals* the segment
//!    ([`RecoveryReport::sealed`]): its records are read all the same (each carries its own
//!    CRC), it is never appended to, and it is mapped at the length the file has, never past
//!    its end (touching a map past the end of its file is SIGBUS).
//! 3. Records are read from offset 64 in order. Each must have a frame length of at least 16
//!    that stays inside the file and a matching CRC, or be the end of data. Where one fails,
//!    or where zeroes are followed by non-zero bytes, the scan **resynchronises**: it tries
//!    each following multiple of 8 for a frame whose length and CRC check, and reads on from
//!    the first one found; the bytes skipped are listed in [`RecoveryReport::damaged`] with
//!    `valid_after`. Damage with nothing valid after it is the segment's *tail*. A random
//!    candidate passes the CRC-32C with a probability of about 2^-32, so reading garbage as a
//!    record is possible but rare; a record whose body holds a well-formed frame (a client
//!    may publish one) can yield that frame when the record's own header is damaged. Zeroes
//!    at the end of a segment look like its clean end: records zeroed there are lost unseen.
//!    `visit` sees every record read, in (segment, offset) order, which is the order they
//!    were appended in.
//! 4. Trailing empty segments (readable, not sealed, no record, clean end: segments made ahead
//!    of need) are deleted ([`RecoveryReport::empty_removed`]).
//! 5. The newest remaining segment is the head, and appends continue at the end of its last
//!    record, if it is readable, not sealed, and damaged at most in its tail. Such a tail is a
//!    **torn tail** (a write cut short, or damage to the last records, with nothing valid
//!    after it): the bytes from there to the last non-zero byte of the segment are zeroed
//!    ([`RecoveryReport::torn_tail`], [`RecoveryReport::cut_bytes`]), so that the next append
//!    starts on clean zeroes and the next open reads clean.
//! 6. Otherwise (damage followed by valid records is corruption, not a tear; or the segment is
//!    sealed or unreadable) the newest segment is left exactly as it is and sealed (reason
//!    "damaged records followed by valid ones"), and the first trailing empty segment, or else
//!    a new segment with the next id (0 in an empty directory), becomes the head. The damaged
//!    file keeps its name rather than being moved aside: the positions recovery handed out in
//!    it must stay readable through [`Log::read`] for as long as queues point at them, and it
//!    must be read again at the next open; the next checkpoint reclaims it like any other old
//!    segment. Until then each open reports its damage again.
//! 7. Damage in any other segment is left as it is: nothing is appended after it, since appends
//!    only go to the head segment.
//! 8. Under `Interval` and `Always`, the replayed data is msynced before open returns (a process
//!    killed without msync leaves its writes in the page cache only).

mod error;
mod flusher;
mod format;
mod recovery;
mod segment;
mod worker;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::StoreError;
pub use flusher::Durable;
pub use recovery::{Damaged, RecoveryReport};

use flusher::Flusher;
use format::{framed_len, read_slot, seal_record, Slot, ALIGN, RECORD_HEADER, SEGMENT_HEADER};
use segment::{Sealed, Segment};
use worker::Worker;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Smallest segment size accepted (one page).
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// A log's first segment is this size (or `segment_size`, if smaller), and each new one
/// twice the one before, up to `segment_size`: an idle broker holds two 1 and 2 MiB
/// segments per core rather than two of 64 MiB, prefaulted (it held 264 MiB of RSS and
/// 257 MiB of disk with defaults), and a busy one reaches full-size segments after six.
pub const FIRST_SEGMENT_SIZE: u64 = 1 << 20;

/// When appended records are made durable against a crash of the machine (a crash of the
/// process loses nothing that was appended, whatever the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never msync; the kernel writes pages back when it likes.
    Never,
    /// msync what was appended every interval on a background thread.
    Interval(Duration),
    /// msync on demand: [`Log::durable`] resolves once an msync covering every record
    /// appended before the call has completed.
    Always,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// Raised while a log cannot make its next segment (disk full): it then has only what is
/// left of its head segment. Shared with whoever must stop taking new data meanwhile (the
/// server's store gate); set and cleared by the log's background thread.
#[derive(Clone, Debug, Default)]
pub struct RoomSignal(Arc<AtomicBool>);

impl RoomSignal {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, lacking: bool) {
        self.0.store(lacking, Ordering::Relaxed);
    }
}

/// Two configurations are the same whatever signal they report to.
impl PartialEq for RoomSignal {
    fn eq(&self, _: &RoomSignal) -> bool {
        true
    }
}

impl Eq for RoomSignal {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The log's own directory, `<data-dir>/core-<n>`; created if missing.
    pub dir: PathBuf,
    /// The size new segment files grow to ([`FIRST_SEGMENT_SIZE`] first, then doubling): a
    /// multiple of 4096, at least [`MIN_SEGMENT_SIZE`] and
    /// below 4 GiB (offsets are 32 bits). Existing segments keep the size they were made with.
    pub segment_size: u64,
    pub fsync: FsyncPolicy,
    /// Raised while the next segment cannot be made.
    pub lacking_room: RoomSignal,
}

impl LogConfig {
    /// 64 MiB segments, msync every second.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::default(),
            lacking_room: RoomSignal::default(),
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.segment_size < MIN_SEGMENT_SIZE || !self.segment_size.is_multiple_of(4096) {
            return Err(StoreError::Config(
                "segment size must be a multiple of 4096, at least 4096",
            ));
        }
        if self.segment_size > u64::from(u32::MAX) {
            return Err(StoreError::Config("segment size must be below 4 GiB"));
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err(StoreError::Config("fsync interval must be above zero"));
        }
        Ok(())
    }

    /// The size of a new segment after one of `previous` bytes (`None`: the first of a log).
    pub fn next_segment_size(&self, previous: Option<u64>) -> u64 {
        let first = FIRST_SEGMENT_SIZE.min(self.segment_size);
        previous.map_or(first, |p| {
            p.saturating_mul(2).clamp(first, self.segment_size)
        })
    }

    /// The largest body a record can have in a segment of this configuration.
    pub fn max_body(&self) -> usize {
        (self.segment_size as usize - SEGMENT_HEADER - RECORD_HEADER) & !(ALIGN - 1)
    }
}

/// Where a record starts: its segment and its byte offset in it. Positions order like the
/// records they point to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u32,
}

/// One core's log. Owned by that core's executor thread and never shared; its two helper
/// threads (segment preparation, msync) only ever touch files and maps, never the executor.
pub struct Log {
    config: LogConfig,
    /// Segments before the head one, oldest first.
    older: VecDeque<Sealed>,
    /// The head segment: the only one appended to. Everything in it past `head` is zero.
    current: Segment,
    head: Position,
    disk_bytes: u64,
    worker: Worker,
    /// `None` under `Never`.
    flusher: Option<(Arc<Flusher>, JoinHandle<()>)>,
}

impl Log {
    /// Opens the log in `config.dir` (creating the directory if needed), calling `visit` for
    /// every intact record in order, and recovers from damage as the module documentation
    /// describes. Blocks while it reads: call it at startup, not on a busy executor.
    pub fn open(
        config: LogConfig,
        visit: impl FnMut(Position, u8, &[u8]),
    ) -> Result<(Log, RecoveryReport), StoreError> {
        config.validate()?;
        let durable = config.fsync != FsyncPolicy::Never;
        let recovered =
            recovery::recover(&config.dir, config.next_segment_size(None), durable, visit)?;
        let recovery::Recovered {
            older,
            mut current,
            head,
            report,
        } = recovered;
        let flusher = if durable {
            let (flusher, thread) = Flusher::start(config.fsync, head)?;
            let map = match current.sync_map.clone() {
                Some(map) => map,
                None => current.add_sync_map()?,
            };
            flusher.rolled(None, current.id, map, current.path.clone(), head.offset);
            Some((flusher, thread))
        } else {
            None
        };
        let mut worker = Worker::start(config.dir.clone(), durable, config.lacking_room.clone())?;
        worker.prepare(current.id + 1, config.next_segment_size(Some(current.size)));
        let disk_bytes = older.iter().map(Sealed::size).sum::<u64>() + current.size;
        let log = Log {
            config,
            older,
            current,
            head,
            disk_bytes,
            worker,
            flusher,
        };
        Ok((log, report))
    }

    /// Appends one record and returns where it starts. Rolls to the next segment when the
    /// record does not fit in the head one.
    pub fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError> {
        self.append_with(kind, body.len(), |buf| buf.copy_from_slice(body))
    }

    /// Appends one record of `len` body bytes, letting `write` fill the body in place (it gets
    /// exactly `len` zeroed bytes of the map). If `write` panics, nothing is appended.
    pub fn append_with(
        &mut self,
        kind: u8,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<Position, StoreError> {
        let framed = framed_len(len);
        if len > self.config.max_body() {
            return Err(StoreError::RecordTooLarge {
                len,
                max: self.config.max_body(),
            });
        }
        if self.head.offset as usize + framed > self.current.map.len() {
            // Segments grow: a record bigger than the next one rolls on until one holds it
            // (at most six times from the first segment), leaving empty segments between.
            loop {
                self.roll()?;
                if SEGMENT_HEADER + framed <= self.current.map.len() {
                    break;
                }
            }
        }
        let at = self.head.offset as usize;
        let frame = ZeroOnUnwind(&mut self.current.map[at..at + RECORD_HEADER + len]);
        write(&mut frame.0[RECORD_HEADER..]);
        seal_record(&mut frame.0[..], kind);
        drop(frame);
        let position = self.head;
        self.head.offset += framed as u32;
        if let Some((flusher, _)) = &self.flusher {
            flusher.appended(self.head.offset);
        }
        Ok(position)
    }

    /// Makes the prepared next segment the head. On error (the next segment could not be
    /// made: disk full, ...) nothing changes and the next append tries again.
    fn roll(&mut self) -> Result<(), StoreError> {
        let next_id = self.current.id + 1;
        let size = self.config.next_segment_size(Some(self.current.size));
        let next = self.worker.take(next_id, size)?;
        if let (Some((flusher, _)), Some(map)) = (&self.flusher, &next.sync_map) {
            let offset = SEGMENT_HEADER as u32;
            flusher.rolled(
                Some(self.head.offset),
                next_id,
                map.clone(),
                next.path.clone(),
                offset,
            );
        }
        self.disk_bytes += next.size;
        let sealed = std::mem::replace(&mut self.current, next);
        self.older.push_back(Sealed::Readable(sealed));
        self.head = Position {
            segment: next_id,
            offset: SEGMENT_HEADER as u32,
        };
        let after = self.config.next_segment_size(Some(self.current.size));
        self.worker.prepare(next_id + 1, after);
        Ok(())
    }

    /// Reads the record at `pos` back, checking its CRC.
    pub fn read(&self, pos: Position) -> Result<(u8, &[u8]), StoreError> {
        let data: &[u8] = if pos.segment == self.current.id {
            &self.current.map[..self.head.offset as usize]
        } else {
            let index = self
                .older
                .binary_search_by_key(&pos.segment, Sealed::id)
                .map_err(|_| StoreError::NoRecord(pos))?;
            match &self.older[index] {
                Sealed::Readable(segment) => &segment.map,
                Sealed::Unreadable { .. } => return Err(StoreError::NoRecord(pos)),
            }
        };
        let offset = pos.offset as usize;
        if offset < SEGMENT_HEADER || !offset.is_multiple_of(ALIGN) {
            return Err(StoreError::NoRecord(pos));
        }
        match read_slot(data, offset) {
            Slot::Record { kind, body, .. } => Ok((kind, body)),
            Slot::End => Err(StoreError::NoRecord(pos)),
            Slot::Damaged(reason) => Err(StoreError::Corrupt { pos, reason }),
        }
    }

    /// `None` while the next segment is ready or being made; while it cannot be made (disk
    /// full), the bytes left in the head segment: all that appends can still use.
    pub fn reserve_left(&self) -> Option<usize> {
        self.worker
            .lacking()
            .then(|| self.current.map.len() - self.head.offset as usize)
    }

    /// Where the next record will start.
    pub fn head(&self) -> Position {
        self.head
    }

    /// Ids of the live segments, oldest first; the last is the head segment.
    pub fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.older
            .iter()
            .map(Sealed::id)
            .chain(std::iter::once(self.current.id))
    }

    /// Deletes every whole segment older than `segment` (never the head segment). Reads of
    /// their positions fail from now on; the files are unmapped and deleted on the background
    /// thread. Returns the bytes of disk freed.
    pub fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError> {
        let mut freed = 0;
        while self.older.front().is_some_and(|s| s.id() < segment) {
            let Some(sealed) = self.older.pop_front() else {
                break;
            };
            freed += sealed.size();
            self.worker.retire(sealed);
        }
        if let Some((flusher, _)) = &self.flusher {
            flusher.removed_before(segment.min(self.current.id));
        }
        self.disk_bytes -= freed;
        Ok(freed)
    }

    /// Bytes the live segment files take on disk (they are allocated whole).
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Resolves once every record appended so far is durable under the policy: at once under
    /// `Never` and `Interval` (the interval thread does the work), after the next msync that
    /// covers them under `Always` (callers waiting at the same time share one msync).
    pub fn durable(&self) -> Durable {
        match (&self.flusher, self.config.fsync) {
            (Some((flusher, _)), FsyncPolicy::Always) => flusher.durable(self.head),
            _ => Durable::ready(),
        }
    }

    /// How long the flusher's msyncs took; `None` under `fsync = "never"` (no flusher).
    pub fn fsync_latency(&self) -> Option<crate::histogram::Histogram> {
        self.flusher.as_ref().map(|(flusher, _)| flusher.latency())
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

impl Drop for Log {
    /// Under `Interval` and `Always`, msyncs what is left before returning.
    fn drop(&mut self) {
        if let Some((flusher, thread)) = self.flusher.take() {
            flusher.close();
            let _ = thread.join();
        }
    }
}

/// Zeroes a record's bytes again if the caller's `write` panics, so that the space past the
/// head stays zero.
struct ZeroOnUnwind<'a>(&'a mut [u8]);

impl Drop for ZeroOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fill(0);
        }
    }
}
