//! A session's delivery state: what it is subscribed to, what it has in flight in each
//! direction and what waits for it (MQTT 5.0 section 4.1, 4.3, 4.4, 4.9).
//!
//! Pure and clock-free: the caller says when things happen, and each call returns the
//! packets to send. The state outlives connections: a persistent session keeps its
//! subscriptions, unacknowledged messages and queue while its client is away, and
//! [`Session::resume`] replays them in order when the client returns.
//!
//! Invariants: never more QoS 1/2 PUBLISH in flight than the client's Receive Maximum
//! [MQTT-4.9.0-2]; packet ids in flight are unique [MQTT-2.2.1-3]; a QoS 2 message
//! received is routed once, however often its PUBLISH is retransmitted, until its PUBREL
//! [MQTT-4.3.3-10]; unacknowledged messages are resent first, with DUP, in their original
//! order [MQTT-4.4.0-1].

use crate::hash::FastMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

pub use super::subscriptions::Subscriptions;
use crate::protocol::{
    Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, SubscriptionOptions,
};

/// A message's number on its core: the key of the core's message table. Monotonic per
/// core, also across restarts.
pub type Seq = u64;

/// A message as routed between sessions and cores: shared, never copied per subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The properties passed on to subscribers (Topic Alias and Subscription Identifiers
    /// removed; Message Expiry Interval rewritten on delivery).
    pub properties: Properties,
    /// The publishing client, for No Local.
    pub publisher: ByteString,
    /// When the Message Expiry Interval runs out, if it was set.
    pub expires_at: Option<Instant>,
    /// Set on an inbound QoS 2 message of a persistent session: the id every core
    /// deduplicates on when a recovery routes it again.
    pub origin: Option<Origin>,
}

impl Message {
    /// The same message with its topic and payload in an allocation of its own.
    pub fn local_copy(&self) -> Message {
        let (topic, payload) = copy_topic_and_payload(&self.topic, &self.payload);
        Message {
            topic,
            payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            publisher: self.publisher.clone(),
            expires_at: self.expires_at,
            origin: self.origin,
        }
    }
}

/// `topic` and `payload` copied into one allocation shared by both.
pub fn copy_topic_and_payload(topic: &ByteString, payload: &Bytes) -> (ByteString, Bytes) {
    let mut buf = bytes::BytesMut::with_capacity(topic.len() + payload.len());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
    let mut copy = buf.freeze();
    let copied_topic = copy.split_to(topic.len());
    match ByteString::try_from(copied_topic) {
        Ok(copied_topic) => (copied_topic, copy),
        Err(_) => (topic.clone(), payload.clone()), // a copy of valid UTF-8 is valid: not reached
    }
}

/// Where an inbound QoS 2 message entered the broker: its core and a number from that
/// core's message sequence (never reused, restarts included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub core: u16,
    pub seq: u64,
}

/// A subscription as the session keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// One message waiting for (or in) delivery to one session, packed into 8 bytes: the
/// message's [`Seq`] in the low 61 bits, the delivery QoS and the retain flag above. This
/// is all a queue holds per message; the message itself lives once in the core's table
/// (and log), however many sessions it waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Queued(u64);

impl Queued {
    const SEQ_BITS: u32 = 61;

    pub fn new(seq: Seq, qos: QoS, retain: bool) -> Queued {
        debug_assert!(seq < 1 << Self::SEQ_BITS);
        Queued(seq | (qos as u64) << Self::SEQ_BITS | u64::from(retain) << 63)
    }

    pub fn seq(self) -> Seq {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }

    pub fn qos(self) -> QoS {
        match (self.0 >> Self::SEQ_BITS) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    pub fn retain(self) -> bool {
        self.0 >> 63 == 1
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} q{} r{}",
            self.seq(),
            self.qos() as u8,
            self.retain()
        )
    }
}

/// Where the session's messages live: the core's message table.
pub trait Messages {
    /// The message, if it still exists (read back from the log when not in memory).
    fn get(&self, seq: Seq) -> Option<Arc<Message>>;
    /// Its payload size, for the queued-bytes limit.
    fn size(&self, seq: Seq) -> usize;
}

