//! The crash operation of the session fuzz model: every core stops without warning, its
//! log cut as a crash may leave it, and a fresh engine per core is rebuilt from what is
//! left through the same recovery path as the server's start (`Rebuild`, `Broker::recover`,
//! the announcements, `route_again`). The model then checks what the log promised, and
//! fuzzing goes on against the recovered engines.
//!
//! What a crash may lose: nothing, after a process crash (appends are copies into a mapped
//! segment, so they outlive the process: `fsync = never | interval`); after an OS crash
//! under `fsync = always`, the records after the last point a core's log was made durable,
//! of which any prefix may remain. A core's log is made durable before a QoS 1/2
//! PUBLISH is acknowledged (PUBACK/PUBREC, or the PUBREC of a retransmission): on the
//! publisher's core, and on every core once the message crossed to another one (the
//! acknowledgement waits for `sync_peers`, which every core answers only once durable).
//!
//! Promises checked:
//! - after a process crash, exactly the model's state comes back: every persistent session
//!   with its expiry, subscriptions, window (same packet ids, PUBREL still owed where the
//!   client sent PUBREC), queue (the messages owed to it, in order) and inbound QoS 2 ids
//!   awaiting PUBREL; sessions with expiry 0 are gone;
//! - after an OS crash, what the last durable point held and nothing since has undone:
//!   every QoS 1/2 message whose acknowledgement was released is still queued or in
//!   flight for every persistent session that matched it and has not acknowledged it;
//!   subscriptions not touched since are there; an inbound QoS 2 id received and not
//!   released is still known (a DUP PUBLISH of it is not routed twice). The model then
//!   takes the recovered state as its own, since the records after the durable point may
//!   or may not have survived.
//! - in either case, nothing is sent to a client during recovery (every client is offline),
//!   and the ordinary checks hold for everything after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::broker::messages::Lookup;
use crate::broker::{Broker, Rebuild, SessionPolicy};
use crate::ownership::CoreId;
use crate::protocol::QoS;
use crate::session::state::{Messages, Outbound};
use crate::store::Position;

use super::client::{Client, Held};
use super::ops::{CLIENTS, CORES, FILTERS};
use super::World;

use crate::broker::journal::{Journal, MemJournal};

/// Records per segment of the model's journals.
pub(super) const SEGMENT_LEN: u32 = 1 << 16;

/// A persistent session as the engine holds it, in the model's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    expiry: Duration,
    subscriptions: BTreeMap<&'static str, QoS>,
    /// By packet id: `Held::Published` while PUBACK/PUBREC is owed, `Held::Received` while
    /// the engine owes PUBREL or waits for PUBCOMP.
    in_flight: BTreeMap<u16, Held>,
    /// The QoS 1/2 messages queued as new (retained messages sent on SUBSCRIBE left out).
    queued: Vec<(u64, QoS)>,
    awaiting_rel: BTreeSet<u16>,
}

/// What the model expects of client `c`'s persistent session.
fn expected(client: &Client) -> View {
    View {
        expiry: client.expiry,
        subscriptions: client.subscriptions.iter().map(|(f, q)| (*f, *q)).collect(),
        in_flight: client
            .held
            .iter()
            .map(|&(id, held)| match held {
                Held::Published { .. } => (id, held),
                Held::Received | Held::Released => (id, Held::Received),
            })
            .collect(),
        queued: client.owed.iter().copied().collect(),
        awaiting_rel: client.awaiting_rel.iter().copied().collect(),
    }
}

fn token(broker: &Broker, seq: u64) -> u64 {
    let lookup = Lookup {
        table: &broker.messages,
        journal: broker.journal.as_ref(),
        clock: broker.clock,
    };
    let message = lookup
        .get(seq)
        .unwrap_or_else(|| panic!("message {seq} held by a session is not readable"));
    let bytes: [u8; 8] = message.payload[..]
        .try_into()
        .unwrap_or_else(|_| panic!("a payload that was never published: {:?}", message.payload));
    u64::from_be_bytes(bytes)
}

