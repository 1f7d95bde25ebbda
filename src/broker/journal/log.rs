//! The memory-mapped log (`crate::store::Log`) as the engine's journal.
//!
//! Invariant: an acknowledgement waits for msync only under `fsync = "always"`; appends
//! never wait on the disk.

use bytes::Bytes;

use super::{Durable, Journal};
use crate::store::{Log, Position, StoreError};

/// The memory-mapped log as the engine's journal.
pub struct LogJournal {
    log: Log,
    /// Acknowledgements wait for msync only under `fsync = "always"`.
    always: bool,
}

impl LogJournal {
    /// Journals to `log`; `always` makes acknowledgements wait for msync (`fsync = "always"`).
    pub fn new(log: Log, always: bool) -> LogJournal {
        LogJournal { log, always }
    }
}

impl Journal for LogJournal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError> {
        self.log.append(kind, body)
    }

    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError> {
        self.log
            .read(pos)
            .map(|(kind, body)| (kind, Bytes::copy_from_slice(body)))
    }

    fn head(&self) -> Position {
        self.log.head()
    }

    fn segment_count(&self) -> usize {
        self.log.segments().count()
    }

    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError> {
        self.log.remove_segments_before(segment)
    }

    fn disk_bytes(&self) -> u64 {
        self.log.disk_bytes()
    }

    fn fsync_latency(&self) -> Option<crate::histogram::Histogram> {
        self.log.fsync_latency()
    }

    fn durable(&self) -> Option<Durable> {
        self.always.then(|| Box::pin(self.log.durable()) as Durable)
    }

    /// A quarter of a segment is kept for the records that follow data already sent.
    fn room_for_messages(&self) -> Option<usize> {
        let kept = self.log.config().segment_size as usize / 4;
        self.log
            .reserve_left()
            .map(|left| left.saturating_sub(kept))
    }
}
