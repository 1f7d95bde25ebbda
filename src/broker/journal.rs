//! What a core writes to its log, record by record, and how each record reads back.
//!
//! The broker journals every change to persistent state (sessions with a non-zero expiry,
//! their subscriptions, the messages they hold and how far each delivery got, inbound QoS 2
//! state, retained messages) before the packet that depends on it leaves the core, so the
//! log is always at least as far as anything a client was told. Sessions without an expiry
//! are never journaled: clean-session traffic costs the log nothing.
//!
//! Record bodies are little-endian; strings and byte strings are a u32 length then the
//! bytes; `sid` is the session's number on this core. A message body is the message as a
//! v5 PUBLISH packet (so the codec that is fuzzed anyway reads it back), preceded by what a
//! PUBLISH cannot say. The byte layout of every record is listed in ARCHITECTURE.md.
//!
//! `records.rs` holds the record types, `codec.rs` their bytes, `mem.rs` and `log.rs` the
//! two backends of [`Journal`] (a vector in tests, the memory-mapped log in the server).
//!
//! Invariant: decoding never panics on any input; a body that does not parse is reported
//! as [`JournalError`] and recovery skips it.

use bytes::Bytes;

use crate::store::{Position, StoreError};

mod codec;
mod log;
mod mem;
mod records;
#[cfg(test)]
mod tests;

pub use super::exactly_once::Routing;
pub use codec::{decode_publish, encode_publish};
pub use log::LogJournal;
pub use mem::MemJournal;
pub use records::{kind, JournalError, MessageRecord, Record, Snapshot, SnapshotEntry, Target};

/// The log a broker writes to: the core's memory-mapped log in the server, a vector in
/// tests.
pub trait Journal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError>;
    /// Copies the record at `pos` out (the map may be reclaimed later).
    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError>;
    /// Where the next record goes.
    fn head(&self) -> Position;
    /// Live segments, oldest first.
    fn segment_count(&self) -> usize;
    /// Deletes the segments older than `segment`; returns the bytes freed.
    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError>;
    fn disk_bytes(&self) -> u64;
    /// Resolves once everything appended so far is as durable as the `fsync` setting asks
    /// before an acknowledgement; `None` when nothing needs waiting for.
    fn durable(&self) -> Option<Durable> {
        None
    }
    /// `None` while the log has room to grow; while it cannot make its next segment (disk
    /// full), the bytes new messages may still take. The rest of what is left is kept for
    /// the records that follow data already sent (SENT, RECEIVED, DONE, sessions).
    fn room_for_messages(&self) -> Option<usize> {
        None
    }
    /// How long the log's msyncs took so far; `None` where nothing is synced.
    fn fsync_latency(&self) -> Option<crate::histogram::Histogram> {
        None
    }
}

/// A MESSAGE record's bytes besides its publisher, its PUBLISH and its targets: the
/// record header, the fixed fields, and the alignment padding at most.
pub const MESSAGE_RECORD_OVERHEAD: usize = 16 + 7 + 8 + 2 + 8 + 8 + 4 + 4 + 4;

/// A wait for the log to reach the disk.
pub type Durable =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + 'static>>;
