//! The wills one core holds for its sessions: those waiting to be published (a v5 Will
//! Delay Interval, or the end of their session [MQTT-3.1.3-9]) and those in the log.
//!
//! Invariants: a client has at most one pending will; the queue of due times may hold
//! stale entries (a will cancelled, published or scheduled again since), so a will comes
//! due only through the entry that carries its own due time, and never twice. `logged`
//! mirrors the log: a session's will is in it exactly while a WILL record of it is in the
//! log and no WILL_CLEAR, SESSION_ONLINE or SESSION_END has followed (checkpoints rewrite
//! it from here). [`Wills`] itself neither journals nor publishes: the `Broker` calls
//! below journal (WILL, WILL_CLEAR) and `Broker::expire` publishes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::{self, Record};
use super::Broker;
use crate::protocol::Publish;

#[derive(Default)]
pub(super) struct Wills {
    /// Wills waiting for their Will Delay Interval (or the end of their session):
    /// client id -> (due, the will as published).
    pending: HashMap<ByteString, (Instant, Publish)>,
    /// The pending wills by due time; entries no longer in `pending` are skipped.
    due: BinaryHeap<Reverse<(Instant, ByteString)>>,
    /// Wills of persistent sessions that are in the log (WILL written, not yet cleared):
    /// sid -> (Will Delay Interval, the will as journaled).
    logged: HashMap<u64, (u32, Bytes)>,
}

impl Wills {
    /// `will` is published at `at` unless cancelled first; replaces the client's will.
    pub fn schedule(&mut self, client_id: ByteString, will: Publish, at: Instant) {
        self.due.push(Reverse((at, client_id.clone())));
        self.pending.insert(client_id, (at, will));
    }

    /// Takes the client's pending will out, if it has one: cancelled by a new connection,
    /// or to be published now because its session ends.
    pub fn take(&mut self, client_id: &ByteString) -> Option<Publish> {
        self.pending.remove(client_id).map(|(_, will)| will)
    }

    /// Takes out the next will whose due time is `now` or earlier, with its client id.
    pub fn next_due(&mut self, now: Instant) -> Option<(ByteString, Publish)> {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                return None;
            }
            let Reverse((at, client_id)) = self.due.pop()?;
            if self
                .pending
                .get(&client_id)
                .is_some_and(|(due, _)| *due == at)
            {
                if let Some((_, will)) = self.pending.remove(&client_id) {
                    return Some((client_id, will));
                }
            }
        }
        None
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The session `sid`'s will was journaled (a WILL record).
    pub fn log(&mut self, sid: u64, delay_secs: u32, publish: Bytes) {
        self.logged.insert(sid, (delay_secs, publish));
    }

    /// The session `sid`'s will left the log (or is about to). Returns whether it had one.
    pub fn unlog(&mut self, sid: u64) -> bool {
        self.logged.remove(&sid).is_some()
    }

    /// The session `sid`'s will as journaled: (Will Delay Interval, the PUBLISH's bytes).
    pub fn logged(&self, sid: u64) -> Option<&(u32, Bytes)> {
        self.logged.get(&sid)
    }

    #[cfg(test)]
    pub fn logged_count(&self) -> usize {
        self.logged.len()
    }

    /// The pending wills: client id -> (due, the will).
    #[cfg(test)]
    pub fn pending(&self) -> &HashMap<ByteString, (Instant, Publish)> {
        &self.pending
    }
}

impl Broker {
    /// A will to publish at `at` unless the client reconnects first (v5 Will Delay
    /// Interval); it is published at the latest when its session ends [MQTT-3.1.3-9].
    pub fn schedule_will(&mut self, client_id: &ByteString, will: Publish, at: Instant) {
        // It may wait long: one allocation of its own, not slices of the CONNECT's buffer.
        let packet_id = will.packet_id;
        let will = journal::decode_publish(journal::kind::WILL, &journal::encode_publish(&will))
            .map(|copy| Publish { packet_id, ..copy })
            .unwrap_or(will);
        self.wills.schedule(client_id.clone(), will, at);
    }

    /// The will of the client's new connection, journaled for a persistent session so that
    /// a restart keeps it (the will is session state, MQTT 5.0 section 4.1). Called right
    /// after `connect`; `delay_secs` is its Will Delay Interval.
    pub fn hold_will(&mut self, client_id: &ByteString, will: &Publish, delay_secs: u32) {
        let Some(sid) = self.sessions.get(client_id).and_then(|slot| slot.sid) else {
            return;
        };
        let publish = journal::encode_publish(will);
        self.journal(&Record::Will {
            sid,
            delay_secs,
            publish: publish.clone(),
        });
        self.wills.log(sid, delay_secs, publish);
    }

    /// The client's will will never be published: a normal DISCONNECT deleted it, it was
    /// published, or the server shut the connection down.
    pub fn drop_will(&mut self, client_id: &ByteString) {
        let Some(sid) = self.sessions.get(client_id).and_then(|slot| slot.sid) else {
            return;
        };
        if self.wills.unlog(sid) {
            self.journal(&Record::WillClear { sid });
        }
    }

    pub fn pending_wills(&self) -> usize {
        self.wills.pending_count()
    }
}
