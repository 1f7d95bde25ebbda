//! Rebuilding a core's engine from its log: sessions, subscriptions, queues, the window
//! of each session, inbound QoS 2 state and retained messages.
//!
//! Records are applied in log order. A checkpoint is written a slice at a time, with the
//! core's ordinary records between its slices, so from its BEGIN on every record is applied
//! twice: to the state read so far, and to a second state that starts empty at BEGIN (the
//! checkpoint's restatements plus what changed after them). At END the second state
//! replaces the first; a BEGIN without END (a crash during the checkpoint) leaves the
//! first, which has had every record, ordinary ones included; ABORT is written after it so
//! that the records that follow are read normally next time. ARCHITECTURE.md, "Recovery
//! rules", gives the reasoning per record kind.
//!
//! Time offline counts across restarts: a session that was offline keeps its wall-clock
//! offline time; one that was online when the broker stopped counts as offline from the
//! restart. A record that does not decode is counted and skipped; it never stops start-up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::exactly_once::Routing;
use super::journal::{kind, Journal, Record};
use super::messages::{MessageTable, WallClock};
use super::{Broker, SessionPolicy, Slot};
use crate::ownership::CoreId;
use crate::session::state::{Origin, Seq};
use crate::store::Position;
use crate::topic::ParsedFilter;

mod state;
use state::{Rebuilt, State};

/// A checkpoint being read: its id and the state its records build.
struct Reading {
    id: u64,
    /// BEGIN's next session number: the checkpoint restates the sessions below it.
    begin_sid: u64,
    state: State,
}

/// Collects the log's records as they are read back; [`Broker::recover`] turns the result
/// into an engine.
pub struct Rebuild {
    clock: WallClock,
    state: State,
    /// The checkpoint being read, whose state replaces `state` when its END arrives.
    checkpoint: Option<Reading>,
    next_seq: Seq,
    next_sid: u64,
    next_checkpoint_id: u64,
    pub records: u64,
    pub undecodable: u64,
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct Recovered {
    /// What the other cores must hear about this core's recovered subscriptions (interest
    /// and shared-group placement) before clients may publish.
    pub announce: super::Effects,
    pub records: u64,
    pub undecodable: u64,
    /// Queue entries of checkpointed sessions whose message copy was not in the log (lost
    /// to damage): dropped from their queue.
    pub missing_messages: u64,
    pub sessions: usize,
    pub queued: usize,
    pub messages: usize,
    pub retained: usize,
    /// Wills of sessions whose connection ended with the broker (or before): published
    /// when their delay passes, unless the client reconnects first.
    pub wills: usize,
    /// Inbound QoS 2 messages whose PUBREC was not journaled: routed again once every
    /// core knows every other core's subscriptions (`Broker::route_again`).
    pub rerouted: usize,
}

impl Broker {
    /// Routes every inbound QoS 2 message that was journaled but not confirmed before the
    /// broker stopped again, oldest first; each core skips those it took before. Call once
    /// every core has applied every other core's `announce`, and wait for the result to
    /// reach the other cores before accepting clients.
    /// Whether [`Broker::route_again`] has messages to route (a cluster node waits for the
    /// other nodes' interest first, so that they reach those nodes too).
    pub fn has_reroute(&self) -> bool {
        self.exactly_once.has_reroute()
    }

    pub fn route_again(&mut self, now: Instant) -> super::Effects {
        let mut effects = super::Effects::default();
        for (publisher, r) in self.exactly_once.take_reroute() {
            let Ok(mut publish) = super::journal::decode_publish(kind::QOS2_ROUTING, &r.publish)
            else {
                self.counters.journal_errors += 1;
                continue;
            };
            if r.expires_ms != 0 {
                let expires_at = self.clock.instant(r.expires_ms);
                let Some(left) = expires_at.checked_duration_since(now) else {
                    continue; // expired while the broker was down: never delivered
                };
                publish.properties.message_expiry_interval =
                    Some(left.as_secs().max(1).min(u64::from(u32::MAX)) as u32);
            }
            let origin = Origin {
                core: self.id.0 as u16,
                seq: r.origin_seq,
            };
            let routed = self.publish_from(&publisher, publish, Some(origin), now);
            effects.extend(routed);
        }
        effects
    }
}

impl Rebuild {
    pub fn new(clock: WallClock) -> Rebuild {
        Rebuild {
            clock,
            state: State::default(),
            checkpoint: None,
            next_seq: 1,
            next_sid: 1,
            next_checkpoint_id: 1,
            records: 0,
            undecodable: 0,
        }
    }

