//! Restating one session, and the messages it holds, at the head of the log: a session
//! that becomes persistent after the fact (promotion) and a checkpoint's SNAPSHOT both
//! write it this way.
//!
//! Invariant: every message a SNAPSHOT names is findable from the records at or after it
//! (a copy, or MESSAGE_AT where its record stays), since recovery may start from a
//! checkpoint after the records that first stored it.

use std::time::Instant;

use bytestring::ByteString;

use super::super::journal::{self, Record, Snapshot, SnapshotEntry};
use super::super::messages::WallClock;
use super::super::publish::publish_for_log;
use super::super::{Broker, Slot};
use crate::session::state::Seq;
use crate::store::{Position, StoreError};

impl Broker {
    /// A session that had no expiry gets one (a takeover or reconnect with a Session
    /// Expiry): journal it whole, with the messages it holds.
    pub(in crate::broker) fn promote(&mut self, client_id: &ByteString, now: Instant) {
        let sid = self.next_sid;
        self.next_sid += 1;
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return;
        };
        slot.sid = Some(sid);
        let seqs: Vec<Seq> = slot.session.references().collect();
        for seq in seqs {
            self.ensure_logged(seq);
        }
        if let Some(snapshot) = self
            .sessions
            .get(client_id)
            .map(|s| snapshot_of(self.clock, s, now))
        {
            self.journal(&Record::Snapshot(snapshot));
        }
    }

    /// Writes what a SNAPSHOT naming message `seq` needs before it: the message itself if
    /// only memory holds it (or its record is in a segment a running checkpoint deletes),
    /// otherwise where its record is (MESSAGE_AT), since the records that say so may be
    /// before a checkpoint that recovery starts from.
    fn ensure_logged(&mut self, seq: Seq) {
        let Some(entry) = self.messages.get(seq) else {
            return;
        };
        let keep_from = self.checkpoints.run().map_or(0, |run| run.keep_from);
        match (entry.pos, entry.message.clone()) {
            (Some(pos), _) if pos.segment >= keep_from => {
                let record = Record::MessageAt {
                    seq,
                    at: pos,
                    payload_len: entry.size,
                };
                self.journal(&record);
            }
            (Some(pos), _) => {
                if let Err(error) = self.copy_message(seq, pos) {
                    self.counters.journal_errors += 1;
                    tracing::error!(core = %self.id, seq, %error, "cannot copy a message");
                }
            }
            (None, Some(message)) => {
                let publish = journal::encode_publish(&publish_for_log(&message));
                // With its origin, if it is an inbound QoS 2 message: recovery then knows
                // this core took it, and skips it when a crash has it routed again (the
                // clean session that took it kept the origin in memory only).
                let record = Record::Message(journal::MessageRecord::new(
                    seq,
                    message.origin,
                    &message,
                    self.clock,
                    Vec::new(),
                    publish,
                ));
                let pos = self.journal(&record);
                if let Some(entry) = self.messages.get_mut(seq) {
                    entry.pos = pos;
                }
            }
            (None, None) => {}
        }
    }

    /// Copies the MESSAGE record of `seq` at `old` to the head of the log, without its
    /// targets (the snapshots say who holds it), and points the table at the copy.
    pub(super) fn copy_message(&mut self, seq: Seq, old: Position) -> Result<usize, StoreError> {
        let (kind, body) = self.journal.read(old)?;
        let Ok(Record::Message(mut record)) = Record::decode(kind, &body) else {
            return Err(StoreError::NoRecord(old));
        };
        record.targets.clear();
        record.origin = None;
        let bytes = record.publish.len();
        let pos = self.append(&Record::Message(record))?;
        if let Some(entry) = self.messages.get_mut(seq) {
            entry.pos = Some(pos);
        }
        Ok(bytes)
    }
}

pub(super) fn snapshot_of(clock: WallClock, slot: &Slot, now: Instant) -> Snapshot {
    let session = &slot.session;
    let entry = |seq: Seq, qos, retain, in_flight| SnapshotEntry {
        seq,
        qos,
        retain,
        in_flight,
        ids: session.ids_of(seq).to_vec(),
    };
    let mut entries: Vec<SnapshotEntry> = session
        .in_flight_entries()
        .map(|f| {
            let e = f.entry;
            entry(e.seq(), e.qos(), e.retain(), Some((f.packet_id, f.state)))
        })
        .collect();
    entries.extend(
        session
            .queued_entries()
            .map(|e| entry(e.seq(), e.qos(), e.retain(), None)),
    );
    let mut subscriptions: Vec<_> = session
        .subscriptions
        .iter()
        .map(|(filter, s)| (filter.clone(), s.options, s.identifier.unwrap_or(0)))
        .collect();
    subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
    Snapshot {
        sid: slot.sid.unwrap_or(0),
        client_id: session.client_id.clone(),
        expiry_secs: slot.expiry.as_secs(),
        offline_ms: match (slot.online, slot.expires_at) {
            (false, Some(at)) => clock
                .unix_ms(at.checked_sub(slot.expiry).unwrap_or(now))
                .max(1),
            _ => 0,
        },
        subscriptions,
        entries,
        awaiting_release: session.awaiting_release_ids().collect(),
        username: slot.username.as_deref().map(ByteString::from),
    }
}