/// What happens when a queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Drop the oldest queued message to make room (counted).
    #[default]
    DropOldest,
    /// Refuse the new message (counted).
    RefuseNewest,
}

/// Bounds on one session's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub overflow: Overflow,
    /// Whether QoS 0 messages wait for an offline session.
    pub queue_qos0: bool,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_messages: 1000,
            max_bytes: usize::MAX,
            overflow: Overflow::DropOldest,
            queue_qos0: false,
        }
    }
}

/// A change to what the session holds, reported so the broker can log it and count
/// references: every reference a session takes ends in exactly one `Done` or `Dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A queued message was sent with this packet id (and is in flight unless QoS 0).
    Sent {
        seq: Seq,
        packet_id: Option<PacketId>,
    },
    /// QoS 2: PUBREC received, PUBREL sent.
    Received { seq: Seq },
    /// The delivery ended: acknowledged, sent at QoS 0, or expired unsent.
    Done { seq: Seq },
    /// The message was dropped by the overflow policy.
    Dropped { seq: Seq },
}

/// What [`Session::deliver`] did with a message.
#[derive(Debug)]
pub enum Delivery {
    /// Sent at QoS 0: nothing kept.
    Sent(Packet),
    /// Sent at QoS 1/2 and kept in flight until acknowledged: the session holds a reference.
    InFlight(Packet),
    /// Queued: the session holds a reference.
    Queued,
    /// Not taken: expired, QoS 0 for an offline session, or refused by a full queue.
    Skipped { refused: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// QoS 1 sent, PUBACK outstanding; QoS 2 sent, PUBREC outstanding.
    Published,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP outstanding.
    Released,
}

#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub packet_id: PacketId,
    pub entry: Queued,
    pub state: Outbound,
    /// Sent on an earlier connection and not yet resent on this one: a resume resends only
    /// as many PUBLISH as the new Receive Maximum allows, the rest as acknowledgements
    /// free room [MQTT-3.3.4-9].
    pub awaiting_resend: bool,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    pub subscriptions: Subscriptions,
    /// The client's Receive Maximum for the current (or last) connection.
    receive_maximum: u16,
    next_packet_id: u16,
    /// What the session holds for delivery; `None` while it holds nothing, which is what
    /// most of a fleet's idle sessions hold (one pointer instead of 96 bytes of empty
    /// queues, a tenth of an idle session's memory).
    held: Option<Box<Held>>,
    pub dropped: u64,
}

/// A session's messages in flight and queued, and its inbound QoS 2 packet ids.
#[derive(Debug, Default)]
struct Held {
    in_flight: VecDeque<InFlight>,
    /// Messages waiting for room in the window (or for the client to come back).
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Subscription Identifiers of queued and in-flight messages that carry any (v5 only;
    /// kept aside so that a queue entry stays 8 bytes).
    #[allow(clippy::box_collection)] // One pointer while empty, which is almost always.
    ids: Option<Box<FastMap<Seq, Box<[u32]>>>>,
    /// Inbound QoS 2 packet ids received and not yet released by PUBREL (a few at most:
    /// a list is smaller than a set).
    awaiting_rel: Vec<u16>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
            && self.queue.is_empty()
            && self.ids.is_none()
            && self.awaiting_rel.is_empty()
    }
}

/// What a session that holds nothing reads as.
static NOTHING_HELD: Held = Held {
    in_flight: VecDeque::new(),
    queue: VecDeque::new(),
    queued_bytes: 0,
    ids: None,
    awaiting_rel: Vec::new(),
};

impl Session {
    pub fn new(client_id: ByteString) -> Session {
        Session {
            client_id,
            subscriptions: Subscriptions::default(),
            receive_maximum: u16::MAX,
            next_packet_id: 1,
            held: None,
            dropped: 0,
        }
    }

    fn held(&self) -> &Held {
        self.held.as_deref().unwrap_or(&NOTHING_HELD)
    }

