//! Packet bodies: one module per packet type (or per family of packets that share a shape),
//! each with its decoder, its encoder and their table tests side by side.
//!
//! Every encoder is three functions, so that `encode` can fail before it writes anything:
//! `check` (can this packet be written, and would its receiver accept it?), `body_len` (the
//! Remaining Length, computed without any check) and `write` (infallible, run only after
//! `check`). This module dispatches on the packet type and holds what the bodies share.

pub(crate) mod ack;
pub(crate) mod connack;
pub(crate) mod connect;
pub(crate) mod control;
pub(crate) mod publish;
pub(crate) mod subscribe;
pub(crate) mod unsubscribe;

use bytes::BytesMut;

use super::frame::{self, Frame};
use super::{DecodeError, EncodeError, Packet, PacketId, ProtocolVersion, ReasonCode};
use ack::AckKind;

/// Decodes the body of a packet whose first byte has been checked.
pub(crate) fn decode(frame: Frame, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    // A CONNECT carries its own version and checks its length against that instead.
    if version.is_v5() && !frame.minimal_length && frame.packet_type != frame::CONNECT {
        return Err(DecodeError::Malformed(
            "[MQTT-1.5.5-1] Remaining Length not in its shortest form",
        ));
    }
    let body = frame.body;
    Ok(match frame.packet_type {
        frame::CONNECT => Packet::Connect(Box::new(connect::decode(body, frame.minimal_length)?)),
        frame::CONNACK => Packet::ConnAck(connack::decode(body, version)?),
        frame::PUBLISH => Packet::Publish(publish::decode(frame.flags, body, version)?),
        frame::PUBACK => Packet::PubAck(ack::decode(body, version, AckKind::PubAck)?),
        frame::PUBREC => Packet::PubRec(ack::decode(body, version, AckKind::PubRec)?),
        frame::PUBREL => Packet::PubRel(ack::decode(body, version, AckKind::PubRel)?),
        frame::PUBCOMP => Packet::PubComp(ack::decode(body, version, AckKind::PubComp)?),
        frame::SUBSCRIBE => Packet::Subscribe(subscribe::decode_subscribe(body, version)?),
        frame::SUBACK => Packet::SubAck(subscribe::decode_suback(body, version)?),
        frame::UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe::decode_unsubscribe(body, version)?),
        frame::UNSUBACK => Packet::UnsubAck(unsubscribe::decode_unsuback(body, version)?),
        frame::PINGREQ => control::decode_ping(body).map(|()| Packet::PingReq)?,
        frame::PINGRESP => control::decode_ping(body).map(|()| Packet::PingResp)?,
        frame::DISCONNECT => Packet::Disconnect(control::decode_disconnect(body, version)?),
        frame::AUTH => Packet::Auth(control::decode_auth(body, version)?),
        _ => return Err(DecodeError::Malformed("[MQTT-2.1.2] reserved packet type")),
    })
}

/// The first byte of the fixed header: packet type and flags.
pub(crate) fn first_byte(packet: &Packet) -> u8 {
    let (packet_type, flags) = match packet {
        Packet::Connect(_) => (frame::CONNECT, 0),
        Packet::ConnAck(_) => (frame::CONNACK, 0),
        Packet::Publish(p) => (frame::PUBLISH, publish::flags(p)),
        Packet::PubAck(_) => (frame::PUBACK, 0),
        Packet::PubRec(_) => (frame::PUBREC, 0),
        Packet::PubRel(_) => (frame::PUBREL, 0b0010),
        Packet::PubComp(_) => (frame::PUBCOMP, 0),
        Packet::Subscribe(_) => (frame::SUBSCRIBE, 0b0010),
        Packet::SubAck(_) => (frame::SUBACK, 0),
        Packet::Unsubscribe(_) => (frame::UNSUBSCRIBE, 0b0010),
        Packet::UnsubAck(_) => (frame::UNSUBACK, 0),
        Packet::PingReq => (frame::PINGREQ, 0),
        Packet::PingResp => (frame::PINGRESP, 0),
        Packet::Disconnect(_) => (frame::DISCONNECT, 0),
        Packet::Auth(_) => (frame::AUTH, 0),
    };
    packet_type << 4 | flags
}

pub(crate) fn check(packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => connect::check(c),
        Packet::ConnAck(c) => connack::check(c, version),
        Packet::Publish(p) => publish::check(p, version),
        Packet::PubAck(a) => ack::check(a, version, AckKind::PubAck),
        Packet::PubRec(a) => ack::check(a, version, AckKind::PubRec),
        Packet::PubRel(a) => ack::check(a, version, AckKind::PubRel),
        Packet::PubComp(a) => ack::check(a, version, AckKind::PubComp),
        Packet::Subscribe(s) => subscribe::check_subscribe(s, version),
        Packet::SubAck(s) => subscribe::check_suback(s, version),
        Packet::Unsubscribe(u) => unsubscribe::check_unsubscribe(u, version),
        Packet::UnsubAck(u) => unsubscribe::check_unsuback(u, version),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => control::check_disconnect(d, version),
        Packet::Auth(a) => control::check_auth(a, version),
    }
}

