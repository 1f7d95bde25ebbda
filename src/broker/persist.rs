//! Keeping the log small: checkpoints that rewrite the live state at the head of the log
//! so the segments behind it can be deleted, and the promotion of a session that becomes
//! persistent after the fact.
//!
//! A checkpoint is written in one go on the core (nothing else interleaves): BEGIN, every
//! retained message, a copy of every message some persistent session still holds, one
//! SNAPSHOT per persistent session, END. Only after END are the older segments removed, so
//! a crash in the middle leaves the previous state whole; recovery ignores a BEGIN that has
//! no END and the next start writes ABORT after it.

use std::time::Instant;

use super::journal::{Record, Snapshot, SnapshotEntry};
use super::messages::read_message;
use super::routing::publish_for_log;
use super::{journal, Broker, Slot};
use crate::session::state::Seq;
use crate::store::StoreError;

/// What a checkpoint did.
#[derive(Debug, Clone, Default)]
pub struct CheckpointReport {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    pub bytes_freed: u64,
}

impl Broker {
    /// A session that had no expiry gets one (a takeover or reconnect with a Session
    /// Expiry): journal it whole, with the messages it holds.
    pub(super) fn promote(&mut self, client_id: &bytestring::ByteString, now: Instant) {
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
            .map(|s| self.snapshot_of(s, now))
        {
            self.journal(&Record::Snapshot(snapshot));
        }
    }

    /// Writes the message `seq` to the log if only memory holds it.
    fn ensure_logged(&mut self, seq: Seq) {
        let Some(entry) = self.messages.get(seq) else {
            return;
        };
        if entry.pos.is_some() {
            return;
        }
        let Some(message) = entry.message.clone() else {
            return;
        };
        let record = Record::Message(journal::MessageRecord {
            origin: None,
            seq,
            expires_ms: message.expires_at.map_or(0, |at| self.clock.unix_ms(at)),
            publisher: message.publisher.clone(),
            payload_len: message.payload.len() as u32,
            targets: Vec::new(),
            publish: journal::encode_publish(&publish_for_log(&message)),
        });
        let pos = self.journal(&record);
        if let Some(entry) = self.messages.get_mut(seq) {
            entry.pos = pos;
        }
    }

