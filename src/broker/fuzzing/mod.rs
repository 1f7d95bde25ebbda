//! The session fuzz target's checks: arbitrary bytes are read as a sequence of client
//! actions (CONNECT with or without Clean Start, Session Expiry and Receive Maximum,
//! SUBSCRIBE, UNSUBSCRIBE, PUBLISH at QoS 0/1/2, PUBACK/PUBREC/PUBREL/PUBCOMP, inbound QoS 2
//! with retransmissions, DISCONNECT, takeover, time passing) and driven in process against
//! the engines of two cores, whose messages to each other are delivered between client
//! packets, while an in-memory model of what the specification allows watches every packet
//! they send. Shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/session.rs`), the bounded stable-Rust fuzz run and the regression
//! replay (`tests/fuzz_driver.rs`). Not part of the API.
//!
//! Promises checked (any broken one panics):
//! - nothing panics, and no packet goes to a client that is not connected;
//! - Session Present is 1 exactly when a session was kept [MQTT-3.2.2-2, MQTT-3.2.2-3];
//! - a new PUBLISH never reuses a packet id still in flight [MQTT-2.2.1-3], and is only
//!   sent while fewer QoS 1/2 messages than the Receive Maximum are unacknowledged, and
//!   no more than Receive Maximum are sent unacknowledged (no PUBACK or PUBCOMP yet) on
//!   one connection [MQTT-4.9.0-2];
//! - a DUP PUBLISH resends exactly the message in flight under that id, and never after
//!   PUBREL [MQTT-4.3.3-6]; PUBREL goes only for a PUBREC'd id;
//! - every QoS 1/2 message published while a session subscribed reaches it once as a new
//!   message, in publish order [MQTT-4.6.0-6], unless its session ended first: QoS 1 at
//!   least once, QoS 2 exactly once; after a final reconnect and acknowledgement of
//!   everything nothing is left undelivered;
//! - an inbound QoS 2 id is routed once until its PUBREL, and PUBREL is answered PUBCOMP,
//!   with 0x92 for an unknown id [MQTT-4.3.3-10];
//! - a crash (`crash.rs`) keeps what the log promised.

mod acks;
mod client;
mod crash;
mod ops;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::MemJournal;
use super::{Broker, CoreMsg, Effects, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{
    Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, Subscribe, Unsubscribe,
};
use crate::store::Position;
use client::{receive_publish, token_of, Client, Held};
pub use ops::{ops, Op};
use ops::{CLIENTS, CORES, EXPIRIES, FILTERS, RECEIVE_MAXIMA, TOPICS};

/// Runs every check on `data`, panicking on the first broken promise.
pub fn check(data: &[u8]) {
    let mut world = World::new();
    for op in ops(data) {
        world.apply(op);
    }
    world.finish();
}

struct World {
    /// One engine per core; client `c` is owned by core `c % CORES`.
    brokers: Vec<Broker>,
    now: Instant,
    clients: Vec<Client>,
    names: Vec<ByteString>,
    next_token: u64,
    /// The retained message per topic: (token, QoS).
    retained: HashMap<&'static str, (u64, QoS)>,
    clock: WallClock,
    /// Each core's log (a handle on the records its engine writes).
    journals: Vec<MemJournal>,
    /// Per core, where its log was last made durable: records before it outlive any crash.
    durable: Vec<Position>,
    /// Each client as the model saw it at its core's last durable point.
    at_durable: Vec<Client>,
    /// The filters each client subscribed or unsubscribed since that point.
    touched: Vec<HashSet<&'static str>>,
    /// Whether each client's connection ended since that point.
    went_offline: Vec<bool>,
    /// A crash lost records: the cores' copies of the retained messages may differ.
    retained_after_loss: bool,
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("packet ids here are not 0")
}

fn ack(n: u16, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id: id(n),
        reason_code,
        properties: Properties::default(),
    }
}

/// Topic matching for the model's fixed filters, written apart from the engine's tree.
fn matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

