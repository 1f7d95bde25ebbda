//! PINGREQ, PINGRESP, DISCONNECT and AUTH (sections 3.12 to 3.15): the packets whose body
//! is empty or at most a reason code and properties.
//!
//! In 5.0 a DISCONNECT or AUTH may stop after its reason code (no properties), or have no
//! body at all (Success / Normal Disconnection and no properties). The decoder takes every
//! form; the encoder writes no body for Success without properties and otherwise the
//! reason code *and* a Property Length, even an empty one (`E0 02 rc 00`): some clients
//! (rumqttc 0.24) cannot parse the legal 1-byte form. A 3.1.1 DISCONNECT is always empty,
//! and AUTH does not exist before 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_reason_code, reason_code};
use crate::protocol::property_codec::{self as props, Context};
use crate::protocol::wire::Reader;
use crate::protocol::{
    Auth, DecodeError, Disconnect, EncodeError, Properties, ProtocolVersion, ReasonCode,
};

/// Table 3-10 of 5.0.
pub(crate) const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const BAD_DISCONNECT: &str = "[MQTT-3.14.2.1] DISCONNECT reason code not in table 3-10";
/// Table 3-11 of 5.0.
pub(crate) const AUTH: &[u8] = &[0x00, 0x18, 0x19];
const BAD_AUTH: &str = "[MQTT-3.15.2.1] AUTH reason code not in table 3-11";

/// PINGREQ and PINGRESP have no body.
pub(crate) fn decode_ping(body: Bytes) -> Result<(), DecodeError> {
    Reader::new(body).finish()
}

/// The body shared by DISCONNECT and AUTH: an optional reason code, then optional properties.
fn decode_reason_and_properties(
    body: Bytes,
    allowed: &[u8],
    rule: &'static str,
    context: Context,
) -> Result<(ReasonCode, Properties), DecodeError> {
    let mut r = Reader::new(body);
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = Properties::default();
    if !r.is_empty() {
        reason = reason_code(r.u8()?, allowed, rule)?;
        if !r.is_empty() {
            properties = props::decode(&mut r, context)?;
        }
    }
    r.finish()?;
    Ok((reason, properties))
}

pub(crate) fn decode_disconnect(
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        Reader::new(body).finish()?;
        return Ok(Disconnect::default());
    }
    let (reason_code, properties) =
        decode_reason_and_properties(body, DISCONNECT, BAD_DISCONNECT, Context::Disconnect)?;
    Ok(Disconnect {
        reason_code,
        properties,
    })
}

pub(crate) fn decode_auth(body: Bytes, version: ProtocolVersion) -> Result<Auth, DecodeError> {
    if !version.is_v5() {
        // The fixed header check refuses packet type 15 before 5.0; this is a second lock.
        return Err(DecodeError::Malformed("[MQTT-2.2.1] AUTH before MQTT 5.0"));
    }
    let (reason_code, properties) =
        decode_reason_and_properties(body, AUTH, BAD_AUTH, Context::Auth)?;
    Ok(Auth {
        reason_code,
        properties,
    })
}

pub(crate) fn check_disconnect(
    d: &Disconnect,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        check_reason_code(d.reason_code, DISCONNECT, BAD_DISCONNECT)?;
        props::check(&d.properties, Context::Disconnect)?;
    }
    Ok(())
}

pub(crate) fn check_auth(a: &Auth, version: ProtocolVersion) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::NotInVersion("AUTH"));
    }
    check_reason_code(a.reason_code, AUTH, BAD_AUTH)?;
    props::check(&a.properties, Context::Auth)
}

pub(crate) fn reason_and_properties_len(
    reason: ReasonCode,
    p: &Properties,
    version: ProtocolVersion,
) -> usize {
    if !version.is_v5() {
        return 0;
    }
    match props::content_len(p) {
        0 if reason == ReasonCode::SUCCESS => 0,
        _ => 1 + props::encoded_len(p),
    }
}

