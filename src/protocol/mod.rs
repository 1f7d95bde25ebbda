//! The MQTT 3.1 / 3.1.1 / 5.0 wire codec.
//!
//! Decodes control packets from a `BytesMut` and encodes them into one. It does no I/O,
//! never reads the clock and never panics, whatever the input: every malformed packet is a
//! [`DecodeError`] that names the rule it breaks and maps to the 5.0 reason code to answer
//! with (3.1.1 connections are simply closed). "Not enough bytes yet" is `Ok(None)` and
//! consumes nothing. Payloads, topics and strings of a decoded packet are slices of the
//! receive buffer (`Bytes`/`ByteString`), never copies.
//!
//! Layout: `frame` reads the fixed header and cuts whole packets out of the buffer; `wire`
//! holds the data types of section 1.5; `property_codec` the 5.0 property lists and their
//! rules; `codec/` one module per packet type with its decoder, encoder and table tests.
//! `encode` checks a packet completely before it writes a byte, so a refusal leaves `buf`
//! as it was.

#![forbid(unsafe_code)]

mod codec;
mod frame;
mod packet;
mod properties;
mod property_codec;
mod reason;
mod wire;

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod proptests;

pub use packet::*;
pub use properties::{Properties, PropertyValues};
pub use reason::ReasonCode;

use bytes::{BufMut, BytesMut};

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
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
    /// The specification suggests answering this with Unsupported Protocol Version.
    #[error("[MQTT-3.1.2-1] protocol name is neither MQTT nor MQIsdp")]
    BadProtocolName,
    #[error("[MQTT-2.2.2.2] property {property} is not allowed in {packet}")]
    PropertyNotAllowed {
        property: &'static str,
        packet: &'static str,
    },
    #[error("[MQTT-2.2.2.2] property {0} is included more than once")]
    DuplicateProperty(&'static str),
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
            DecodeError::TopicAliasInvalid(_) => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::BadProtocolName => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::PropertyNotAllowed { .. } => ReasonCode::MALFORMED_PACKET,
            DecodeError::DuplicateProperty(_) => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a packet could not be encoded. `buf` is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("{0} cannot be encoded in this protocol version")]
    NotInVersion(&'static str),
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// The packet could be written, but breaks a rule its receiver enforces (the same rule
    /// our own decoder would reject it for).
    #[error("the receiver would reject this packet: {0}")]
    Invalid(DecodeError),
}

impl From<DecodeError> for EncodeError {
    fn from(error: DecodeError) -> EncodeError {
        EncodeError::Invalid(error)
    }
}

/// Decodes the first packet of a connection, which must be a CONNECT [MQTT-3.1.0-1]; the
/// protocol version comes from the CONNECT itself.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != frame::CONNECT {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.0-1] the first packet is not a CONNECT",
        ));
    }
    // Only CONNECT's own flag rule applies here; the version is not known yet.
    frame::check_first_byte(first, ProtocolVersion::V5)?;
    match frame::take_frame(buf, max_packet_size)? {
        Some(frame) => codec::connect::decode(frame.body, frame.minimal_length).map(Some),
        None => Ok(None),
    }
}

/// Decodes one packet of a connection whose version is known. A second CONNECT decodes
/// fine here; rejecting it [MQTT-3.1.0-2] is the session's job.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    frame::check_first_byte(first, version)?;
    match frame::take_frame(buf, max_packet_size)? {
        Some(frame) => codec::decode(frame, version).map(Some),
        None => Ok(None),
    }
}

/// Appends the encoding of `packet` for `version` to `buf`. Properties are dropped for
/// versions before 5.0. A CONNECT is written in the version it names itself (its
/// `protocol` field), whatever `version` says. Fails, leaving `buf` unchanged, if a value
/// cannot be encoded or the packet breaks a rule its receiver would reject it for.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    codec::check(packet, version)?;
    let body = codec::body_len(packet, version);
    if body > wire::MAX_VARIABLE_INT as usize {
        return Err(EncodeError::PacketTooLarge {
            size: 5 + body,
            max: 5 + wire::MAX_VARIABLE_INT,
        });
    }
    buf.reserve(1 + wire::var_int_len(body) + body);
    let start = buf.len();
    buf.put_u8(codec::first_byte(packet));
    wire::put_var_int(buf, body);
    codec::write_body(packet, version, buf);
    debug_assert_eq!(buf.len() - start, encoded_len(packet, version));
    Ok(())
}

/// The size `encode` would produce, fixed header included, for Maximum Packet Size checks.
/// Meaningless for a packet that `encode` refuses.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = codec::body_len(packet, version);
    1 + wire::var_int_len(body) + body
}
