//! The state a log's records rebuild, one record at a time: sessions, their queues and
//! windows, wills, inbound QoS 2 state, messages with their reference counts, and retained
//! messages. `Rebuild` keeps one of these, and a second one while it reads a checkpoint.
//!
//! Invariant: a record about a session the state does not hold is skipped (its SNAPSHOT,
//! later in the log, holds its effect); while `keep_released` is set no message is dropped
//! when its last reference goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use super::super::exactly_once::{Origins, Routing};
use super::super::journal::{kind, Record};
use super::super::messages::{message_of, Entry, WallClock};
use crate::session::state::{InFlight, Queued, Seq};
use crate::session::{Message, Session, Subscription};
use crate::store::Position;

pub(super) struct Rebuilt {
    pub(super) session: Session,
    pub(super) expiry: Duration,
    pub(super) offline_ms: Option<u64>,
    /// The will in the log: Will Delay Interval and the will as a v5 PUBLISH.
    pub(super) will: Option<(u32, Bytes)>,
    /// The username of the connection that last took it (SESSION_OWNER).
    pub(super) username: Option<ByteString>,
}

#[derive(Default)]
pub(super) struct State {
    /// Inbound QoS 2 messages journaled and not confirmed: routed again at the end.
    pub(super) routing: HashMap<(u64, u16), Routing>,
    pub(super) origins: Origins,
    pub(super) sessions: HashMap<u64, Rebuilt>,
    pub(super) by_client: HashMap<ByteString, u64>,
    pub(super) retained: HashMap<ByteString, Arc<Message>>,
    pub(super) messages: HashMap<Seq, Entry>,
    /// Set in the state a checkpoint builds until its END: a message whose last reference
    /// goes is kept, since the SNAPSHOT of a session not yet restated may still name it.
    pub(super) keep_released: bool,
    /// Queue entries of checkpointed sessions whose message copy was not in the log (lost
    /// to damage): dropped from their queue.
    pub(super) missing_messages: u64,
}