pub(crate) fn write_reason_and_properties(
    reason: ReasonCode,
    p: &Properties,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    match reason_and_properties_len(reason, p, version) {
        0 => {}
        _ => {
            buf.put_u8(reason.0);
            props::write(p, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::testing::*;
    use crate::protocol::Packet;
    use ProtocolVersion::*;

    #[test]
    fn pings() {
        for version in [V3_1, V3_1_1, V5] {
            both_ways(&[0xC0, 0x00], Packet::PingReq, version);
            both_ways(&[0xD0, 0x00], Packet::PingResp, version);
            rejects_with(&[0xC0, 0x01, 0x00], version, 0x81);
            rejects_with(&[0xD1, 0x00], version, 0x81);
        }
    }

    #[test]
    fn disconnect_forms() {
        both_ways(
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
            V3_1_1,
        );
        both_ways(&[0xE0, 0x00], Packet::Disconnect(Disconnect::default()), V5);
        let with_will = Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties::default(),
        };
        both_ways(
            &[0xE0, 0x02, 0x04, 0x00],
            Packet::Disconnect(with_will.clone()),
            V5,
        );
        // The short form without a Property Length decodes the same.
        assert_eq!(
            decode_one(&[0xE0, 0x01, 0x04], V5),
            Ok(Packet::Disconnect(with_will.clone()))
        );
        // Only Normal Disconnection exists before 5.0.
        assert_eq!(
            encode_one(&Packet::Disconnect(with_will), V3_1_1),
            [0xE0, 0x00]
        );
        let mut d = Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default(),
        };
        d.properties.session_expiry_interval = Some(0);
        both_ways(
            &[0xE0, 0x07, 0x8E, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
            Packet::Disconnect(d),
            V5,
        );
        // An explicit Success with an empty property list decodes like the short form.
        assert_eq!(
            decode_one(&[0xE0, 0x02, 0x00, 0x00], V5),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn auth_forms() {
        both_ways(&[0xF0, 0x00], Packet::Auth(Auth::default()), V5);
        let mut a = Auth {
            reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties::default(),
        };
        a.properties.authentication_method = Some("m".into());
        a.properties.authentication_data = Some(Bytes::from_static(b"d"));
        both_ways(
            &[
                0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x01, b'm', 0x16, 0x00, 0x01, b'd',
            ],
            Packet::Auth(a.clone()),
            V5,
        );
        assert_eq!(
            refuses(&Packet::Auth(a), V3_1_1),
            EncodeError::NotInVersion("AUTH")
        );
    }

    #[test]
    fn malformed() {
        // A 3.1.1 DISCONNECT has no body; packet type 15 does not exist before 5.0.
        rejects_with(&[0xE0, 0x01, 0x00], V3_1_1, 0x81);
        rejects_with(&[0xF0, 0x00], V3_1_1, 0x81);
        // Reserved flags.
        rejects_with(&[0xE2, 0x00], V5, 0x81);
        rejects_with(&[0xF1, 0x00], V5, 0x81);
        // Reason codes outside their tables.
        rejects_with(&[0xE0, 0x01, 0x01], V5, 0x81);
        rejects_with(&[0xE0, 0x01, 0x84], V5, 0x81);
        rejects_with(&[0xF0, 0x01, 0x04], V5, 0x81);
        // Authentication Data without an Authentication Method; a duplicate Reason String.
        rejects_with(&[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, b'd'], V5, 0x82);
        rejects_with(
            &[
                0xE0, 0x0A, 0x80, 0x08, 0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b',
            ],
            V5,
            0x82,
        );
        // Properties DISCONNECT does not allow; an unknown property identifier.
        rejects_with(&[0xE0, 0x05, 0x80, 0x03, 0x21, 0x00, 0x01], V5, 0x81);
        rejects_with(&[0xE0, 0x04, 0x80, 0x02, 0x7F, 0x00], V5, 0x81);
        rejects_with(&[0xE0, 0x04, 0x80, 0x02, 0x81, 0x01], V5, 0x81);
    }

    #[test]
    fn refused_on_encode() {
        let bad = Disconnect {
            reason_code: ReasonCode::GRANTED_QOS_1,
            properties: Properties::default(),
        };
        assert!(matches!(
            refuses(&Packet::Disconnect(bad), V5),
            EncodeError::Invalid(_)
        ));
        let mut d = Disconnect::default();
        d.properties.assigned_client_identifier = Some("x".into());
        assert!(matches!(
            refuses(&Packet::Disconnect(d), V5),
            EncodeError::Invalid(DecodeError::PropertyNotAllowed { .. })
        ));
    }
}