impl World {
    fn new() -> World {
        let clock = WallClock::now_from_system();
        let journals: Vec<MemJournal> = (0..CORES)
            .map(|_| MemJournal::new(crash::SEGMENT_LEN))
            .collect();
        let brokers = journals
            .iter()
            .enumerate()
            .map(|(core, journal)| {
                Broker::with_journal(
                    CoreId(core),
                    CORES,
                    SessionPolicy::default(),
                    Box::new(journal.clone()),
                    clock,
                )
            })
            .collect();
        World {
            brokers,
            now: clock.base,
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            names: (0..CLIENTS)
                .map(|i| ByteString::from(format!("c{i}")))
                .collect(),
            next_token: 1,
            retained: HashMap::new(),
            clock,
            journals,
            durable: vec![crash::start(); CORES],
            at_durable: (0..CLIENTS).map(|_| Client::default()).collect(),
            touched: (0..CLIENTS).map(|_| HashSet::new()).collect(),
            went_offline: vec![false; CLIENTS],
            retained_after_loss: false,
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Connect {
                client,
                clean,
                expiry,
                receive_maximum,
            } => self.connect(
                client.into(),
                clean,
                Duration::from_secs(EXPIRIES[usize::from(expiry)]),
                RECEIVE_MAXIMA[usize::from(receive_maximum)],
            ),
            Op::Disconnect { client, expiry } => self.disconnect(client.into(), expiry),
            Op::Subscribe {
                client,
                filter,
                qos,
            } => self.subscribe(client.into(), FILTERS[usize::from(filter)], qos_of(qos)),
            Op::Unsubscribe { client, filter } => {
                self.unsubscribe(client.into(), FILTERS[usize::from(filter)])
            }
            Op::Publish {
                client,
                topic,
                qos,
                retain,
            } => {
                let c = usize::from(client);
                if self.clients[c].online {
                    self.publish(c, TOPICS[usize::from(topic)], qos_of(qos), retain);
                }
            }
            Op::Ack {
                client,
                nth,
                refuse,
            } => self.ack(client.into(), nth.into(), refuse),
            Op::PublishQos2 { client, id, topic } => {
                self.publish_qos2(client.into(), id.into(), TOPICS[usize::from(topic)])
            }
            Op::PubRel { client, id } => self.pub_rel(client.into(), id.into()),
            Op::StrayAck { client, kind, id } => self.stray_ack(client.into(), kind, id.into()),
            Op::Wait { step } => {
                self.now += Duration::from_secs([1, 6, 61, 7201][usize::from(step)]);
                self.run_timers();
            }
            Op::Crash { keep } => self.crash(keep),
        }
    }

    fn run_timers(&mut self) {
        for core in 0..CORES {
            let effects = self.brokers[core].expire(self.now);
            self.deliver(effects, core);
        }
        let now = self.now;
        for client in &mut self.clients {
            if !client.online && client.expires_at.is_some_and(|at| at <= now) {
                client.forget_session();
            }
        }
    }

    fn connect(&mut self, c: usize, clean: bool, expiry: Duration, receive_maximum: u16) {
        // A CONNECT while online is a takeover: as in the server, the old connection is
        // no longer current, so the session goes from one connection to the next without
        // a disconnect in between.
        let name = self.names[c].clone();
        let client = &mut self.clients[c];
        if client.expires_at.is_some_and(|at| at <= self.now) {
            client.forget_session();
        }
        let keeps = client.session && !clean;
        let (present, granted, resume, effects) = self.brokers[c % CORES]
            .connect(&name, clean, expiry, receive_maximum, self.now)
            .expect("no session limit is set");
        assert_eq!(present, keeps, "Session Present for {name}");
        let client = &mut self.clients[c];
        if !present {
            // [MQTT-4.1.0-1] the client discards its state when no session was kept.
            client.forget_session();
            client.received.clear();
        }
        if granted.is_zero() {
            // No longer journaled: what a crash keeps of it is not promised.
            client.epoch += 1;
        }
        client.session = true;
        client.online = true;
        client.expiry = granted;
        client.expires_at = None;
        client.receive_maximum = receive_maximum.max(1);
        client.sent_here.clear();
        self.deliver(effects, c % CORES);
        for packet in resume {
            self.receive(c, packet);
        }
    }

