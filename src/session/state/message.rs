//! A message as the sessions of a core hold it, and the packets a session sends for it.
//!
//! A [`Message`] lives once in its core's message table ([`Messages`]), however many
//! sessions it waits for; a session holds only its [`Seq`]. Guarantees: [`publish_of`]
//! passes on the time left of a Message Expiry Interval, never the original one
//! [MQTT-3.3.2-6], and carries exactly the Subscription Identifiers it is given (none of
//! the publisher's).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use super::Queued;
use crate::protocol::{Ack, PacketId, Properties, Publish, QoS, ReasonCode};

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

    /// Whether its Message Expiry Interval has run out at `now`.
    #[inline]
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
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

/// Where the session's messages live: the core's message table.
pub trait Messages {
    /// The message, if it still exists (read back from the log when not in memory).
    fn get(&self, seq: Seq) -> Option<Arc<Message>>;
    /// Its payload size, for the queued-bytes limit.
    fn size(&self, seq: Seq) -> usize;
}

/// An acknowledgement without properties (PUBACK, PUBREC, PUBREL, PUBCOMP).
pub fn ack(packet_id: PacketId, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason_code,
        properties: Properties::default(),
    }
}

/// The PUBLISH a subscriber receives for `message` delivered as `entry`.
#[inline]
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