    /// One record, in log order.
    pub fn visit(&mut self, pos: Position, kind: u8, body: &[u8]) {
        self.records += 1;
        match kind {
            kind::CHECKPOINT_BEGIN => {
                if let Ok(Record::CheckpointBegin {
                    id,
                    next_seq,
                    next_sid,
                }) = Record::decode(kind, &Bytes::copy_from_slice(body))
                {
                    self.next_seq = self.next_seq.max(next_seq);
                    self.next_sid = self.next_sid.max(next_sid);
                    self.next_checkpoint_id = self.next_checkpoint_id.max(id + 1);
                    let state = State {
                        keep_released: true,
                        ..State::default()
                    };
                    self.checkpoint = Some(Reading {
                        id,
                        begin_sid: next_sid,
                        state,
                    });
                } else {
                    self.undecodable += 1;
                }
                return;
            }
            kind::CHECKPOINT_END | kind::CHECKPOINT_ABORT => {
                let ended = Record::decode(kind, &Bytes::copy_from_slice(body));
                let Some(reading) = self.checkpoint.take() else {
                    return;
                };
                let matches = matches!(ended, Ok(Record::CheckpointEnd { id }) if id == reading.id);
                if kind == kind::CHECKPOINT_END && matches {
                    self.state = reading.state;
                    self.state.keep_released = false;
                }
                return;
            }
            _ => {}
        }
        let body = Bytes::copy_from_slice(body);
        let record = match Record::decode(kind, &body) {
            Ok(record) => record,
            Err(error) => {
                self.undecodable += 1;
                tracing::warn!(?pos, %error, "skipping a log record");
                return;
            }
        };
        match &record {
            Record::SessionOpen { sid, .. } => self.next_sid = self.next_sid.max(sid + 1),
            Record::Snapshot(s) => self.next_sid = self.next_sid.max(s.sid + 1),
            Record::Message(m) => self.next_seq = self.next_seq.max(m.seq + 1),
            Record::Qos2Routing(routing) => {
                self.next_seq = self.next_seq.max(routing.origin_seq + 1)
            }
            _ => {}
        }
        let clock = self.clock;
        let ok = match &mut self.checkpoint {
            None => self.state.apply(clock, pos, kind, record),
            // The SNAPSHOT of a session that existed at BEGIN restates what the state read
            // so far has from the records before: that state skips it (a second copy of
            // every session would cost time and memory for nothing).
            Some(reading) if matches!(&record, Record::Snapshot(s) if s.sid < reading.begin_sid) => {
                reading.state.apply(clock, pos, kind, record)
            }
            Some(reading) => {
                let fresh = reading.state.apply(clock, pos, kind, record.clone());
                self.state.apply(clock, pos, kind, record) && fresh
            }
        };
        if !ok {
            self.undecodable += 1;
        }
    }
}

impl Broker {
    /// The engine as the log left it. Sessions come back offline; their expiry counts from
    /// when they went offline (or from now, if they were online when the broker stopped).
    pub fn recover(
        id: CoreId,
        cores: usize,
        policy: SessionPolicy,
        journal: Box<dyn Journal>,
        rebuild: Rebuild,
        now: Instant,
    ) -> (Broker, Recovered) {
        let clock = rebuild.clock;
        let mut report = Recovered {
            records: rebuild.records,
            undecodable: rebuild.undecodable,
            missing_messages: rebuild.state.missing_messages,
            ..Recovered::default()
        };
        let aborted = rebuild.checkpoint.as_ref().map(|reading| reading.id);
        let mut broker = Broker::with_journal(id, cores, policy, journal, clock);
        broker.next_sid = rebuild.next_sid;
        broker.checkpoints.recovered(rebuild.next_checkpoint_id);
        if let Some(id) = aborted {
            // First, so that what recovery writes below is not read as part of the
            // abandoned checkpoint.
            broker.journal(&Record::CheckpointAbort { id });
        }
        let State {
            sessions,
            retained,
            mut messages,
            routing,
            origins,
            ..
        } = rebuild.state;
        let mut client_of_sid = HashMap::new();
        messages.retain(|_, e| e.refs > 0);
        report.messages = messages.len();
        broker.messages = MessageTable::new(rebuild.next_seq, messages);
        report.retained = retained.len();
        broker.retained = retained.into_iter().collect();
        let mut subscriptions = Vec::new();
        for (sid, rebuilt) in sessions {
            let Rebuilt {
                mut session,
                expiry,
                offline_ms,
                will,
                username,
            } = rebuilt;
            let expiry = expiry.min(broker.policy.max_session_expiry);
            let offline_at = offline_ms.map_or(now, |ms| clock.instant(ms).min(now));
            let expires_at = offline_at + expiry;
            let client_id = session.client_id.clone();
            client_of_sid.insert(sid, client_id.clone());
            // Subscriptions go back in below, through the same path as a SUBSCRIBE, once
            // every session is in place (shared-group membership reads the session).
            for (raw, subscription) in session.subscriptions.iter() {
                subscriptions.push((client_id.clone(), raw.clone(), subscription.clone()));
            }
            session.subscriptions = Default::default();
            session.compact();
            report.queued += session.queued() + session.in_flight();
            if offline_ms.is_none() {
                // Online when the broker stopped: offline from now, and said so, so that a
                // second restart does not start its clock again.
                broker.journal(&Record::SessionOffline {
                    sid,
                    at_ms: clock.unix_ms(now),
                    expiry_secs: expiry.as_secs(),
                });
            }
            if let Some((delay_secs, publish)) = will {
                match super::journal::decode_publish(kind::WILL, &publish) {
                    Ok(will) => {
                        // Due when its delay has passed since the connection ended, or
                        // when the session ends, whichever is first (MQTT 5.0 3.1.3.2.2);
                        // an overdue will goes out at the first expiry sweep.
                        let due =
                            offline_at + Duration::from_secs(u64::from(delay_secs)).min(expiry);
                        broker.wills.schedule(client_id.clone(), will, due);
                        broker.wills.log(sid, delay_secs, publish);
                        report.wills += 1;
                    }
                    Err(_) => report.undecodable += 1,
                }
            }
            broker
                .expiries
                .push(std::cmp::Reverse((expires_at, client_id.clone())));
            broker.sessions.insert(
                client_id,
                Box::new(Slot {
                    session,
                    online: false,
                    expiry,
                    expires_at: Some(expires_at),
                    sid: Some(sid),
                    checkpoint: 0,
                    username: username.map(|name| Box::from(&*name)),
                }),
            );
        }
        broker.replaying = true;
        for (client_id, raw, subscription) in subscriptions {
            if let Ok(parsed) = ParsedFilter::parse(raw.clone()) {
                broker.add_subscription(
                    &client_id,
                    &raw,
                    &parsed,
                    subscription,
                    &mut report.announce,
                );
            }
        }
        broker.replaying = false;
        report.sessions = broker.sessions.len();
        report.rerouted = routing.len();
        let mut pending: Vec<(ByteString, Routing)> = routing
            .into_values()
            .filter_map(|r| Some((client_of_sid.get(&r.sid)?.clone(), r)))
            .collect();
        pending.sort_by_key(|(_, r)| r.origin_seq);
        for (client_id, r) in &pending {
            // The client's retransmission must not be routed a second time.
            if let Some(slot) = broker.sessions.get_mut(client_id) {
                slot.session.restore_awaiting_release(r.packet_id, true);
            }
        }
        broker.exactly_once.recovered(origins, pending);
        (broker, report)
    }
}