    fn held_mut(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Box::default)
    }

    /// Lets go of the (empty) delivery state's allocation once nothing is held.
    pub fn compact(&mut self) {
        if self.held.as_ref().is_some_and(|h| h.is_empty()) {
            self.held = None;
        }
    }

    pub fn queued(&self) -> usize {
        self.held().queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.held().in_flight.len()
    }

    pub fn in_flight_entries(&self) -> impl Iterator<Item = &InFlight> {
        self.held().in_flight.iter()
    }

    pub fn queued_entries(&self) -> impl Iterator<Item = Queued> + '_ {
        self.held().queue.iter().copied()
    }

    pub fn ids_of(&self, seq: Seq) -> &[u32] {
        self.held()
            .ids
            .as_ref()
            .and_then(|m| m.get(&seq))
            .map_or(&[], |ids| ids)
    }

    pub fn awaiting_release_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.held().awaiting_rel.iter().copied()
    }

    fn forget_ids(&mut self, seq: &Seq) {
        let Some(held) = self.held.as_deref_mut() else {
            return;
        };
        if let Some(ids) = &mut held.ids {
            ids.remove(seq);
            if ids.is_empty() {
                held.ids = None;
            }
        }
    }

    fn forget_awaiting(&mut self, packet_id: u16) -> bool {
        let Some(held) = self.held.as_deref_mut() else {
            return false;
        };
        match held.awaiting_rel.iter().position(|id| *id == packet_id) {
            Some(pos) => {
                held.awaiting_rel.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// Where the message in flight with `packet_id` sits in the window.
    fn in_flight_position(&self, packet_id: PacketId) -> Option<usize> {
        self.held()
            .in_flight
            .iter()
            .position(|f| f.packet_id == packet_id)
    }

    /// Every message this session holds a reference to.
    pub fn references(&self) -> impl Iterator<Item = Seq> + '_ {
        self.held()
            .in_flight
            .iter()
            .map(|f| f.entry.seq())
            .chain(self.held().queue.iter().map(|q| q.seq()))
    }

    /// A message matched this session. `entry` carries the delivery QoS (already the
    /// minimum of publish and subscription) and retain flag; `online` says whether a
    /// connection is attached.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        entry: Queued,
        message: &Message,
        ids: Vec<u32>,
        online: bool,
        limits: &QueueLimits,
        messages: &dyn Messages,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Delivery {
        if message.expires_at.is_some_and(|at| at <= now) {
            return Delivery::Skipped { refused: false };
        }
        if entry.qos() == QoS::AtMostOnce && online {
            let packet = publish_of(message, entry, None, ids, now);
            return Delivery::Sent(Packet::Publish(packet));
        }
        if entry.qos() == QoS::AtMostOnce && !limits.queue_qos0 {
            return Delivery::Skipped { refused: false };
        }
        if online
            && self.held().in_flight.len() < usize::from(self.receive_maximum)
            && self.held().queue.is_empty()
        {
            let packet_id = self.allocate_packet_id();
            if !ids.is_empty() {
                self.held_mut()
                    .ids
                    .get_or_insert_with(Default::default)
                    .insert(entry.seq(), ids.clone().into_boxed_slice());
            }
            self.held_mut().in_flight.push_back(InFlight {
                packet_id,
                entry,
                state: Outbound::Published,
                awaiting_resend: false,
            });
            changes.push(Change::Sent {
                seq: entry.seq(),
                packet_id: Some(packet_id),
            });
            let publish = publish_of(message, entry, Some(packet_id), ids, now);
            return Delivery::InFlight(Packet::Publish(publish));
        }
        let size = message.payload.len();
        while self.held().queue.len() >= limits.max_messages
            || (!self.held().queue.is_empty() && self.held().queued_bytes + size > limits.max_bytes)
        {
            if limits.overflow == Overflow::RefuseNewest {
                self.dropped += 1;
                return Delivery::Skipped { refused: true };
            }
            let Some(oldest) = self.held_mut().queue.pop_front() else {
                break;
            };
            self.forget(oldest, messages);
            self.dropped += 1;
            changes.push(Change::Dropped { seq: oldest.seq() });
        }
        if !ids.is_empty() {
            self.held_mut()
                .ids
                .get_or_insert_with(Default::default)
                .insert(entry.seq(), ids.into_boxed_slice());
        }
        let held = self.held_mut();
        held.queue.push_back(entry);
        held.queued_bytes += size;
        Delivery::Queued
    }

    fn forget(&mut self, entry: Queued, messages: &dyn Messages) {
        let held = self.held_mut();
        held.queued_bytes = held.queued_bytes.saturating_sub(messages.size(entry.seq()));
        self.forget_ids(&entry.seq());
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            // The window is at most 65,535 wide, so a free id always exists.
            if let Some(pid) = PacketId::new(id) {
                if self.in_flight_position(pid).is_none() {
                    return pid;
                }
            }
        }
    }

    /// Moves queued messages into the window as far as it allows.
    pub fn drain(
        &mut self,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        while self.held().in_flight.len() < usize::from(self.receive_maximum) {
            // Nothing held, nothing to drain: no allocation for an idle session's resume.
            let Some(entry) = self.held.as_deref_mut().and_then(|h| h.queue.pop_front()) else {
                break;
            };
            let message = messages.get(entry.seq());
            let held = self.held_mut();
            held.queued_bytes = held
                .queued_bytes
                .saturating_sub(message.as_ref().map_or(0, |m| m.payload.len()));
            let message = match message {
                Some(m) if !m.expires_at.is_some_and(|at| at <= now) => m,
                _ => {
                    self.forget_ids(&entry.seq());
                    changes.push(Change::Done { seq: entry.seq() });
                    continue;
                }
            };
            let ids = self.ids_of(entry.seq()).to_vec();
            if entry.qos() == QoS::AtMostOnce {
                self.forget_ids(&entry.seq());
                out.push(Packet::Publish(publish_of(&message, entry, None, ids, now)));
                changes.push(Change::Sent {
                    seq: entry.seq(),
                    packet_id: None,
                });
                changes.push(Change::Done { seq: entry.seq() });
                continue;
            }
            let packet_id = self.allocate_packet_id();
            self.held_mut().in_flight.push_back(InFlight {
                packet_id,
                entry,
                state: Outbound::Published,
                awaiting_resend: false,
            });
            changes.push(Change::Sent {
                seq: entry.seq(),
                packet_id: Some(packet_id),
            });
            out.push(Packet::Publish(publish_of(
                &message,
                entry,
                Some(packet_id),
                ids,
                now,
            )));
        }
    }

    /// The client (re)connected: resend what is unacknowledged, with DUP, in order
    /// [MQTT-4.4.0-1], then fill the window from the queue.
    pub fn resume(
        &mut self,
        receive_maximum: u16,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        self.receive_maximum = receive_maximum.max(1);
        let mut gone = Vec::new();
        let mut quota = usize::from(self.receive_maximum);
        for i in 0..self.held().in_flight.len() {
            let in_flight = self.held().in_flight[i];
            match in_flight.state {
                Outbound::Published if quota == 0 => {
                    self.held_mut().in_flight[i].awaiting_resend = true;
                }
                Outbound::Published => {
                    quota -= 1;
                    self.held_mut().in_flight[i].awaiting_resend = false;
                    match self.resend(in_flight, messages, now) {
                        Some(packet) => out.push(packet),
                        None => gone.push(in_flight.packet_id),
                    }
                }
                Outbound::Released => out.push(Packet::PubRel(ack(
                    in_flight.packet_id,
                    ReasonCode::SUCCESS,
                ))),
            }
        }
        for packet_id in gone {
            self.complete(packet_id, changes);
        }
        self.drain(messages, now, out, changes);
        self.compact();
    }

    /// The DUP PUBLISH for an unacknowledged message; `None` if its record vanished. A
    /// message already sent is resent even if it has expired since: the client may hold
    /// it half-acknowledged.
    fn resend(&self, in_flight: InFlight, messages: &dyn Messages, now: Instant) -> Option<Packet> {
        let seq = in_flight.entry.seq();
        let message = messages.get(seq)?;
        let ids = self.ids_of(seq).to_vec();
        let mut publish = publish_of(
            &message,
            in_flight.entry,
            Some(in_flight.packet_id),
            ids,
            now,
        );
        publish.dup = true;
        Some(Packet::Publish(publish))
    }

    /// Resends held-back unacknowledged messages, in order, as far as the window allows.
    fn resend_held(
        &mut self,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        loop {
            // A QoS 2 message counts against Receive Maximum until its PUBCOMP, PUBREC
            // or not [MQTT-4.9.0-2]: only the held-back ones are outside the window.
            let window = &self.held().in_flight;
            let sending = window.iter().filter(|f| !f.awaiting_resend).count();
            if sending >= usize::from(self.receive_maximum) {
                return;
            }
            let Some(i) = window.iter().position(|f| f.awaiting_resend) else {
                return;
            };
            let slot = &mut self.held_mut().in_flight[i];
            slot.awaiting_resend = false;
            let in_flight = *slot;
            match self.resend(in_flight, messages, now) {
                Some(packet) => out.push(packet),
                None => {
                    self.complete(in_flight.packet_id, changes);
                }
            }
        }
    }

    fn complete(&mut self, packet_id: PacketId, changes: &mut Vec<Change>) -> bool {
        let Some(pos) = self.in_flight_position(packet_id) else {
            return false;
        };
        if let Some(done) = self.held_mut().in_flight.remove(pos) {
            self.forget_ids(&done.entry.seq());
            changes.push(Change::Done {
                seq: done.entry.seq(),
            });
        }
        true
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) ends a delivery.
    pub fn on_complete(
        &mut self,
        packet_id: PacketId,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        if self.complete(packet_id, changes) {
            self.resend_held(messages, now, out, changes);
            self.drain(messages, now, out, changes);
        }
    }

    /// PUBREC: the message is delivered; answer PUBREL [MQTT-4.3.3-4].
    #[allow(clippy::too_many_arguments)]
    pub fn on_pub_rec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        let Some(pos) = self.in_flight_position(packet_id) else {
            out.push(Packet::PubRel(ack(
                packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            )));
            return;
        };
        if reason_code.is_error() {
            // The receiver refused it: the delivery ends here (MQTT 5.0 4.3.3).
            self.complete(packet_id, changes);
            self.resend_held(messages, now, out, changes);
            self.drain(messages, now, out, changes);
            return;
        }
        let f = &mut self.held_mut().in_flight[pos];
        if f.state == Outbound::Published {
            f.state = Outbound::Released;
            f.awaiting_resend = false;
            changes.push(Change::Received { seq: f.entry.seq() });
        }
        out.push(Packet::PubRel(ack(packet_id, ReasonCode::SUCCESS)));
    }

    /// An inbound QoS 2 PUBLISH: returns whether to route it (false for a retransmission
    /// of one not yet released) [MQTT-4.3.3-10].
    pub fn receive_qos2(&mut self, packet_id: PacketId) -> bool {
        if self.held().awaiting_rel.contains(&packet_id.get()) {
            return false;
        }
        self.held_mut().awaiting_rel.push(packet_id.get());
        true
    }

    pub fn awaiting_release(&self) -> usize {
        self.held().awaiting_rel.len()
    }

    /// PUBREL for an inbound QoS 2 message: answer PUBCOMP. Returns whether it was known.
    pub fn on_pub_rel(&mut self, packet_id: PacketId) -> (Packet, bool) {
        let known = self.forget_awaiting(packet_id.get());
        let reason = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        (Packet::PubComp(ack(packet_id, reason)), known)
    }

    // Recovery: rebuilding the state from the log, in log order.

    /// A queued reference, as the log recorded it.
    pub fn restore_queued(&mut self, entry: Queued, ids: Vec<u32>, size: usize) {
        if !ids.is_empty() {
            self.held_mut()
                .ids
                .get_or_insert_with(Default::default)
                .insert(entry.seq(), ids.into_boxed_slice());
        }
        let held = self.held_mut();
        held.queue.push_back(entry);
        held.queued_bytes += size;
    }

    /// A queued message was sent with `packet_id` (QoS 1/2) or at QoS 0 (None).
    pub fn restore_sent(&mut self, seq: Seq, packet_id: Option<PacketId>, size: usize) {
        let Some(pos) = self.held().queue.iter().position(|q| q.seq() == seq) else {
            return;
        };
        let held = self.held_mut();
        let Some(entry) = held.queue.remove(pos) else {
            return;
        };
        held.queued_bytes = held.queued_bytes.saturating_sub(size);
        if let Some(packet_id) = packet_id {
            self.held_mut().in_flight.push_back(InFlight {
                packet_id,
                entry,
                state: Outbound::Published,
                awaiting_resend: false,
            });
            self.next_packet_id = packet_id.get().checked_add(1).unwrap_or(1);
        }
    }

    pub fn restore_in_flight(&mut self, in_flight: InFlight, ids: Vec<u32>) {
        if !ids.is_empty() {
            self.held_mut()
                .ids
                .get_or_insert_with(Default::default)
                .insert(in_flight.entry.seq(), ids.into_boxed_slice());
        }
        self.next_packet_id = in_flight.packet_id.get().checked_add(1).unwrap_or(1);
        self.held_mut().in_flight.push_back(in_flight);
    }

    pub fn restore_received(&mut self, seq: Seq) {
        let Some(held) = self.held.as_deref_mut() else {
            return;
        };
        if let Some(f) = held.in_flight.iter_mut().find(|f| f.entry.seq() == seq) {
            f.state = Outbound::Released;
        }
    }

    /// The reference ended (acknowledged or dropped). Returns whether it was held.
    pub fn restore_done(&mut self, seq: Seq, size: usize) -> bool {
        self.forget_ids(&seq);
        let Some(held) = self.held.as_deref_mut() else {
            return false;
        };
        if let Some(pos) = held.in_flight.iter().position(|f| f.entry.seq() == seq) {
            held.in_flight.remove(pos);
            return true;
        }
        if let Some(pos) = held.queue.iter().position(|q| q.seq() == seq) {
            held.queue.remove(pos);
            held.queued_bytes = held.queued_bytes.saturating_sub(size);
            return true;
        }
        false
    }

    pub fn restore_awaiting_release(&mut self, packet_id: u16, awaiting: bool) {
        if awaiting {
            let held = self.held_mut();
            if !held.awaiting_rel.contains(&packet_id) {
                held.awaiting_rel.push(packet_id);
            }
        } else {
            self.forget_awaiting(packet_id);
        }
    }
}

