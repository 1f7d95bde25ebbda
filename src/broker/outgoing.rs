//! What the engine hands a connection's writer: a packet of its own, or a QoS 0 PUBLISH
//! shared by every subscriber of a fan-out.
//!
//! A QoS 0 delivery to a subscription without Subscription Identifiers or Retain As
//! Published is the same packet for every subscriber of the message: no packet id, no
//! per-session state. The engine builds it once per message and core, and each writer
//! copies its encoding (made once per protocol version, on first use) instead of building
//! and encoding a packet per subscriber. Reference counting is `Rc`, not atomic: a shared
//! publish never leaves the core that made it.
//!
//! Invariant: a [`SharedPublish`] is only ever a QoS 0 PUBLISH without packet id, topic
//! alias or Subscription Identifiers, so its bytes are the same for every client of a
//! protocol version; a writer that must change it (a topic alias, a Maximum Packet Size)
//! takes [`SharedPublish::packet`] and fits a copy.

use std::cell::OnceCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::protocol::{self, Packet, ProtocolVersion, Publish, QoS};

/// One entry of a connection's outbox. A packet is boxed so that an entry stays two
/// words: a subscriber that reads slowly can hold thousands of them.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Packet(Box<Packet>),
    Shared(Rc<SharedPublish>),
}

impl Outgoing {
    /// The packet this sends (a copy, for a shared publish).
    pub fn into_packet(self) -> Packet {
        match self {
            Outgoing::Packet(packet) => *packet,
            Outgoing::Shared(shared) => shared.packet.clone(),
        }
    }

    pub fn packet(&self) -> &Packet {
        match self {
            Outgoing::Packet(packet) => packet,
            Outgoing::Shared(shared) => &shared.packet,
        }
    }
}

impl From<Packet> for Outgoing {
    fn from(packet: Packet) -> Outgoing {
        Outgoing::Packet(Box::new(packet))
    }
}

/// Compares the packets sent, whichever way they are held.
impl PartialEq for Outgoing {
    fn eq(&self, other: &Outgoing) -> bool {
        self.packet() == other.packet()
    }
}

/// A QoS 0 PUBLISH sent as-is to many subscribers, with its encodings.
#[derive(Debug)]
pub struct SharedPublish {
    packet: Packet,
    /// The encoding in each protocol version (3.1, 3.1.1, 5.0), made by the first writer
    /// that needs it.
    frames: [OnceCell<Bytes>; 3],
}

impl SharedPublish {
    /// `publish` must be QoS 0 with no packet id, topic alias or Subscription Identifier.
    pub fn new(publish: Publish) -> SharedPublish {
        debug_assert!(publish.qos == QoS::AtMostOnce && publish.packet_id.is_none());
        debug_assert!(publish.properties.topic_alias.is_none());
        debug_assert!(publish.properties.subscription_identifiers.is_empty());
        SharedPublish {
            packet: Packet::Publish(publish),
            frames: Default::default(),
        }
    }

    pub fn packet(&self) -> &Packet {
        &self.packet
    }

    /// The packet's bytes in `version`; `None` if it cannot be encoded in it (which the
    /// caller reports as it would for a packet of its own).
    pub fn frame(&self, version: ProtocolVersion) -> Option<&Bytes> {
        let cell = &self.frames[match version {
            ProtocolVersion::V3_1 => 0,
            ProtocolVersion::V3_1_1 => 1,
            ProtocolVersion::V5 => 2,
        }];
        if cell.get().is_none() {
            let mut buf = BytesMut::new();
            protocol::encode(&self.packet, version, &mut buf).ok()?;
            let _ = cell.set(buf.freeze());
        }
        cell.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;

    fn publish() -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn a_shared_frame_is_the_packets_own_encoding_in_each_version() {
        let shared = SharedPublish::new(publish());
        for version in [
            ProtocolVersion::V3_1,
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
        ] {
            let mut own = BytesMut::new();
            protocol::encode(&Packet::Publish(publish()), version, &mut own).unwrap();
            assert_eq!(shared.frame(version).unwrap()[..], own[..], "{version:?}");
        }
        assert_ne!(
            shared.frame(ProtocolVersion::V3_1_1),
            shared.frame(ProtocolVersion::V5),
            "5.0 carries a properties length"
        );
    }

    #[test]
    fn an_entry_is_two_words() {
        assert_eq!(std::mem::size_of::<Outgoing>(), 16);
    }
}