    fn disconnect(&mut self, c: usize, expiry: u8) {
        if !self.clients[c].online {
            return;
        }
        let new_expiry = match expiry {
            1 => Some(Duration::ZERO),
            2 if !self.clients[c].expiry.is_zero() => Some(Duration::from_secs(5)),
            _ => None,
        };
        let effects = self.brokers[c % CORES].disconnect(&self.names[c], new_expiry, self.now);
        self.went_offline[c] = true;
        let client = &mut self.clients[c];
        client.online = false;
        client.sent_here.clear();
        if let Some(e) = new_expiry {
            client.expiry = e;
        }
        if client.expiry.is_zero() {
            client.forget_session();
        } else {
            client.expires_at = Some(self.now + client.expiry);
        }
        self.deliver(effects, c % CORES);
    }

    fn subscribe(&mut self, c: usize, filter: &'static str, qos: QoS) {
        if !self.clients[c].online {
            return;
        }
        let subscribe = Subscribe::one(id(1), filter, qos);
        let outcome = self.brokers[c % CORES].subscribe(&self.names[c], subscribe, self.now);
        assert_eq!(outcome.sub_ack.reason_codes, [ReasonCode(qos as u8)]);
        self.clients[c].subscriptions.insert(filter, qos);
        self.touched[c].insert(filter);
        for (to, packet) in outcome.effects.to_clients {
            let (to, packet) = (self.index(&to), packet.into_packet());
            // Retained messages sent on subscribe: the current one of a matching topic.
            if let (Some(c2), Packet::Publish(p)) = (to, &packet) {
                assert_eq!(c2, c, "a retained message went to another client");
                assert!(p.retain, "a message sent on SUBSCRIBE without RETAIN");
                assert!(
                    matches(filter, &p.topic),
                    "retained {} for {filter}",
                    p.topic
                );
                if self.retained_after_loss {
                    self.route(to, packet);
                    continue;
                }
                let token = token_of(p);
                let &(current, msg_qos) = self
                    .retained
                    .get(&*p.topic)
                    .expect("a retained message for a topic that has none");
                assert_eq!(token, current, "not the current retained message");
                assert_eq!(p.qos, msg_qos.min(qos), "retained message QoS");
            }
            self.route(to, packet);
        }
        // The new interest reaches the other cores before the SUBACK goes, as in the server.
        let to_cores = Effects {
            to_cores: outcome.effects.to_cores,
            ..Effects::default()
        };
        self.deliver(to_cores, c % CORES);
    }

    fn unsubscribe(&mut self, c: usize, filter: &'static str) {
        if !self.clients[c].online {
            return;
        }
        let unsubscribe = Unsubscribe {
            packet_id: id(2),
            properties: Properties::default(),
            filters: vec![filter.into()],
        };
        let (unsub_ack, effects) = self.brokers[c % CORES].unsubscribe(&self.names[c], unsubscribe);
        let existed = self.clients[c].subscriptions.remove(filter).is_some();
        self.touched[c].insert(filter);
        let expected = if existed {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_SUBSCRIPTION_EXISTED
        };
        assert_eq!(unsub_ack.reason_codes, [expected], "UNSUBACK for {filter}");
        self.deliver(effects, c % CORES);
    }

    /// A message published now is owed to every session subscribed to its topic, at the
    /// highest QoS granted by a matching subscription, capped by its own.
    fn publish(&mut self, c: usize, topic: &'static str, qos: QoS, retain: bool) {
        self.publish_as(c, topic, qos, retain, None);
    }