pub fn ack(packet_id: PacketId, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason_code,
        properties: Properties::default(),
    }
}

/// The PUBLISH a subscriber receives for `message` delivered as `entry`.
pub fn publish_of(
    message: &Message,
    entry: Queued,
    packet_id: Option<PacketId>,
    ids: Vec<u32>,
    now: Instant,
) -> Publish {
    let mut properties = message.properties.clone();
    if !ids.is_empty() {
        properties.subscription_identifiers = ids;
    } else if let Some(values) = properties.values_mut() {
        values.subscription_identifiers.clear();
    }
    if let Some(at) = message.expires_at {
        // [MQTT-3.3.2-6] pass on the time that is left, not the original interval.
        properties.message_expiry_interval =
            Some(at.saturating_duration_since(now).as_secs().max(1) as u32);
    }
    Publish {
        dup: false,
        qos: entry.qos(),
        retain: entry.retain(),
        topic: message.topic.clone(),
        packet_id,
        properties,
        payload: message.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// The message table, as a map.
    #[derive(Default)]
    struct Table(RefCell<std::collections::HashMap<Seq, Arc<Message>>>);

    impl Messages for Table {
        fn get(&self, seq: Seq) -> Option<Arc<Message>> {
            self.0.borrow().get(&seq).cloned()
        }
        fn size(&self, seq: Seq) -> usize {
            self.get(seq).map_or(0, |m| m.payload.len())
        }
    }

    struct Fixture {
        session: Session,
        table: Table,
        next: Seq,
        limits: QueueLimits,
        changes: Vec<Change>,
        now: Instant,
    }

    impl Fixture {
        fn new(max_messages: usize) -> Fixture {
            Fixture {
                session: Session::new("c".into()),
                table: Table::default(),
                next: 1,
                limits: QueueLimits {
                    max_messages,
                    ..QueueLimits::default()
                },
                changes: Vec::new(),
                now: Instant::now(),
            }
        }

        fn deliver(&mut self, publish_qos: QoS, sub_qos: QoS, online: bool) -> Delivery {
            let seq = self.next;
            self.next += 1;
            let message = Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from(format!("m{seq}")),
                qos: publish_qos,
                retain: false,
                properties: Properties::default(),
                publisher: "p".into(),
                expires_at: None,
                origin: None,
            });
            self.table.0.borrow_mut().insert(seq, message.clone());
            let entry = Queued::new(seq, publish_qos.min(sub_qos), false);
            self.session.deliver(
                entry,
                &message,
                vec![],
                online,
                &self.limits,
                &self.table,
                self.now,
                &mut self.changes,
            )
        }

        fn resume(&mut self, receive_maximum: u16) -> Vec<Packet> {
            let mut out = Vec::new();
            self.session.resume(
                receive_maximum,
                &self.table,
                self.now,
                &mut out,
                &mut self.changes,
            );
            out
        }

        fn complete(&mut self, packet_id: PacketId) -> Vec<Packet> {
            let mut out = Vec::new();
            self.session.on_complete(
                packet_id,
                &self.table,
                self.now,
                &mut out,
                &mut self.changes,
            );
            out
        }
    }

    /// An idle session holds no delivery allocation; one with messages does, and gives it
    /// back once they are acknowledged and it is compacted (as at disconnect).
    #[test]
    fn an_idle_session_holds_no_delivery_state() {
        assert!(
            std::mem::size_of::<Session>() <= 96,
            "{}",
            std::mem::size_of::<Session>()
        );
        let mut f = Fixture::new(10);
        assert!(f.resume(10).is_empty());
        assert!(
            f.session.held.is_none(),
            "resume with nothing held keeps nothing"
        );
        assert!(matches!(
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false),
            Delivery::Queued
        ));
        assert!(f.session.held.is_some());
        assert_eq!(f.session.queued(), 1);
        let out = f.resume(10);
        let Some(Packet::Publish(p)) = out.first() else {
            panic!("the queued message is sent on resume")
        };
        f.session.compact();
        assert!(f.session.held.is_some(), "in flight: still held");
        f.complete(p.packet_id.unwrap());
        assert_eq!(f.session.in_flight(), 0);
        f.session.compact();
        assert!(f.session.held.is_none());
    }

    fn sent(d: Delivery) -> Publish {
        match d {
            Delivery::Sent(Packet::Publish(p)) | Delivery::InFlight(Packet::Publish(p)) => p,
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn queued_entry_packs_seq_qos_and_retain_into_eight_bytes() {
        assert_eq!(std::mem::size_of::<Queued>(), 8);
        let q = Queued::new((1 << 61) - 1, QoS::ExactlyOnce, true);
        assert_eq!(
            (q.seq(), q.qos(), q.retain()),
            ((1 << 61) - 1, QoS::ExactlyOnce, true)
        );
        let q = Queued::new(5, QoS::AtMostOnce, false);
        assert_eq!((q.seq(), q.qos(), q.retain()), (5, QoS::AtMostOnce, false));
    }

    #[test]
    fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
        let mut f = Fixture::new(10);
        let p = sent(f.deliver(QoS::ExactlyOnce, QoS::AtLeastOnce, true));
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let p = sent(f.deliver(QoS::AtMostOnce, QoS::ExactlyOnce, true));
        assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None));
    }

    #[test]
    fn mqtt_4_9_0_2_window_holds_receive_maximum_then_queues() {
        let mut f = Fixture::new(10);
        f.resume(2);
        let a = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        let _b = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        assert!(matches!(
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true),
            Delivery::Queued
        ));
        assert_eq!((f.session.in_flight(), f.session.queued()), (2, 1));
        let out = f.complete(a.packet_id.unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!((f.session.in_flight(), f.session.queued()), (2, 0));
        assert!(f.changes.contains(&Change::Done { seq: 1 }));
        assert!(f.changes.contains(&Change::Sent {
            seq: 3,
            packet_id: PacketId::new(3)
        }));
    }

    #[test]
    fn mqtt_4_4_0_1_resume_resends_unacknowledged_with_dup_in_order() {
        let mut f = Fixture::new(10);
        let first = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        let second = sent(f.deliver(QoS::ExactlyOnce, QoS::ExactlyOnce, true));
        let mut out = Vec::new();
        f.session.on_pub_rec(
            second.packet_id.unwrap(),
            ReasonCode::SUCCESS,
            &f.table,
            f.now,
            &mut out,
            &mut f.changes,
        );
        assert!(matches!(out.pop(), Some(Packet::PubRel(_))));
        // Offline: QoS 1 queues, QoS 0 is not kept.
        assert!(matches!(
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false),
            Delivery::Queued
        ));
        assert!(matches!(
            f.deliver(QoS::AtMostOnce, QoS::AtLeastOnce, false),
            Delivery::Skipped { refused: false }
        ));
        let out = f.resume(10);
        assert_eq!(out.len(), 3);
        match &out[0] {
            Packet::Publish(p) => assert!(p.dup && p.packet_id == first.packet_id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[1], Packet::PubRel(a) if Some(a.packet_id) == second.packet_id));
        assert!(matches!(&out[2], Packet::Publish(p) if !p.dup && p.payload == "m3"));
    }

    #[test]
    fn mqtt_3_3_4_9_resume_resends_no_more_than_the_new_receive_maximum() {
        let mut f = Fixture::new(100);
        f.resume(10);
        let sent: Vec<Publish> = (0..6)
            .map(|_| sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true)))
            .collect();
        let out = f.resume(4);
        let resent: Vec<_> = out
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.dup, p.packet_id),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            resent,
            sent[..4]
                .iter()
                .map(|p| (true, p.packet_id))
                .collect::<Vec<_>>()
        );
        // Each acknowledgement lets one held-back message through, with its own id.
        let out = f.complete(sent[0].packet_id.unwrap());
        assert!(
            matches!(&out[..], [Packet::Publish(p)] if p.dup && p.packet_id == sent[4].packet_id)
        );
        let out = f.complete(sent[1].packet_id.unwrap());
        assert!(
            matches!(&out[..], [Packet::Publish(p)] if p.dup && p.packet_id == sent[5].packet_id)
        );
        let out = f.complete(sent[2].packet_id.unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn offline_qos0_is_queued_only_when_configured() {
        let mut f = Fixture::new(10);
        f.limits.queue_qos0 = true;
        assert!(matches!(
            f.deliver(QoS::AtMostOnce, QoS::AtLeastOnce, false),
            Delivery::Queued
        ));
        let out = f.resume(10);
        assert!(
            matches!(&out[..], [Packet::Publish(p)] if p.qos == QoS::AtMostOnce && p.packet_id.is_none())
        );
        assert!(f.changes.contains(&Change::Done { seq: 1 }));
        assert_eq!(f.session.queued() + f.session.in_flight(), 0);
    }

    #[test]
    fn mqtt_4_3_3_10_inbound_qos2_routes_once_until_released() {
        let mut s = Session::new("c".into());
        let id = PacketId::new(7).unwrap();
        assert!(s.receive_qos2(id));
        assert!(!s.receive_qos2(id));
        assert!(
            matches!(s.on_pub_rel(id), (Packet::PubComp(a), true) if a.reason_code == ReasonCode::SUCCESS)
        );
        assert!(s.receive_qos2(id));
        assert!(matches!(
            s.on_pub_rel(PacketId::new(8).unwrap()),
            (Packet::PubComp(a), false) if a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        ));
    }

    #[test]
    fn queue_overflow_drops_oldest_and_counts() {
        let mut f = Fixture::new(2);
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        assert_eq!((f.session.queued(), f.session.dropped), (2, 3));
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!(kept, vec![4, 5]);
        assert_eq!(
            f.changes,
            vec![
                Change::Dropped { seq: 1 },
                Change::Dropped { seq: 2 },
                Change::Dropped { seq: 3 }
            ]
        );
    }

    #[test]
    fn queue_overflow_can_refuse_the_newest_instead() {
        let mut f = Fixture::new(2);
        f.limits.overflow = Overflow::RefuseNewest;
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!((kept, f.session.dropped), (vec![1, 2], 3));
    }

    #[test]
    fn queued_bytes_limit_drops_oldest() {
        let mut f = Fixture::new(100);
        f.limits.max_bytes = 5; // payloads are "m1".."m9": 2 bytes each
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!(kept, vec![4, 5]);
    }
}
