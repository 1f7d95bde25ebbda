//! PUBLISH (section 3.3).
//!
//! The fixed header carries DUP, QoS and RETAIN (checked as soon as the first byte is read,
//! see `frame`). The body is the Topic Name, a Packet Identifier when QoS > 0, properties
//! (5.0), then the payload: whatever is left, handed out as a slice of the receive buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::packet_id;
use crate::protocol::property_codec::{self as props, has_wildcard, Context};
use crate::protocol::wire::{check_str, field_len, put_field, Reader};
use crate::protocol::{DecodeError, EncodeError, Properties, ProtocolVersion, Publish, QoS};

const RETAIN: u8 = 0b0001;
const DUP: u8 = 0b1000;

pub(crate) fn decode(
    flags: u8,
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11)
        .ok_or(DecodeError::Malformed("[MQTT-3.3.1-4] PUBLISH with QoS 3"))?;
    let mut r = Reader::new(body);
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r.u16()?)?)
    };
    let properties = if version.is_v5() {
        props::decode(&mut r, Context::Publish)?
    } else {
        Properties::default()
    };
    let publish = Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    };
    check_topic(&publish, version)?;
    Ok(publish)
}

/// The fixed header flags of `p`.
pub(crate) fn flags(p: &Publish) -> u8 {
    let mut flags = (p.qos as u8) << 1;
    if p.dup {
        flags |= DUP;
    }
    if p.retain {
        flags |= RETAIN;
    }
    flags
}

/// A Topic Name has no wildcards [MQTT-3.3.2-2] and is empty only when a 5.0 Topic Alias
/// stands for it.
fn check_topic(p: &Publish, version: ProtocolVersion) -> Result<(), DecodeError> {
    if p.topic.is_empty() {
        if !version.is_v5() {
            return Err(DecodeError::TopicNameInvalid(
                "[MQTT-4.7.3-1] empty Topic Name",
            ));
        }
        if p.properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "[MQTT-3.3.2.3.4] empty Topic Name without a Topic Alias",
            ));
        }
    }
    if has_wildcard(&p.topic) {
        return Err(DecodeError::TopicNameInvalid(
            "[MQTT-3.3.2-2] Topic Name contains a wildcard",
        ));
    }
    Ok(())
}

pub(crate) fn check(p: &Publish, version: ProtocolVersion) -> Result<(), EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::OutOfRange(
                "Packet Identifier on a QoS 0 PUBLISH",
            ))
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::OutOfRange(
                "QoS 1 or 2 PUBLISH without a Packet Identifier",
            ))
        }
        _ => {}
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(
            DecodeError::Malformed("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH").into(),
        );
    }
    check_str(&p.topic)?;
    if version.is_v5() {
        props::check(&p.properties, Context::Publish)?;
    }
    // A 3.1.1 Topic Name cannot lean on a Topic Alias: its properties are not sent.
    check_topic(p, version)?;
    Ok(())
}

pub(crate) fn body_len(p: &Publish, version: ProtocolVersion) -> usize {
    let id = if p.packet_id.is_some() { 2 } else { 0 };
    let properties = if version.is_v5() {
        props::encoded_len(&p.properties)
    } else {
        0
    };
    field_len(p.topic.as_bytes()) + id + properties + p.payload.len()
}

