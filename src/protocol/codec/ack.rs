//! PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4 to 3.7), which share one shape.
//!
//! A Packet Identifier, then in 5.0 a reason code and properties. 5.0 lets both be left
//! out when the reason is Success and there are no properties (Remaining Length 2), and the
//! property length alone when there are no properties (Remaining Length 3); the encoder
//! uses the shortest form that says everything. Before 5.0 the body is exactly the id.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_reason_code, packet_id, reason_code};
use crate::protocol::property_codec::{self as props, Context};
use crate::protocol::wire::Reader;
use crate::protocol::{Ack, DecodeError, EncodeError, Properties, ProtocolVersion, ReasonCode};

/// Tables 3-4 and 3-5 of 5.0.
pub(crate) const PUBACK_PUBREC: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Tables 3-6 and 3-7 of 5.0.
pub(crate) const PUBREL_PUBCOMP: &[u8] = &[0x00, 0x92];

// The variants are the specification's packet names, shared prefix and all.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

impl AckKind {
    /// Tables 3-4 to 3-7 of 5.0, and the rule to cite when a code is not in them.
    fn reason_codes(self) -> (&'static [u8], &'static str) {
        match self {
            AckKind::PubAck => (
                PUBACK_PUBREC,
                "[MQTT-3.4.2.1] PUBACK reason code not in table 3-4",
            ),
            AckKind::PubRec => (
                PUBACK_PUBREC,
                "[MQTT-3.5.2.1] PUBREC reason code not in table 3-5",
            ),
            AckKind::PubRel => (
                PUBREL_PUBCOMP,
                "[MQTT-3.6.2.1] PUBREL reason code not in table 3-6",
            ),
            AckKind::PubComp => (
                PUBREL_PUBCOMP,
                "[MQTT-3.7.2.1] PUBCOMP reason code not in table 3-7",
            ),
        }
    }
}

pub(crate) fn decode(
    body: Bytes,
    version: ProtocolVersion,
    kind: AckKind,
) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(r.u16()?)?;
    let mut ack = Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    if version.is_v5() && !r.is_empty() {
        let (allowed, rule) = kind.reason_codes();
        ack.reason_code = reason_code(r.u8()?, allowed, rule)?;
        if !r.is_empty() {
            ack.properties = props::decode(&mut r, Context::Ack)?;
        }
    }
    r.finish()?;
    Ok(ack)
}

pub(crate) fn check(a: &Ack, version: ProtocolVersion, kind: AckKind) -> Result<(), EncodeError> {
    if version.is_v5() {
        let (allowed, rule) = kind.reason_codes();
        check_reason_code(a.reason_code, allowed, rule)?;
        props::check(&a.properties, Context::Ack)?;
    }
    Ok(())
}

pub(crate) fn body_len(a: &Ack, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 2;
    }
    match props::content_len(&a.properties) {
        0 if a.reason_code == ReasonCode::SUCCESS => 2,
        0 => 3,
        _ => 3 + props::encoded_len(&a.properties),
    }
}

pub(crate) fn write(a: &Ack, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u16(a.packet_id.get());
    match body_len(a, version) {
        2 => {}
        3 => buf.put_u8(a.reason_code.0),
        _ => {
            buf.put_u8(a.reason_code.0);
            props::write(&a.properties, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::testing::*;
    use crate::protocol::{Packet, PacketId};
    use ProtocolVersion::*;

    fn ack(id: u16, reason: u8) -> Ack {
        Ack {
            packet_id: PacketId::new(id).unwrap(),
            reason_code: ReasonCode(reason),
            properties: Properties::default(),
        }
    }

    #[test]
    fn short_and_long_forms() {
        both_ways(
            &[0x40, 0x02, 0x12, 0x34],
            Packet::PubAck(ack(0x1234, 0)),
            V3_1_1,
        );
        both_ways(&[0x50, 0x02, 0x00, 0x01], Packet::PubRec(ack(1, 0)), V5);
        both_ways(&[0x62, 0x02, 0x00, 0x01], Packet::PubRel(ack(1, 0)), V3_1);
        both_ways(
            &[0x70, 0x03, 0x00, 0x01, 0x92],
            Packet::PubComp(ack(1, 0x92)),
            V5,
        );
        both_ways(
            &[0x40, 0x03, 0x00, 0x01, 0x10],
            Packet::PubAck(ack(1, 0x10)),
            V5,
        );
        let mut a = ack(7, 0x87);
        a.properties.reason_string = Some("no".into());
        both_ways(
            &[
                0x50, 0x09, 0x00, 0x07, 0x87, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
            ],
            Packet::PubRec(a.clone()),
            V5,
        );
        // Reason and properties are dropped before 5.0.
        assert_eq!(
            encode_one(&Packet::PubRec(a), V3_1_1),
            [0x50, 0x02, 0x00, 0x07]
        );
        // A Success code given in full, with an empty property list, decodes the same.
        assert_eq!(
            decode_one(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], V5),
            Ok(Packet::PubAck(ack(1, 0)))
        );
    }

    #[test]
    fn malformed() {
        // Reserved flags: PUBREL must be 0b0010, the others 0.
        rejects_with(&[0x60, 0x02, 0x00, 0x01], V3_1_1, 0x81);
        rejects_with(&[0x42, 0x02, 0x00, 0x01], V5, 0x81);
        // Packet Identifier 0, missing, or followed by junk before 5.0.
        rejects_with(&[0x40, 0x02, 0x00, 0x00], V3_1_1, 0x82);
        rejects_with(&[0x40, 0x01, 0x01], V5, 0x81);
        rejects_with(&[0x40, 0x03, 0x00, 0x01, 0x00], V3_1_1, 0x81);
        // A reason code not in the table of that packet.
        rejects_with(&[0x62, 0x03, 0x00, 0x01, 0x10], V5, 0x81);
        rejects_with(&[0x40, 0x03, 0x00, 0x01, 0x92], V5, 0x81);
        // A property an ack does not allow; a property length past the end; trailing bytes.
        rejects_with(&[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x01, 0x01], V5, 0x81);
        rejects_with(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x03, 0x1F], V5, 0x81);
        rejects_with(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], V5, 0x81);
    }

    #[test]
    fn refused_on_encode() {
        assert!(matches!(
            refuses(&Packet::PubRel(ack(1, 0x10)), V5),
            EncodeError::Invalid(_)
        ));
        // Before 5.0 the reason is not sent, so it cannot be wrong.
        assert_eq!(
            encode_one(&Packet::PubRel(ack(1, 0x10)), V3_1_1),
            [0x62, 0x02, 0x00, 0x01]
        );
    }
}
