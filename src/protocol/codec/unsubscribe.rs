//! UNSUBSCRIBE and UNSUBACK (sections 3.10 and 3.11).
//!
//! UNSUBSCRIBE: Packet Identifier, properties (5.0), then at least one topic filter.
//! UNSUBACK: Packet Identifier, and in 5.0 properties and one reason code per filter; a
//! 3.1.1 UNSUBACK is the identifier alone.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_reason_code, packet_id, reason_code};
use crate::protocol::property_codec::{self as props, Context};
use crate::protocol::wire::{check_str, field_len, put_field, Reader};
use crate::protocol::{
    DecodeError, EncodeError, Properties, ProtocolVersion, UnsubAck, Unsubscribe,
};

/// Table 3-9 of 5.0.
pub(crate) const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const BAD_UNSUBACK: &str = "[MQTT-3.11.3] UNSUBACK reason code not in table 3-9";

pub(crate) fn decode_unsubscribe(
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(r.u16()?)?;
    let properties = if version.is_v5() {
        props::decode(&mut r, Context::Unsubscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if filter.is_empty() {
            return Err(DecodeError::TopicFilterInvalid(
                "[MQTT-4.7.3-1] empty Topic Filter",
            ));
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.10.3-2] UNSUBSCRIBE without a Topic Filter",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(crate) fn check_unsubscribe(
    u: &Unsubscribe,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        props::check(&u.properties, Context::Unsubscribe)?;
    }
    if u.filters.is_empty() {
        return Err(
            DecodeError::Protocol("[MQTT-3.10.3-2] UNSUBSCRIBE without a Topic Filter").into(),
        );
    }
    for filter in &u.filters {
        check_str(filter)?;
        if filter.is_empty() {
            return Err(
                DecodeError::TopicFilterInvalid("[MQTT-4.7.3-1] empty Topic Filter").into(),
            );
        }
    }
    Ok(())
}

pub(crate) fn unsubscribe_len(u: &Unsubscribe, version: ProtocolVersion) -> usize {
    let properties = if version.is_v5() {
        props::encoded_len(&u.properties)
    } else {
        0
    };
    2 + properties
        + u.filters
            .iter()
            .map(|f| field_len(f.as_bytes()))
            .sum::<usize>()
}

pub(crate) fn write_unsubscribe(u: &Unsubscribe, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u16(u.packet_id.get());
    if version.is_v5() {
        props::write(&u.properties, buf);
    }
    for filter in &u.filters {
        put_field(buf, filter.as_bytes());
    }
}

pub(crate) fn decode_unsuback(
    body: Bytes,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(r.u16()?)?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = props::decode(&mut r, Context::UnsubAck)?;
    let reason_codes = r
        .rest()
        .iter()
        .map(|&code| reason_code(code, UNSUBACK, BAD_UNSUBACK))
        .collect::<Result<Vec<_>, _>>()?;
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.11.3-1] UNSUBACK without a reason code",
        ));
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

pub(crate) fn check_unsuback(u: &UnsubAck, version: ProtocolVersion) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Ok(());
    }
    if u.reason_codes.is_empty() {
        return Err(DecodeError::Protocol("[MQTT-3.11.3-1] UNSUBACK without a reason code").into());
    }
    for &code in &u.reason_codes {
        check_reason_code(code, UNSUBACK, BAD_UNSUBACK)?;
    }
    props::check(&u.properties, Context::UnsubAck)
}

pub(crate) fn unsuback_len(u: &UnsubAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + props::encoded_len(&u.properties) + u.reason_codes.len()
    } else {
        2
    }
}