pub(crate) fn write(p: &Publish, version: ProtocolVersion, buf: &mut BytesMut) {
    put_field(buf, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    if version.is_v5() {
        props::write(&p.properties, buf);
    }
    buf.put_slice(&p.payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::testing::*;
    use crate::protocol::{Packet, PacketId};
    use ProtocolVersion::*;

    fn publish(qos: QoS, topic: &str, id: u16, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: PacketId::new(id),
            properties: Properties::default(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn qos0_and_qos1_in_both_versions() {
        let p = publish(QoS::AtMostOnce, "a/b", 0, b"hi");
        both_ways(
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
            Packet::Publish(p.clone()),
            V3_1_1,
        );
        both_ways(
            &[0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'],
            Packet::Publish(p),
            V5,
        );
        let mut p = publish(QoS::AtLeastOnce, "a/b", 10, b"");
        p.retain = true;
        p.dup = true;
        both_ways(
            &[0x3B, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A],
            Packet::Publish(p.clone()),
            V3_1,
        );
        both_ways(
            &[0x3B, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00],
            Packet::Publish(p),
            V5,
        );
    }

    #[test]
    fn v5_properties_and_topic_alias() {
        let mut p = publish(QoS::ExactlyOnce, "", 1, b"x");
        p.properties.topic_alias = Some(5);
        p.properties.subscription_identifiers = vec![1, 300];
        p.properties.payload_format_indicator = Some(1);
        let bytes = [
            0x34, 0x10, 0x00, 0x00, 0x00, 0x01, 0x0A, 0x01, 0x01, 0x0B, 0x01, 0x0B, 0xAC, 0x02,
            0x23, 0x00, 0x05, b'x',
        ];
        both_ways(&bytes, Packet::Publish(p.clone()), V5);
        // Properties are dropped before 5.0, so the alias cannot stand in for the topic there.
        assert!(matches!(
            refuses(&Packet::Publish(p), V3_1_1),
            EncodeError::Invalid(DecodeError::TopicNameInvalid(_))
        ));
    }

    #[test]
    fn payload_is_not_copied() {
        let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'][..]);
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = crate::protocol::decode(&mut buf, V3_1_1, 100).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.payload.as_ptr() as usize, start + 7);
        assert_eq!(p.topic.as_ptr() as usize, start + 4);
    }

    #[test]
    fn malformed() {
        // QoS 3 and DUP on QoS 0, rejected from the first byte alone.
        rejects_with(&[0x36], V5, 0x81);
        rejects_with(&[0x38], V3_1_1, 0x81);
        // Wildcards in the topic name [MQTT-3.3.2-2].
        rejects(
            &[0x30, 0x04, 0x00, 0x02, b'a', b'+'],
            V3_1_1,
            DecodeError::TopicNameInvalid("[MQTT-3.3.2-2] Topic Name contains a wildcard"),
        );
        rejects_with(&[0x30, 0x05, 0x00, 0x02, b'#', b'a', 0x00], V5, 0x90);
        // Empty topic: 3.1.1 always, 5.0 without a Topic Alias.
        rejects_with(&[0x30, 0x02, 0x00, 0x00], V3_1_1, 0x90);
        rejects_with(&[0x30, 0x03, 0x00, 0x00, 0x00], V5, 0x82);
        // Invalid UTF-8 and U+0000 in the topic.
        rejects_with(&[0x30, 0x03, 0x00, 0x01, 0xFF], V3_1_1, 0x81);
        rejects_with(&[0x30, 0x03, 0x00, 0x01, 0x00], V3_1_1, 0x81);
        // Packet Identifier 0, and a missing one.
        rejects_with(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], V3_1_1, 0x82);
        rejects_with(&[0x32, 0x04, 0x00, 0x01, b'a', 0x00], V3_1_1, 0x81);
        // Topic Alias 0, a duplicate Topic Alias, a property PUBLISH does not allow.
        rejects_with(
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00],
            V5,
            0x94,
        );
        rejects_with(
            &[
                0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x01,
            ],
            V5,
            0x82,
        );
        rejects_with(
            &[
                0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01,
            ],
            V5,
            0x81,
        );
        // Subscription Identifier 0; Payload Format Indicator 2.
        rejects_with(&[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0B, 0x00], V5, 0x82);
        rejects_with(&[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02], V5, 0x82);
        // Property length longer than the packet.
        rejects_with(&[0x30, 0x06, 0x00, 0x01, b'a', 0x05, 0x01, 0x01], V5, 0x81);
        // A Response Topic with a wildcard.
        rejects_with(
            &[
                0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x08, 0x00, 0x02, b'a', b'#',
            ],
            V5,
            0x90,
        );
        // Non-minimal Remaining Length: fine in 3.1.1, malformed in 5.0.
        let long = [0x30, 0x83, 0x00, 0x00, 0x01, b'a'];
        assert!(decode_one(&long, V3_1_1).is_ok());
        rejects_with(&[0x30, 0x84, 0x00, 0x00, 0x01, b'a', 0x00], V5, 0x81);
    }

    #[test]
    fn refused_on_encode() {
        let mut p = publish(QoS::AtMostOnce, "a", 1, b"");
        assert!(matches!(
            refuses(&Packet::Publish(p.clone()), V5),
            EncodeError::OutOfRange(_)
        ));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = None;
        assert!(matches!(
            refuses(&Packet::Publish(p.clone()), V5),
            EncodeError::OutOfRange(_)
        ));
        let mut p = publish(QoS::AtMostOnce, "a/+", 0, b"");
        assert!(matches!(
            refuses(&Packet::Publish(p.clone()), V5),
            EncodeError::Invalid(_)
        ));
        p.topic = "a".repeat(70_000).into();
        assert!(matches!(
            refuses(&Packet::Publish(p.clone()), V3_1_1),
            EncodeError::OutOfRange(_)
        ));
        p.topic = "a".into();
        p.dup = true;
        assert!(matches!(
            refuses(&Packet::Publish(p), V3_1_1),
            EncodeError::Invalid(_)
        ));
    }

    #[test]
    fn remaining_length_above_the_maximum_is_refused() {
        let mut p = publish(QoS::AtMostOnce, "a", 0, b"");
        p.payload = Bytes::from(vec![0u8; 268_435_455]);
        assert!(matches!(
            refuses(&Packet::Publish(p), V3_1_1),
            EncodeError::PacketTooLarge { .. }
        ));
    }
}
