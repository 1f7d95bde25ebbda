//! CONNACK (section 3.2).
//!
//! Connect Acknowledge Flags (only bit 0, Session Present, may be set [MQTT-3.2.2-1]), then
//! a 5.0 reason code and properties, or a 3.1.1 return code. 3.1.1 return codes map to and
//! from reason codes through `ReasonCode::{to,from}_v3_connack`, so one `ConnAck` serves both.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_reason_code, reason_code};
use crate::protocol::property_codec::{self as props, Context};
use crate::protocol::wire::Reader;
use crate::protocol::{ConnAck, DecodeError, EncodeError, Properties, ProtocolVersion, ReasonCode};

/// Table 3-1 of 5.0.
pub(crate) const REASON_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const BAD_REASON: &str = "[MQTT-3.2.2.2] CONNACK reason code not in table 3-1";
const SESSION_PRESENT: u8 = 0b0000_0001;

pub(crate) fn decode(body: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8()?;
    if flags & !SESSION_PRESENT != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.2.2-1] reserved Connect Acknowledge Flags are set",
        ));
    }
    let code = r.u8()?;
    let (reason_code, properties) = if version.is_v5() {
        (
            reason_code(code, REASON_CODES, BAD_REASON)?,
            props::decode(&mut r, Context::ConnAck)?,
        )
    } else {
        let reason = ReasonCode::from_v3_connack(code).ok_or(DecodeError::Malformed(
            "[MQTT-3.2.2.3] CONNACK return code above 5",
        ))?;
        (reason, Properties::default())
    };
    r.finish()?;
    let connack = ConnAck {
        session_present: flags & SESSION_PRESENT != 0,
        reason_code,
        properties,
    };
    check_session_present(&connack)?;
    Ok(connack)
}

/// A refused connection has no session [MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]).
fn check_session_present(c: &ConnAck) -> Result<(), DecodeError> {
    if c.session_present && c.reason_code != ReasonCode::SUCCESS {
        return Err(DecodeError::Protocol(
            "[MQTT-3.2.2-6] Session Present set on a refused connection",
        ));
    }
    Ok(())
}

pub(crate) fn check(c: &ConnAck, version: ProtocolVersion) -> Result<(), EncodeError> {
    check_session_present(c)?;
    if version.is_v5() {
        check_reason_code(c.reason_code, REASON_CODES, BAD_REASON)?;
        props::check(&c.properties, Context::ConnAck)?;
    }
    Ok(())
}

pub(crate) fn body_len(c: &ConnAck, version: ProtocolVersion) -> usize {
    2 + if version.is_v5() {
        props::encoded_len(&c.properties)
    } else {
        0
    }
}

pub(crate) fn write(c: &ConnAck, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u8(if c.session_present {
        SESSION_PRESENT
    } else {
        0
    });
    if version.is_v5() {
        buf.put_u8(c.reason_code.0);
        props::write(&c.properties, buf);
    } else {
        buf.put_u8(c.reason_code.to_v3_connack());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::testing::*;
    use crate::protocol::Packet;
    use ProtocolVersion::*;

    fn connack(session_present: bool, reason_code: ReasonCode) -> ConnAck {
        ConnAck {
            session_present,
            reason_code,
            properties: Properties::default(),
        }
    }

    #[test]
    fn v3_return_codes() {
        both_ways(
            &[0x20, 0x02, 0x01, 0x00],
            Packet::ConnAck(connack(true, ReasonCode::SUCCESS)),
            V3_1_1,
        );
        both_ways(
            &[0x20, 0x02, 0x00, 0x05],
            Packet::ConnAck(connack(false, ReasonCode::NOT_AUTHORIZED)),
            V3_1,
        );
        both_ways(
            &[0x20, 0x02, 0x00, 0x01],
            Packet::ConnAck(connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)),
            V3_1_1,
        );
        // 5.0-only codes fall back to their nearest 3.1.1 return code.
        assert_eq!(
            encode_one(&Packet::ConnAck(connack(false, ReasonCode::BANNED)), V3_1_1),
            [0x20, 0x02, 0x00, 0x05]
        );
        assert_eq!(
            encode_one(
                &Packet::ConnAck(connack(false, ReasonCode::SERVER_BUSY)),
                V3_1_1
            ),
            [0x20, 0x02, 0x00, 0x03]
        );
        // Properties are dropped before 5.0.
        let mut c = connack(false, ReasonCode::SUCCESS);
        c.properties.receive_maximum = Some(10);
        assert_eq!(
            encode_one(&Packet::ConnAck(c), V3_1_1),
            [0x20, 0x02, 0x00, 0x00]
        );
    }

    #[test]
    fn v5_with_properties() {
        let mut c = connack(false, ReasonCode::SUCCESS);
        c.properties.assigned_client_identifier = Some("id".into());
        c.properties.maximum_qos = Some(1);
        c.properties.topic_alias_maximum = Some(10);
        let bytes = [
            0x20, 0x0D, 0x00, 0x00, 0x0A, 0x12, 0x00, 0x02, b'i', b'd', 0x22, 0x00, 0x0A, 0x24,
            0x01,
        ];
        both_ways(&bytes, Packet::ConnAck(c), V5);
        both_ways(
            &[0x20, 0x03, 0x00, 0x86, 0x00],
            Packet::ConnAck(connack(false, ReasonCode::BAD_USER_NAME_OR_PASSWORD)),
            V5,
        );
    }

    #[test]
    fn malformed() {
        // Reserved flag bits [MQTT-3.2.2-1].
        rejects_with(&[0x20, 0x02, 0x02, 0x00], V3_1_1, 0x81);
        rejects_with(&[0x20, 0x03, 0x80, 0x00, 0x00], V5, 0x81);
        // Return code 6 does not exist; nor does reason code 0x01 in a CONNACK.
        rejects_with(&[0x20, 0x02, 0x00, 0x06], V3_1_1, 0x81);
        rejects_with(&[0x20, 0x03, 0x00, 0x01, 0x00], V5, 0x81);
        // Session Present on a refusal.
        rejects_with(&[0x20, 0x02, 0x01, 0x05], V3_1_1, 0x82);
        rejects_with(&[0x20, 0x03, 0x01, 0x87, 0x00], V5, 0x82);
        // Missing property length, trailing byte, a property CONNACK does not allow, a bad value.
        rejects_with(&[0x20, 0x02, 0x00, 0x00], V5, 0x81);
        rejects_with(&[0x20, 0x04, 0x00, 0x00, 0x00, 0x00], V5, 0x81);
        rejects_with(&[0x20, 0x03, 0x00, 0x00, 0x00], V3_1_1, 0x81);
        rejects_with(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x23, 0x00], V5, 0x81);
        rejects_with(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5, 0x82);
        rejects_with(&[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00], V5, 0x82);
    }

    #[test]
    fn refused_on_encode() {
        assert!(matches!(
            refuses(&Packet::ConnAck(connack(true, ReasonCode::BANNED)), V5),
            EncodeError::Invalid(_)
        ));
        assert!(matches!(
            refuses(
                &Packet::ConnAck(connack(false, ReasonCode::GRANTED_QOS_1)),
                V5
            ),
            EncodeError::Invalid(_)
        ));
        let mut c = connack(false, ReasonCode::SUCCESS);
        c.properties.topic_alias = Some(3);
        assert!(matches!(
            refuses(&Packet::ConnAck(c), V5),
            EncodeError::Invalid(DecodeError::PropertyNotAllowed { .. })
        ));
    }
}