pub(crate) fn write_unsuback(u: &UnsubAck, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u16(u.packet_id.get());
    if version.is_v5() {
        props::write(&u.properties, buf);
        for &code in &u.reason_codes {
            buf.put_u8(code.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::testing::*;
    use crate::protocol::{Packet, PacketId, ReasonCode};
    use ProtocolVersion::*;

    fn unsubscribe(filters: &[&str]) -> Unsubscribe {
        Unsubscribe {
            packet_id: PacketId::new(2).unwrap(),
            properties: Properties::default(),
            filters: filters.iter().map(|&f| f.into()).collect(),
        }
    }

    #[test]
    fn unsubscribe_both_versions() {
        let u = unsubscribe(&["a", "b/#"]);
        let v3 = [
            0xA2, 0x0A, 0x00, 0x02, 0x00, 0x01, b'a', 0x00, 0x03, b'b', b'/', b'#',
        ];
        both_ways(&v3, Packet::Unsubscribe(u.clone()), V3_1_1);
        let mut u = u;
        u.properties.user_properties.push(("k".into(), "v".into()));
        let v5 = [
            0xA2, 0x12, 0x00, 0x02, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x00, 0x01,
            b'a', 0x00, 0x03, b'b', b'/', b'#',
        ];
        both_ways(&v5, Packet::Unsubscribe(u), V5);
    }

    #[test]
    fn unsuback_both_versions() {
        let id = PacketId::new(2).unwrap();
        let v3 = UnsubAck {
            packet_id: id,
            properties: Properties::default(),
            reason_codes: vec![],
        };
        both_ways(&[0xB0, 0x02, 0x00, 0x02], Packet::UnsubAck(v3), V3_1_1);
        let v5 = UnsubAck {
            packet_id: id,
            properties: Properties::default(),
            reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        };
        both_ways(
            &[0xB0, 0x05, 0x00, 0x02, 0x00, 0x00, 0x11],
            Packet::UnsubAck(v5.clone()),
            V5,
        );
        // The codes are not sent before 5.0.
        assert_eq!(
            encode_one(&Packet::UnsubAck(v5), V3_1_1),
            [0xB0, 0x02, 0x00, 0x02]
        );
    }

    #[test]
    fn malformed() {
        // Reserved flags must be 0b0010.
        rejects_with(&[0xA0, 0x05, 0x00, 0x02, 0x00, 0x01, b'a'], V3_1_1, 0x81);
        // No filter at all; an empty filter; Packet Identifier 0.
        rejects_with(&[0xA2, 0x02, 0x00, 0x02], V3_1_1, 0x82);
        rejects_with(&[0xA2, 0x03, 0x00, 0x02, 0x00], V5, 0x82);
        rejects_with(&[0xA2, 0x04, 0x00, 0x02, 0x00, 0x00], V3_1_1, 0x8F);
        rejects_with(&[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'], V3_1_1, 0x82);
        // A filter cut short.
        rejects_with(&[0xA2, 0x05, 0x00, 0x02, 0x00, 0x02, b'a'], V3_1_1, 0x81);
        // UNSUBACK: extra bytes before 5.0, a missing or unknown reason code in 5.0.
        rejects_with(&[0xB0, 0x03, 0x00, 0x02, 0x00], V3_1_1, 0x81);
        rejects_with(&[0xB0, 0x03, 0x00, 0x02, 0x00], V5, 0x82);
        rejects_with(&[0xB0, 0x04, 0x00, 0x02, 0x00, 0x02], V5, 0x81);
        // Reason String is not allowed in UNSUBSCRIBE.
        rejects_with(
            &[
                0xA2, 0x0A, 0x00, 0x02, 0x04, 0x1F, 0x00, 0x01, b'x', 0x00, 0x01, b'a',
            ],
            V5,
            0x81,
        );
    }

    #[test]
    fn refused_on_encode() {
        assert!(matches!(
            refuses(&Packet::Unsubscribe(unsubscribe(&[])), V5),
            EncodeError::Invalid(_)
        ));
        assert!(matches!(
            refuses(&Packet::Unsubscribe(unsubscribe(&[""])), V3_1_1),
            EncodeError::Invalid(_)
        ));
        let empty = UnsubAck {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::default(),
            reason_codes: vec![],
        };
        assert!(matches!(
            refuses(&Packet::UnsubAck(empty), V5),
            EncodeError::Invalid(_)
        ));
    }
}
