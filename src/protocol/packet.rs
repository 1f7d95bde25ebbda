//! The control packets of MQTT 3.1, 3.1.1 and 5.0 as plain data.
//!
//! One struct per packet, shared by every protocol version: fields that a version lacks
//! (properties, reason codes before 5.0) are simply left at their defaults when that
//! version is encoded, and are defaulted when it is decoded. Strings are `ByteString`
//! and binary data `Bytes`, so a decoded packet points into the receive buffer instead
//! of copying it.

use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::{Properties, ReasonCode};

/// The protocol level of a CONNECT: 3 (MQTT 3.1, "MQIsdp"), 4 (3.1.1) or 5 (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V3_1,
    V3_1_1,
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier; zero is not a valid one [MQTT-2.3.1-1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(pub NonZeroU16);

impl PacketId {
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// May be empty: the server then assigns one (5.0) or refuses (3.1.1 with Clean Session 0).
    pub client_id: ByteString,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// The 5.0 reason code. For 3.1/3.1.1 it is encoded as the matching return code
    /// (Success 0, UnsupportedProtocolVersion 1, ClientIdentifierNotValid 2,
    /// ServerUnavailable 3, BadUserNameOrPassword 4, NotAuthorized 5); codes without a 3.1.1
    /// equivalent map to 3 (server unavailable) for server-side failures and 5 otherwise.
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in 5.0 when a Topic Alias property stands for it.
    pub topic: ByteString,
    /// `Some` exactly when `qos` is above 0.
    pub packet_id: Option<PacketId>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    /// Always Success before 5.0. In 5.0 a Success code with no properties is encoded in the
    /// short form (remaining length 2).
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

pub type PubAck = Ack;
pub type PubRec = Ack;
pub type PubRel = Ack;
pub type PubComp = Ack;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not already exist.
    OnNewSubscribe = 1,
    /// Never send them.
    Never = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// 5.0 only, like the two below.
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// At least one [MQTT-3.8.3-3].
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    /// A SUBSCRIBE of one filter at `qos`, with default options and no properties.
    pub fn one(packet_id: PacketId, filter: impl Into<ByteString>, qos: QoS) -> Subscribe {
        Subscribe {
            packet_id,
            properties: Properties::default(),
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// GrantedQoS0/1/2 or a failure code; 3.1.1 knows 0x00, 0x01, 0x02 and 0x80 only
    /// (every 5.0 failure code is encoded as 0x80 there).
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// At least one [MQTT-3.10.3-2].
    pub filters: Vec<ByteString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// 5.0 only: one per filter. Empty for 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// NormalDisconnection before 5.0.
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

/// AUTH exists in 5.0 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: Properties,
}
