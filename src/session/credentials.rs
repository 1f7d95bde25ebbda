//! The CONNACK that refuses a CONNECT for its credentials (MQTT 5.0 3.2.2.2, 3.1.1
//! 3.2.2.3): Bad User Name or Password (v5 0x86, 3.1.1 return code 4) when a username and
//! password do not check, Not authorized (v5 0x87, 3.1.1 return code 5) when a username
//! is required and none was given. Who is allowed is decided in `auth`; the server sends
//! the refusal and closes [MQTT-3.2.2-5].

use bytestring::ByteString;

use super::connect::Refusal;
use super::link::ClientLimits;
use crate::auth::Verdict;
use crate::protocol::{ConnAck, Connect, Properties, ReasonCode};

/// The refusal for `verdict`, or `None` when it allows the client.
pub fn refuse_credentials(connect: &Connect, verdict: Verdict) -> Option<Refusal> {
    let (reason_code, why) = match verdict {
        Verdict::Allowed => return None,
        Verdict::BadCredentials => (
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "bad user name or password",
        ),
        Verdict::NotAuthorized => (
            ReasonCode::NOT_AUTHORIZED,
            "a username is required (allow_anonymous is false)",
        ),
    };
    Some(refusal(connect, reason_code, why))
}

/// The refusal of a CONNECT for a client id whose session another user's connection took
/// last (Not authorized: v5 0x87, 3.1.1 return code 5).
pub fn refuse_session_of_another(connect: &Connect) -> Refusal {
    refusal(
        connect,
        ReasonCode::NOT_AUTHORIZED,
        "the client id's session belongs to another user",
    )
}

fn refusal(connect: &Connect, reason_code: ReasonCode, why: &'static str) -> Refusal {
    let mut conn_ack = ConnAck {
        session_present: false,
        reason_code,
        properties: Properties::default(),
    };
    if connect.protocol.is_v5() {
        conn_ack.properties.reason_string = Some(ByteString::from_static(why));
    }
    let mut refusal = Refusal::new(conn_ack, ClientLimits::of(connect));
    refusal.reason = why.to_string();
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Packet, ProtocolVersion};

    fn connect(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 10,
            client_id: "c".into(),
            will: None,
            username: Some("u".into()),
            password: Some(bytes::Bytes::from_static(b"p")),
            properties: Properties::default(),
        }
    }

    #[test]
    fn each_verdict_gets_its_code_in_both_versions() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            assert!(refuse_credentials(&connect(version), Verdict::Allowed).is_none());
            for (verdict, code) in [
                (
                    Verdict::BadCredentials,
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                ),
                (Verdict::NotAuthorized, ReasonCode::NOT_AUTHORIZED),
            ] {
                let refusal = refuse_credentials(&connect(version), verdict).unwrap();
                assert_eq!(refusal.reason_code, code);
                let Some(Packet::ConnAck(ack)) = refusal.conn_ack else {
                    panic!("a CONNACK");
                };
                assert_eq!(ack.reason_code, code);
                assert!(!ack.session_present);
                assert_eq!(ack.properties.reason_string.is_some(), version.is_v5());
            }
        }
    }
}