/// Client `name`'s persistent session in `broker`, if it has one.
fn observe(broker: &Broker, name: &str) -> Option<View> {
    let slot = broker.sessions.get(name)?;
    slot.sid?;
    let session = &slot.session;
    let subscriptions = session
        .subscriptions
        .iter()
        .map(|(f, s)| {
            let filter = FILTERS
                .iter()
                .find(|known| **known == &**f)
                .unwrap_or_else(|| panic!("{name}: a filter never subscribed: {f}"));
            (*filter, s.options.qos)
        })
        .collect();
    let in_flight = session
        .in_flight_entries()
        .map(|f| {
            let held = match f.state {
                Outbound::Published => Held::Published {
                    token: token(broker, f.entry.seq()),
                    qos: f.entry.qos(),
                    retain: f.entry.retain(),
                },
                Outbound::Released => Held::Received,
            };
            (f.packet_id.get(), held)
        })
        .collect();
    let queued = session
        .queued_entries()
        .filter(|q| q.qos() != QoS::AtMostOnce && !q.retain())
        .map(|q| (token(broker, q.seq()), q.qos()))
        .collect();
    Some(View {
        expiry: slot.expiry,
        subscriptions,
        in_flight,
        queued,
        awaiting_rel: session.awaiting_release_ids().collect(),
    })
}

/// The tokens client `client` is owed or holds unacknowledged as new messages.
fn unacknowledged(client: &Client) -> BTreeSet<u64> {
    let held = client.held.iter().filter_map(|(_, h)| match h {
        Held::Published {
            token,
            retain: false,
            ..
        } => Some(*token),
        _ => None,
    });
    client.owed.iter().map(|(t, _)| *t).chain(held).collect()
}

impl World {
    /// A durable point on `core`: what its log holds now survives any crash.
    pub(super) fn made_durable(&mut self, core: usize) {
        self.durable[core] = self.journals[core].head();
        for c in (0..CLIENTS).filter(|c| c % CORES == core) {
            self.at_durable[c] = self.clients[c].clone();
            self.touched[c].clear();
            self.went_offline[c] = false;
        }
    }

    /// Every core crashes. `keep` below 128: a process crash, every record survives; from
    /// 128: an OS crash, each core keeps what was durable and a prefix of the rest.
    pub(super) fn crash(&mut self, keep: u8) {
        let lossy = keep >= 128;
        let mut brokers = Vec::new();
        let mut announce = Vec::new();
        for core in 0..CORES {
            let mut records = self.journals[core].records.borrow().clone();
            if lossy {
                let tail = records.split_off(&self.durable[core]);
                let kept = (usize::from(keep) * (2 * core + 1)) % (tail.len() + 1);
                records.extend(tail.into_iter().take(kept));
            }
            let journal = MemJournal::with_records(SEGMENT_LEN, records);
            let mut rebuild = Rebuild::new(self.clock);
            journal.replay(|pos, kind, body| rebuild.visit(pos, kind, body));
            let (broker, mut report) = Broker::recover(
                CoreId(core),
                CORES,
                SessionPolicy::default(),
                Box::new(journal.clone()),
                rebuild,
                self.now,
            );
            assert_eq!(report.undecodable, 0, "core {core}: undecodable records");
            brokers.push(broker);
            announce.push(std::mem::take(&mut report.announce));
            self.journals[core] = journal;
        }
        self.brokers = brokers;
        let now = self.now;
        for client in &mut self.clients {
            if client.online {
                // Offline from the restart (recovery rule 4).
                client.online = false;
                client.expires_at = Some(now + client.expiry);
            }
            client.sent_here.clear();
            if client.expiry.is_zero() {
                client.forget_session();
            }
        }
        // As at start: every core hears every other core's filters, then routes again
        // the inbound QoS 2 messages not confirmed, before any client connects.
        for (core, effects) in announce.into_iter().enumerate() {
            self.deliver(effects, core);
        }
        let before: Vec<_> = (0..CLIENTS).map(|c| self.queued_of(c)).collect();
        for core in 0..CORES {
            let effects = self.brokers[core].route_again(self.now);
            self.deliver(effects, core);
        }
        // A message routed again is new to whoever matches it now on a core that had not
        // taken it (one that subscribed since the publish included): owed to them from here.
        for (c, before) in before.into_iter().enumerate() {
            for (token, qos) in self.queued_of(c) {
                let client = &mut self.clients[c];
                // A session with expiry 0 ends at the sweep below: nothing is owed to it.
                if !before.contains(&(token, qos)) && client.session {
                    // After an OS crash a message taken by a clean session that became
                    // persistent since may come again: its origin was never journaled on
                    // that core (see the notes of issue 13); the model takes the recovered
                    // queue as it is below.
                    assert!(
                        lossy || !client.received.contains_key(&token),
                        "{}: message {token} routed again after it was received",
                        self.names[c]
                    );
                    client.owed.push_back((token, qos));
                }
            }
        }
        // A session whose expiry was 0 comes back from its log (its SESSION_EXPIRY 0 is
        // there, no SESSION_END) and ends at the first expiry sweep, which the server runs
        // within a second of start; the model sweeps at once (see the notes on the window).
        for core in 0..CORES {
            let effects = self.brokers[core].expire(self.now);
            self.deliver(effects, core);
        }
        for c in 0..CLIENTS {
            let view = observe(&self.brokers[c % CORES], &self.names[c]);
            if lossy {
                self.check_promises(c, view.as_ref());
                self.take_recovered(c, view);
            } else {
                let client = &self.clients[c];
                let want = client.session.then(|| expected(client));
                assert_eq!(
                    view, want,
                    "{}: the session after a crash; model {client:?}",
                    self.names[c]
                );
            }
        }
        if lossy {
            // Each core's copy of the retained messages may have kept another prefix.
            self.retained_after_loss = true;
        }
        for core in 0..CORES {
            // The replayed log is synced before the broker goes on.
            self.made_durable(core);
        }
    }