impl State {
    /// Applies one decoded record; false if part of it does not decode.
    pub(super) fn apply(
        &mut self,
        clock: WallClock,
        pos: Position,
        kind: u8,
        record: Record,
    ) -> bool {
        let state = self;
        match record {
            Record::SessionOpen {
                sid,
                client_id,
                expiry_secs,
            } => {
                if let Some(old) = state.by_client.insert(client_id.clone(), sid) {
                    state.end(old);
                }
                state.sessions.insert(
                    sid,
                    Rebuilt {
                        session: Session::new(client_id),
                        expiry: Duration::from_secs(expiry_secs),
                        offline_ms: None,
                        will: None,
                        username: None,
                    },
                );
            }
            Record::SessionExpiry { sid, expiry_secs } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.expiry = Duration::from_secs(expiry_secs);
                }
            }
            Record::SessionOnline { sid } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.offline_ms = None;
                    s.will = None;
                }
            }
            Record::Will {
                sid,
                delay_secs,
                publish,
            } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.will = Some((delay_secs, publish));
                }
            }
            Record::Qos2Routing(routing) => {
                if state.sessions.contains_key(&routing.sid) {
                    state
                        .routing
                        .insert((routing.sid, routing.packet_id), routing);
                }
            }
            Record::Origins(origins) => {
                for origin in origins {
                    state.origins.admit(origin);
                }
            }
            Record::WillClear { sid } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.will = None;
                }
            }
            Record::SessionOffline {
                sid,
                at_ms,
                expiry_secs,
            } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.offline_ms = Some(at_ms);
                    s.expiry = Duration::from_secs(expiry_secs);
                }
            }
            Record::SessionEnd { sid } => state.end(sid),
            Record::SessionOwner { sid, username } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.username = username;
                }
            }
            Record::Subscribe {
                sid,
                filter,
                options,
                identifier,
            } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    let subscription = Subscription {
                        options,
                        identifier: (identifier != 0).then_some(identifier),
                    };
                    s.session.subscriptions.insert(filter, subscription);
                }
            }
            Record::Unsubscribe { sid, filter } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.session.subscriptions.remove(&filter);
                }
            }
            Record::Message(m) => {
                if let Some(origin) = m.origin {
                    state.origins.admit(origin);
                }
                let mut refs = 0;
                for t in m.targets {
                    if let Some(s) = state.sessions.get_mut(&t.sid) {
                        let entry = Queued::new(m.seq, t.qos, t.retain);
                        s.session
                            .restore_queued(entry, t.ids, m.payload_len as usize);
                        refs += 1;
                    }
                }
                // A copy (no targets) moves the message and keeps who holds it.
                state.locate(m.seq, pos, m.payload_len, refs);
            }
            Record::MessageAt {
                seq,
                at,
                payload_len,
            } => state.locate(seq, at, payload_len, 0),
            Record::Sent {
                sid,
                seq,
                packet_id,
            } => {
                let size = state.size(seq);
                if let Some(s) = state.sessions.get_mut(&sid) {
                    let packet_id = crate::protocol::PacketId::new(packet_id);
                    s.session.restore_sent(seq, packet_id, size);
                }
            }
            Record::Received { sid, seq } => {
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.session.restore_received(seq);
                }
            }
            Record::Done { sid, seq } => {
                let size = state.size(seq);
                if let Some(s) = state.sessions.get_mut(&sid) {
                    if s.session.restore_done(seq, size) {
                        state.release(seq);
                    }
                }
            }
            Record::Qos2In { sid, packet_id } | Record::Qos2Released { sid, packet_id } => {
                state.routing.remove(&(sid, packet_id));
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.session
                        .restore_awaiting_release(packet_id, kind == kind::QOS2_IN);
                }
            }
            Record::Retained {
                expires_ms,
                publisher,
                publish,
            } => match message_of(kind, &publish, publisher, expires_ms, clock) {
                Ok(message) => {
                    state
                        .retained
                        .insert(message.topic.clone(), Arc::new(message));
                }
                Err(_) => return false,
            },
            Record::RetainedClear { topic } => {
                state.retained.remove(&topic);
            }
            Record::Snapshot(s) => {
                match state.by_client.insert(s.client_id.clone(), s.sid) {
                    Some(old) if old != s.sid => state.end(old),
                    _ => {}
                }
                let mut session = Session::new(s.client_id);
                for (filter, options, identifier) in s.subscriptions {
                    let identifier = (identifier != 0).then_some(identifier);
                    session.subscriptions.insert(
                        filter,
                        Subscription {
                            options,
                            identifier,
                        },
                    );
                }
                for e in s.entries {
                    let Some(message) = state.messages.get_mut(&e.seq) else {
                        state.missing_messages += 1; // its copy was lost to damage
                        continue;
                    };
                    message.refs += 1;
                    let entry = Queued::new(e.seq, e.qos, e.retain);
                    match e.in_flight {
                        Some((packet_id, state)) => session.restore_in_flight(
                            InFlight {
                                packet_id,
                                entry,
                                state,
                                awaiting_resend: false,
                            },
                            e.ids,
                        ),
                        None => session.restore_queued(entry, e.ids, message.size as usize),
                    }
                }
                for packet_id in s.awaiting_release {
                    session.restore_awaiting_release(packet_id, true);
                }
                let rebuilt = Rebuilt {
                    session,
                    expiry: Duration::from_secs(s.expiry_secs),
                    offline_ms: (s.offline_ms != 0).then_some(s.offline_ms),
                    will: None,
                    username: s.username,
                };
                // A snapshot of a session held already replaces it (its new references
                // were taken above, before the old ones go); its will stays.
                if let Some(old) = state.sessions.insert(s.sid, rebuilt) {
                    if let Some(new) = state.sessions.get_mut(&s.sid) {
                        new.will = old.will;
                    }
                    for seq in old.session.references().collect::<Vec<_>>() {
                        state.release(seq);
                    }
                }
            }
            Record::CheckpointBegin { .. }
            | Record::CheckpointEnd { .. }
            | Record::CheckpointAbort { .. } => {}
        }
        true
    }
}

impl State {
    pub(super) fn size(&self, seq: Seq) -> usize {
        self.messages.get(&seq).map_or(0, |e| e.size as usize)
    }

    pub(super) fn release(&mut self, seq: Seq) {
        if let Some(entry) = self.messages.get_mut(&seq) {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 && !self.keep_released {
                self.messages.remove(&seq);
            }
        }
    }

    /// Message `seq` is stored at `pos`; `refs` more sessions hold it.
    pub(super) fn locate(&mut self, seq: Seq, pos: Position, size: u32, refs: u32) {
        let entry = self.messages.entry(seq).or_insert(Entry {
            pos: None,
            refs: 0,
            size,
            message: None,
        });
        entry.pos = Some(pos);
        entry.size = size;
        entry.refs += refs;
    }

    pub(super) fn end(&mut self, sid: u64) {
        self.routing.retain(|&(s, _), _| s != sid);
        if let Some(s) = self.sessions.remove(&sid) {
            if self.by_client.get(&s.session.client_id) == Some(&sid) {
                self.by_client.remove(&s.session.client_id);
            }
            for seq in s.session.references().collect::<Vec<_>>() {
                self.release(seq);
            }
        }
    }
}