    /// `inbound`: the packet id of an inbound QoS 2 PUBLISH, taken the way the server
    /// takes it (journaled before routing, confirmed once routed).
    fn publish_as(
        &mut self,
        c: usize,
        topic: &'static str,
        qos: QoS,
        retain: bool,
        inbound: Option<u16>,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        for client in &mut self.clients {
            let granted = client
                .subscriptions
                .iter()
                .filter(|(f, _)| matches(f, topic))
                .map(|(_, q)| *q)
                .max();
            if let Some(granted) = granted {
                let delivered = granted.min(qos);
                if delivered != QoS::AtMostOnce {
                    client.owed.push_back((token, delivered));
                }
            }
        }
        if retain {
            self.retained.insert(topic, (token, qos));
        }
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| id(1)),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(&token.to_be_bytes()),
        };
        let core = c % CORES;
        let effects = match inbound {
            Some(packet_id) => self.brokers[core].publish_exactly_once(
                &self.names[c],
                id(packet_id),
                publish,
                self.now,
            ),
            None => self.brokers[core].publish(&self.names[c], publish, self.now),
        };
        // The acknowledgement waits for this core's log, and for every core's once a QoS
        // 1/2 message crossed (`sync_peers`).
        let routed_on = effects.to_cores.iter().any(|(_, msg)| match msg {
            CoreMsg::Publish(m) => m.qos != QoS::AtMostOnce,
            CoreMsg::Retain(_) => true,
            _ => false,
        });
        self.deliver(effects, core);
        if qos != QoS::AtMostOnce {
            for k in (0..CORES).filter(|&k| k == core || routed_on) {
                self.made_durable(k);
            }
        }
        if let Some(packet_id) = inbound {
            self.brokers[core].journal_qos2_received(&self.names[c], id(packet_id));
        }
    }

    fn index(&self, name: &ByteString) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Hands packets to the clients of core `from` and messages to the other cores, until
    /// no core has anything left to say: what the server does between two client packets.
    fn deliver(&mut self, effects: Effects, from: usize) {
        let mut pending: VecDeque<(usize, Effects)> = VecDeque::from([(from, effects)]);
        while let Some((core, effects)) = pending.pop_front() {
            for (to, packet) in effects.to_clients {
                let (to, packet) = (self.index(&to), packet.into_packet());
                assert_eq!(
                    to.map(|c| c % CORES),
                    Some(core),
                    "core {core} sent {packet:?} to a client it does not own"
                );
                self.route(to, packet);
            }
            for (dest, msg) in effects.to_cores {
                assert_ne!(dest.0, core, "a core sent a message to itself");
                let more = self.brokers[dest.0].on_core_msg(msg, self.now);
                pending.push_back((dest.0, more));
            }
        }
    }

    fn route(&mut self, to: Option<usize>, packet: Packet) {
        let c = to.unwrap_or_else(|| panic!("{packet:?} to an unknown client"));
        self.receive(c, packet);
    }

    /// The client `c` receives `packet` from the server.
    fn receive(&mut self, c: usize, packet: Packet) {
        let name = &self.names[c];
        let client = &mut self.clients[c];
        assert!(client.online, "{packet:?} sent to {name} while offline");
        match packet {
            Packet::Publish(p) => receive_publish(name, client, &p),
            Packet::PubRel(a) => {
                let pos = client
                    .held
                    .iter()
                    .position(|(id, _)| *id == a.packet_id.get());
                match pos {
                    Some(pos) if matches!(client.held[pos].1, Held::Received | Held::Released) => {
                        assert_eq!(a.reason_code, ReasonCode::SUCCESS);
                        client.held[pos].1 = Held::Released;
                    }
                    _ => panic!(
                        "PUBREL {} to {name}, which sent no PUBREC for it",
                        a.packet_id.get()
                    ),
                }
            }
            other => panic!("unexpected {other:?} to {name}"),
        }
    }

    /// Reconnects every session, acknowledges everything, and checks nothing is owed.
    fn finish(mut self) {
        self.run_timers();
        for c in 0..CLIENTS {
            if self.clients[c].session && !self.clients[c].online {
                let expiry = self.clients[c].expiry;
                self.connect(c, false, expiry, u16::MAX);
            }
        }
        for _ in 0..10_000 {
            let next = (0..CLIENTS).find(|&c| {
                self.clients[c]
                    .held
                    .iter()
                    .any(|(_, h)| *h != Held::Received)
            });
            let Some(c) = next else { break };
            let nth = self.clients[c]
                .held
                .iter()
                .position(|(_, h)| *h != Held::Received)
                .unwrap_or(0);
            self.ack(c, nth, false);
        }
        for (c, client) in self.clients.iter().enumerate() {
            assert!(
                client.held.is_empty(),
                "c{c} still holds {:?} after acknowledging everything",
                client.held
            );
            assert!(
                client.owed.is_empty(),
                "c{c} never received {:?}",
                client.owed
            );
        }
    }
}