    fn snapshot_of(&self, slot: &Slot, now: Instant) -> Snapshot {
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
                (false, Some(at)) => self
                    .clock
                    .unix_ms(at.checked_sub(slot.expiry).unwrap_or(now))
                    .max(1),
                _ => 0,
            },
            subscriptions,
            entries,
            awaiting_release: session.awaiting_release_ids().collect(),
        }
    }

    /// Whether the log has grown enough since the last checkpoint to rewrite it: twice
    /// what the last checkpoint wrote, and at least four segments. This bounds the disk
    /// to a small multiple of the live state, however long a session stays away.
    /// Not while the log is down to its reserve (disk full): a checkpoint writes a copy
    /// of everything held, which is what the reserve cannot take.
    pub fn checkpoint_due(&self) -> bool {
        self.journal.segment_count() >= (2 * self.checkpoint_segments + 2).max(4)
            && self.journal.room_for_messages().is_none()
    }

    /// Rewrites the live state at the head of the log and deletes the segments before it.
    pub fn checkpoint(&mut self, now: Instant) -> Result<CheckpointReport, StoreError> {
        let id = self.next_checkpoint_id;
        self.next_checkpoint_id += 1;
        let mut report = CheckpointReport::default();
        let begin = self.append(&Record::CheckpointBegin {
            id,
            next_seq: self.messages.next_seq,
            next_sid: self.next_sid,
        })?;
        let written = self.checkpoint_after(id, begin, now, &mut report);
        if written.is_err() {
            // A BEGIN with no END swallows every record after it at recovery until an
            // ABORT: write one before anything else goes to the log (now, or once there
            // is room again).
            self.abort_pending = Some(id);
            self.write_pending_abort();
        }
        written.map(|()| report)
    }

    /// Appends ABORT for a checkpoint that failed after its BEGIN, if one is owed. False
    /// while it cannot be written (nothing else may be appended then).
    pub(super) fn write_pending_abort(&mut self) -> bool {
        let Some(id) = self.abort_pending else {
            return true;
        };
        let written = self.append(&Record::CheckpointAbort { id }).is_ok();
        if written {
            self.abort_pending = None;
        }
        written
    }

    /// Everything of a checkpoint after its BEGIN, which is at `begin`.
    fn checkpoint_after(
        &mut self,
        id: u64,
        begin: crate::store::Position,
        now: Instant,
        report: &mut CheckpointReport,
    ) -> Result<(), StoreError> {
        let mut retained: Vec<_> = self
            .retained
            .values()
            .filter(|m| super::routing::outlives_restart(&m.topic))
            .cloned()
            .collect();
        retained.sort_by(|a, b| a.topic.cmp(&b.topic));
        for message in retained {
            self.append(&Record::Retained {
                expires_ms: message.expires_at.map_or(0, |at| self.clock.unix_ms(at)),
                publisher: message.publisher.clone(),
                publish: journal::encode_publish(&publish_for_log(&message)),
            })?;
            report.retained += 1;
        }
        let mut logged: Vec<(Seq, crate::store::Position)> = self
            .messages
            .iter()
            .filter_map(|(seq, e)| e.pos.map(|pos| (seq, pos)))
            .collect();
        logged.sort_unstable();
        for (seq, old) in logged {
            let message = match read_message(self.journal.as_ref(), old, self.clock) {
                Ok(message) => message,
                Err(error) => {
                    tracing::error!(shard = %self.id, seq, %error, "checkpoint cannot copy a message");
                    continue;
                }
            };
            let pos = self.append(&Record::Message(journal::MessageRecord {
                origin: None,
                seq,
                expires_ms: message.expires_at.map_or(0, |at| self.clock.unix_ms(at)),
                publisher: message.publisher.clone(),
                payload_len: message.payload.len() as u32,
                targets: Vec::new(),
                publish: journal::encode_publish(&publish_for_log(&message)),
            }))?;
            if let Some(entry) = self.messages.get_mut(seq) {
                entry.pos = Some(pos);
            }
            report.messages += 1;
        }
        let snapshots: Vec<Snapshot> = self
            .sessions
            .values()
            .filter(|slot| slot.sid.is_some())
            .map(|slot| self.snapshot_of(slot, now))
            .collect();
        for snapshot in snapshots {
            self.append(&Record::Snapshot(snapshot))?;
            report.sessions += 1;
        }
        let mut wills: Vec<_> = self
            .logged_wills
            .iter()
            .map(|(&sid, (delay_secs, publish))| (sid, *delay_secs, publish.clone()))
            .collect();
        wills.sort_by_key(|w| w.0);
        for (sid, delay_secs, publish) in wills {
            self.append(&Record::Will {
                sid,
                delay_secs,
                publish,
            })?;
        }
        self.append(&Record::Origins(self.origins.list()))?;
        let mut routing: Vec<_> = self.routing.values().map(|r| r.record()).collect();
        routing.sort_by_key(|r| match r {
            Record::Qos2Routing { origin_seq, .. } => *origin_seq,
            _ => 0,
        });
        for record in routing {
            self.append(&record)?;
        }
        self.append(&Record::CheckpointEnd { id })?;
        report.bytes_freed = self.journal.remove_segments_before(begin.segment)?;
        self.checkpoint_segments = self.journal.segment_count();
        self.counters.checkpoints += 1;
        Ok(())
    }

    /// Like `journal`, but an error stops the caller (a checkpoint must be whole).
    fn append(&mut self, record: &Record) -> Result<crate::store::Position, StoreError> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        self.journal.append(record.kind(), &self.scratch)
    }
}
