//! The MQTT 3.1 / 3.1.1 / 5.0 wire codec.
//!
//! Decodes control packets from a `BytesMut` and encodes them into one. It does no I/O,
//! never reads the clock and never panics, whatever the input: every malformed packet is a
//! [`DecodeError`] that names the rule it breaks and maps to the 5.0 reason code to answer
//! with (3.1.1 connections are simply closed). "Not enough bytes yet" is `Ok(None)` and
//! consumes nothing. Payloads, topics and strings of a decoded packet are slices of the
//! receive buffer (`Bytes`/`ByteString`), never copies.

mod packet;
mod properties;
mod reason;

pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;

use bytes::BytesMut;

/// Why a packet could not be decoded. Each variant's message cites the rule it enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    #[error("invalid topic filter: {0}")]
    TopicFilterInvalid(&'static str),
}

impl DecodeError {
    /// The 5.0 reason code a server answers this error with (CONNACK or DISCONNECT).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::TopicFilterInvalid(_) => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("{0} cannot be encoded in this protocol version")]
    NotInVersion(&'static str),
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
}

/// Decodes the first packet of a connection, which must be a CONNECT [MQTT-3.1.0-1]; the
/// protocol version comes from the CONNECT itself.
pub fn decode_connect(buf: &mut BytesMut, max_packet_size: u32) -> Result<Option<Connect>, DecodeError> {
    let _ = (buf, max_packet_size);
    todo!("codec")
}

/// Decodes one packet of a connection whose version is known. A second CONNECT decodes
/// fine here; rejecting it [MQTT-3.1.0-2] is the session's job.
pub fn decode(buf: &mut BytesMut, version: ProtocolVersion, max_packet_size: u32) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec")
}

/// Appends the encoding of `packet` for `version` to `buf`. Properties are dropped for
/// versions before 5.0. Fails, leaving `buf` unchanged, if a value cannot be encoded.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    todo!("codec")
}

/// The size `encode` would produce, fixed header included, for Maximum Packet Size checks.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    todo!("codec")
}