pub(crate) fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(c) => connect::body_len(c),
        Packet::ConnAck(c) => connack::body_len(c, version),
        Packet::Publish(p) => publish::body_len(p, version),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack::body_len(a, version)
        }
        Packet::Subscribe(s) => subscribe::subscribe_len(s, version),
        Packet::SubAck(s) => subscribe::suback_len(s, version),
        Packet::Unsubscribe(u) => unsubscribe::unsubscribe_len(u, version),
        Packet::UnsubAck(u) => unsubscribe::unsuback_len(u, version),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            control::reason_and_properties_len(d.reason_code, &d.properties, version)
        }
        Packet::Auth(a) => {
            control::reason_and_properties_len(a.reason_code, &a.properties, version)
        }
    }
}

/// Writes the body of a packet that passed [`check`].
pub(crate) fn write_body(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => connect::write(c, buf),
        Packet::ConnAck(c) => connack::write(c, version, buf),
        Packet::Publish(p) => publish::write(p, version, buf),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack::write(a, version, buf)
        }
        Packet::Subscribe(s) => subscribe::write_subscribe(s, version, buf),
        Packet::SubAck(s) => subscribe::write_suback(s, version, buf),
        Packet::Unsubscribe(u) => unsubscribe::write_unsubscribe(u, version, buf),
        Packet::UnsubAck(u) => unsubscribe::write_unsuback(u, version, buf),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            control::write_reason_and_properties(d.reason_code, &d.properties, version, buf)
        }
        Packet::Auth(a) => {
            control::write_reason_and_properties(a.reason_code, &a.properties, version, buf)
        }
    }
}

/// A Packet Identifier read from the wire: zero is not one [MQTT-2.2.1-3].
pub(crate) fn packet_id(raw: u16) -> Result<PacketId, DecodeError> {
    PacketId::new(raw).ok_or(DecodeError::Protocol(
        "[MQTT-2.2.1-3] Packet Identifier of 0",
    ))
}

/// A reason code that must be one of those the specification lists for its packet.
pub(crate) fn reason_code(
    byte: u8,
    allowed: &[u8],
    rule: &'static str,
) -> Result<ReasonCode, DecodeError> {
    if allowed.contains(&byte) {
        Ok(ReasonCode(byte))
    } else {
        Err(DecodeError::Malformed(rule))
    }
}

/// Checks a reason code before it is written (see [`reason_code`]).
pub(crate) fn check_reason_code(
    code: ReasonCode,
    allowed: &[u8],
    rule: &'static str,
) -> Result<(), EncodeError> {
    reason_code(code.0, allowed, rule)
        .map(|_| ())
        .map_err(EncodeError::from)
}

/// Test helpers shared by the table tests of every packet module.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::BytesMut;

    use crate::protocol::{decode, encode, encoded_len, DecodeError, Packet, ProtocolVersion};

    /// A whole packet: `first` byte, Remaining Length, `body`.
    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        bytes::BufMut::put_u8(&mut buf, first);
        crate::protocol::wire::put_var_int(&mut buf, body.len());
        buf.extend_from_slice(body);
        buf.to_vec()
    }

    /// Decodes `bytes` as one whole packet; asserts nothing is left over.
    pub fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, version, u32::MAX)?.expect("a whole packet");
        assert!(buf.is_empty(), "bytes left over");
        Ok(packet)
    }

    /// Encodes `packet`, checking that `encoded_len` agrees.
    pub fn encode_one(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(packet, version, &mut buf).expect("encodable");
        assert_eq!(buf.len(), encoded_len(packet, version));
        buf.to_vec()
    }

    /// `bytes` decodes to `packet` and `packet` encodes to `bytes`.
    pub fn both_ways(bytes: &[u8], packet: Packet, version: ProtocolVersion) {
        assert_eq!(
            decode_one(bytes, version).as_ref(),
            Ok(&packet),
            "decoding {bytes:02X?}"
        );
        assert_eq!(encode_one(&packet, version), bytes, "encoding {packet:?}");
    }

    /// Decoding `bytes` fails with `error`.
    pub fn rejects(bytes: &[u8], version: ProtocolVersion, error: DecodeError) {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode(&mut buf, version, u32::MAX),
            Err(error),
            "decoding {bytes:02X?}"
        );
    }

    /// Decoding `bytes` fails with an error answered by `reason` (a reason code byte).
    pub fn rejects_with(bytes: &[u8], version: ProtocolVersion, reason: u8) {
        let mut buf = BytesMut::from(bytes);
        match decode(&mut buf, version, u32::MAX) {
            Err(e) => assert_eq!(e.reason_code().0, reason, "decoding {bytes:02X?} gave {e}"),
            Ok(p) => panic!("decoding {bytes:02X?} gave {p:?}"),
        }
    }

    /// Encoding `packet` fails and leaves the buffer alone.
    pub fn refuses(packet: &Packet, version: ProtocolVersion) -> crate::protocol::EncodeError {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let error = encode(packet, version, &mut buf).expect_err("refused");
        assert_eq!(&buf[..], b"kept");
        error
    }
}