    fn queued_of(&self, c: usize) -> Vec<(u64, QoS)> {
        observe(&self.brokers[c % CORES], &self.names[c]).map_or(Vec::new(), |v| v.queued)
    }

    /// After an OS crash: what the last durable point promised client `c`, unless undone
    /// since (an acknowledgement, an UNSUBSCRIBE, a PUBREL, the session's end).
    fn check_promises(&self, c: usize, view: Option<&View>) {
        let name = &self.names[c];
        let (then, now) = (&self.at_durable[c], &self.clients[c]);
        // A session offline at the durable point whose expiry has passed since may end at
        // recovery: its reconnection may be among the records lost.
        // So may one that went offline since (its DISCONNECT kept, the reconnect lost).
        let expired = then.expires_at.is_some_and(|at| at <= self.now) || self.went_offline[c];
        let kept = then.session && !then.expiry.is_zero() && then.epoch == now.epoch && !expired;
        if !kept {
            return;
        }
        let view = view.unwrap_or_else(|| panic!("{name}: a persistent session lost in a crash"));
        let held: BTreeSet<u64> = view
            .in_flight
            .values()
            .filter_map(|h| match h {
                Held::Published { token, .. } => Some(*token),
                _ => None,
            })
            .chain(view.queued.iter().map(|(t, _)| *t))
            .collect();
        for token in unacknowledged(then).intersection(&unacknowledged(now)) {
            assert!(
                held.contains(token),
                "{name}: acknowledged message {token} lost in a crash: {view:?}"
            );
        }
        for (filter, qos) in &then.subscriptions {
            if now.subscriptions.get(filter) == Some(qos) && !self.touched[c].contains(filter) {
                assert_eq!(
                    view.subscriptions.get(filter),
                    Some(qos),
                    "{name}: subscription {filter} lost in a crash"
                );
            }
        }
        for id in &then.awaiting_rel {
            if now.awaiting_rel.contains(id) {
                assert!(
                    view.awaiting_rel.contains(id),
                    "{name}: inbound QoS 2 id {id} forgotten in a crash"
                );
            }
        }
    }

    /// After an OS crash the model takes the recovered session as client `c`'s: what the
    /// records after the durable point said may or may not have survived.
    fn take_recovered(&mut self, c: usize, view: Option<View>) {
        let expires_at = self.brokers[c % CORES]
            .sessions
            .get(&self.names[c])
            .and_then(|slot| slot.expires_at);
        let client = &mut self.clients[c];
        let Some(view) = view else {
            client.forget_session();
            return;
        };
        client.session = true;
        client.expiry = view.expiry;
        client.expires_at = expires_at;
        client.subscriptions = view.subscriptions.into_iter().collect();
        client.held = view.in_flight.into_iter().collect();
        client.owed = view.queued.into_iter().collect();
        client.awaiting_rel = view.awaiting_rel.into_iter().collect();
        // A message whose SENT was lost goes again as new.
        let again = unacknowledged(client);
        client.received.retain(|token, _| !again.contains(token));
    }
}

/// The durable point of a fresh journal: nothing written yet.
pub(super) fn start() -> Position {
    Position {
        segment: 0,
        offset: 0,
    }
}
