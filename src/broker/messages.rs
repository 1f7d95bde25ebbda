//! The core's message table: every message some session of this core still holds, once,
//! keyed by its [`Seq`], with the number of sessions holding it.
//!
//! A message held only by persistent sessions is kept on disk alone (its log position);
//! it is read back when a session sends it. A message held by a session without expiry
//! also stays in memory, since it was never journaled.
//!
//! Invariant: an entry exists exactly while its reference count is above zero; each
//! reference a session takes is released exactly once (on `Done` or `Dropped`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::journal::{self, Journal, Record};
use crate::session::state::{Message, Messages, Seq};
use crate::store::Position;

#[derive(Debug)]
pub(crate) struct Entry {
    pub pos: Option<Position>,
    pub refs: u32,
    pub size: u32,
    /// Set while a session without a log record holds it.
    pub message: Option<Arc<Message>>,
}

#[derive(Debug, Default)]
pub(crate) struct MessageTable {
    pub entries: HashMap<Seq, Entry>,
    pub next_seq: Seq,
}

impl MessageTable {
    pub fn allocate(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A session let go of `seq`.
    pub fn release(&mut self, seq: Seq) {
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                self.entries.remove(&seq);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Maps the broker's `Instant`s to wall-clock milliseconds and back, for what the log
/// keeps across restarts (when a session went offline, when a message expires).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub base: Instant,
    pub base_unix_ms: u64,
}

impl WallClock {
    pub fn now_from_system() -> WallClock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallClock {
            base: Instant::now(),
            base_unix_ms: unix.as_millis() as u64,
        }
    }

    pub fn unix_ms(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(d) => self.base_unix_ms + d.as_millis() as u64,
            None => self
                .base_unix_ms
                .saturating_sub(self.base.duration_since(at).as_millis() as u64),
        }
    }

    pub fn instant(&self, unix_ms: u64) -> Instant {
        if unix_ms >= self.base_unix_ms {
            self.base + Duration::from_millis(unix_ms - self.base_unix_ms)
        } else {
            let back = Duration::from_millis(self.base_unix_ms - unix_ms);
            self.base.checked_sub(back).unwrap_or(self.base)
        }
    }
}

/// The table and the log together: what a session reads its messages through.
pub(crate) struct Lookup<'a> {
    pub table: &'a MessageTable,
    pub journal: &'a dyn Journal,
    pub clock: WallClock,
}

impl Messages for Lookup<'_> {
    fn get(&self, seq: Seq) -> Option<Arc<Message>> {
        let entry = self.table.entries.get(&seq)?;
        if let Some(message) = &entry.message {
            return Some(message.clone());
        }
        let pos = entry.pos?;
        match read_message(self.journal, pos, self.clock) {
            Ok(message) => Some(Arc::new(message)),
            Err(error) => {
                tracing::error!(seq, ?pos, %error, "cannot read a queued message back from the log");
                None
            }
        }
    }

    fn size(&self, seq: Seq) -> usize {
        self.table.entries.get(&seq).map_or(0, |e| e.size as usize)
    }
}

/// Reads the message record at `pos`.
pub(crate) fn read_message(
    journal: &dyn Journal,
    pos: Position,
    clock: WallClock,
) -> Result<Message, String> {
    let (kind, body) = journal.read(pos).map_err(|e| e.to_string())?;
    match Record::decode(kind, &body).map_err(|e| e.to_string())? {
        Record::Message(m) => message_of(kind, &m.publish, m.publisher, m.expires_ms, clock),
        other => Err(format!(
            "expected a message record, found kind {}",
            other.kind()
        )),
    }
}

pub(crate) fn message_of(
    kind: u8,
    publish: &Bytes,
    publisher: bytestring::ByteString,
    expires_ms: u64,
    clock: WallClock,
) -> Result<Message, String> {
    let publish = journal::decode_publish(kind, publish).map_err(|e| e.to_string())?;
    Ok(Message {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        properties: publish.properties,
        publisher,
        expires_at: (expires_ms != 0).then(|| clock.instant(expires_ms)),
        origin: None,
    })
}
