//! A session's delivery state: what it has in flight in each direction and what waits for
//! it (MQTT 5.0 section 4.1, 4.3, 4.4, 4.9), and its subscriptions.
//!
//! Pure and clock-free: the caller says when things happen, and each call returns the
//! packets to send. The state outlives connections: a persistent session keeps its
//! subscriptions, unacknowledged messages and queue while its client is away, and
//! [`Session::resume`] replays them in order when the client returns.
//!
//! The parts: `message` (a message as held, and the PUBLISH made from it), `queue` (what
//! waits, under the operator's limits), `window` (what is in flight, the one path into
//! it, resume), `inbound` (QoS 2 ids awaiting PUBREL), `restore` (rebuilding all of it
//! from the log). This file holds the [`Session`] itself and [`Session::deliver`],
//! which decides for each message whether it goes out, into the window or into the queue.
//!
//! Invariants: never more QoS 1/2 PUBLISH in flight than the client's Receive Maximum
//! [MQTT-4.9.0-2]; packet ids in flight are unique [MQTT-2.2.1-3]; a QoS 2 message
//! received is routed once, however often its PUBLISH is retransmitted, until its PUBREL
//! [MQTT-4.3.3-10]; unacknowledged messages are resent first, with DUP, in their original
//! order [MQTT-4.4.0-1]; a message delivered while others wait is queued behind them, so
//! a session receives its messages in the order they were delivered to it [MQTT-4.6.0-6].

mod inbound;
mod message;
mod queue;
mod restore;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;
mod window;

use std::collections::VecDeque;
use std::time::Instant;

use bytestring::ByteString;

pub use super::subscriptions::{Subscription, Subscriptions};
use crate::hash::FastMap;
use crate::protocol::{Packet, PacketId, QoS};
pub use message::{ack, copy_topic_and_payload, publish_of, Message, Messages, Origin, Seq};
pub use queue::{Overflow, QueueLimits, Queued};
pub use window::{InFlight, Outbound};

/// A change to what the session holds, reported so the broker can log it and count
/// references: every reference a session takes ends in exactly one `Done`, `Dropped` or
/// `Expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A queued message was sent with this packet id (and is in flight unless QoS 0).
    Sent {
        seq: Seq,
        packet_id: Option<PacketId>,
    },
    /// QoS 2: PUBREC received, PUBREL sent.
    Received { seq: Seq },
    /// The delivery ended: acknowledged, sent at QoS 0, or gone from the table unsent.
    Done { seq: Seq },
    /// The message was dropped by the overflow policy.
    Dropped { seq: Seq },
    /// The message's expiry interval passed while it was queued: it ends unsent (counted
    /// apart from `Done` so that operators see expiries as drops).
    Expired { seq: Seq },
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

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    pub subscriptions: Subscriptions,
    /// The client's Receive Maximum for the current (or last) connection.
    receive_maximum: u16,
    /// Where the search for a free packet id starts: after the newest one in flight.
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
    /// In the order sent, which is the order a resume resends them in [MQTT-4.4.0-1].
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

    #[inline]
    fn held(&self) -> &Held {
        self.held.as_deref().unwrap_or(&NOTHING_HELD)
    }

    #[inline]
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

    /// Every message this session holds a reference to.
    pub fn references(&self) -> impl Iterator<Item = Seq> + '_ {
        self.held()
            .in_flight
            .iter()
            .map(|f| f.entry.seq())
            .chain(self.held().queue.iter().map(|q| q.seq()))
    }

    /// The Subscription Identifiers a held message carries to this session.
    #[inline]
    pub fn ids_of(&self, seq: Seq) -> &[u32] {
        self.held()
            .ids
            .as_ref()
            .and_then(|m| m.get(&seq))
            .map_or(&[], |ids| ids)
    }

    /// Keeps `ids` (if any) for a message the session now holds.
    #[inline]
    fn keep_ids(&mut self, seq: Seq, ids: Vec<u32>) {
        if !ids.is_empty() {
            self.held_mut()
                .ids
                .get_or_insert_with(Default::default)
                .insert(seq, ids.into_boxed_slice());
        }
    }

    #[inline]
    fn forget_ids(&mut self, seq: Seq) {
        let Some(held) = self.held.as_deref_mut() else {
            return;
        };
        if let Some(ids) = &mut held.ids {
            ids.remove(&seq);
            if ids.is_empty() {
                held.ids = None;
            }
        }
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
        if message.expired(now) {
            return Delivery::Skipped { refused: false };
        }
        if entry.qos() == QoS::AtMostOnce && online {
            let packet = publish_of(message, entry, None, ids, now);
            return Delivery::Sent(Packet::Publish(packet));
        }
        if entry.qos() == QoS::AtMostOnce && !limits.queue_qos0 {
            return Delivery::Skipped { refused: false };
        }
        // Only past an empty queue: what waits is older and goes first [MQTT-4.6.0-6].
        if online && self.window_has_room() && self.held().queue.is_empty() {
            if !ids.is_empty() {
                self.keep_ids(entry.seq(), ids.clone());
            }
            let publish = self.put_in_flight(entry, message, ids, now, changes);
            return Delivery::InFlight(Packet::Publish(publish));
        }
        self.enqueue(entry, message.payload.len(), ids, limits, messages, changes)
    }
}
