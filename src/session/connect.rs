//! CONNECT validation and the CONNACK it earns, and the refusal of a CONNECT that does
//! not decode.
//!
//! Keep alive: `server_keep_alive` replaces a v5 client's value outright. `max_keepalive`
//! (Mosquitto's name and meaning) caps it: a v5 client that asks for more, or for 0 (no
//! keep alive at all), is told the cap as Server Keep Alive (MQTT 5.0 3.2.2.3.14) and held
//! to it [MQTT-3.2.2-21]. 3.1.1 has no Server Keep Alive and the server must honour the
//! client's value [MQTT-3.1.2-24], so such a 3.1.1 (or 3.1) client can only be refused:
//! CONNACK 0x02 Identifier rejected, as Mosquitto answers it.

use std::time::Duration;

use bytestring::ByteString;

use crate::protocol::{
    ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion, ReasonCode,
};
use crate::session::link::{ClientLimits, Fitted, Fitter};

/// The server's side of the negotiation, from the configuration.
#[derive(Debug, Clone)]
pub struct ConnectPolicy {
    pub max_packet_size: u32,
    /// Overrides the client's keep alive when set (v5 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
    /// The longest keep alive allowed (`max_keepalive`); `None`: any, 0 included.
    pub max_keepalive: Option<u16>,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    /// Cap on Session Expiry; also the expiry of 3.1.1 Clean Session 0 sessions.
    pub max_session_expiry: Duration,
    /// Cap on the client's Receive Maximum for our outbound window.
    pub max_inflight_messages: u16,
    /// Whether a v5 CONNACK names the owning and the accepting core (User Properties
    /// `berth-shard`, `berth-accepted-on`): internals, for tests and debugging only.
    pub connack_debug_properties: bool,
    /// This node's name in a cluster: under `connack_debug_properties` a v5 CONNACK
    /// names it too (User Property `berth-node`).
    pub node: Option<ByteString>,
}

/// A CONNECT refused: the CONNACK to write before closing, and what to log.
#[derive(Debug)]
pub struct Refusal {
    /// The CONNACK fitted to the client's limits (a Reason String only where it fits its
    /// Maximum Packet Size [MQTT-3.2.2-19]); `None` when nothing can be sent.
    pub conn_ack: Option<Packet>,
    pub version: ProtocolVersion,
    pub reason_code: ReasonCode,
    /// Why, for the log: the Reason String, or the code's name.
    pub reason: String,
}

impl Refusal {
    pub fn new(conn_ack: ConnAck, limits: ClientLimits) -> Refusal {
        let reason_code = conn_ack.reason_code;
        let reason = conn_ack
            .properties
            .reason_string
            .as_deref()
            .unwrap_or(reason_code.description())
            .to_string();
        let version = limits.version;
        let conn_ack = match Fitter::new(limits).fit(Packet::ConnAck(conn_ack)) {
            Fitted::Send(packet) => Some(packet),
            Fitted::Dropped(_) => None,
        };
        Refusal {
            conn_ack,
            version,
            reason_code,
            reason,
        }
    }
}

/// The protocol level a (possibly malformed) CONNECT claims, read straight from its
/// variable header, so that a refusal can be written in the client's own version. Read it
/// before decoding: a failed decode may have consumed the packet.
pub fn claimed_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: type byte, then 1-4 bytes of remaining length.
    let header_len = 1 + buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

/// The answer to a CONNECT that failed to decode, where the client's version has one.
pub fn refuse_malformed(error: &DecodeError, level: Option<u8>) -> Option<Refusal> {
    let (version, reason_code) = match error {
        // [MQTT-3.1.2-2] answer an unknown level with return code 0x01 in the 3.1.1 format.
        DecodeError::UnsupportedProtocolVersion(_) => (
            ProtocolVersion::V3_1_1,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        // A v5 client learns why; earlier versions are just closed [MQTT-4.8.0-1].
        _ if level == Some(5) => (ProtocolVersion::V5, error.reason_code()),
        _ => return None,
    };
    let mut conn_ack = ConnAck {
        session_present: false,
        reason_code,
        properties: Properties::default(),
    };
    if version.is_v5() {
        conn_ack.properties.reason_string = Some(ByteString::from(error.to_string()));
    }
    let limits = ClientLimits {
        version,
        max_packet_size: None,
        topic_alias_maximum: 0,
        request_problem_information: true,
    };
    let mut refusal = Refusal::new(conn_ack, limits);
    refusal.reason = error.to_string();
    Some(refusal)
}

/// The Session Expiry a CONNECT asks for: v5 says it outright (absent is 0, 0xFFFFFFFF
/// is never); 3.1.1 Clean Session 0 means "keep it", which the server caps at its maximum.
pub fn requested_expiry(connect: &Connect, max: Duration) -> Duration {
    if connect.protocol.is_v5() {
        match connect.properties.session_expiry_interval.unwrap_or(0) {
            u32::MAX => max,
            secs => Duration::from_secs(u64::from(secs)),
        }
    } else if connect.clean_start {
        Duration::ZERO
    } else {
        max
    }
}

/// What an accepted CONNECT settles for the life of the connection.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub client_id: ByteString,
    /// Zero means no keep-alive enforcement.
    pub keep_alive: Duration,
    /// The largest packet the client accepts (v5 Maximum Packet Size), if it set one.
    pub client_max_packet_size: Option<u32>,
    /// How many unacknowledged QoS 1/2 PUBLISH the client accepts from us.
    pub client_receive_maximum: u16,
    pub client_topic_alias_maximum: u16,
    /// Whether reason strings and user properties may be sent on failures (v5).
    pub request_problem_information: bool,
    pub conn_ack: ConnAck,
}

/// Checks a decoded CONNECT. `assigned_id` is the id to give a client that sent an empty
/// one (v5 gets it back in the CONNACK; 3.1.1 uses it silently).
/// On refusal returns the CONNACK to send before closing.
pub fn accept_connect(
    connect: &Connect,
    policy: &ConnectPolicy,
    assigned_id: impl FnOnce() -> ByteString,
) -> Result<Accepted, ConnAck> {
    let v5 = connect.protocol.is_v5();
    let refuse = |reason_code| ConnAck {
        session_present: false,
        reason_code,
        properties: Properties::default(),
    };

    if v5 && connect.properties.authentication_method.is_some() {
        // Enhanced authentication is not offered [MQTT-4.12.0-1].
        return Err(refuse(ReasonCode::BAD_AUTHENTICATION_METHOD));
    }
    let mut properties = Properties::default();
    let client_id = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            // [MQTT-3.1.3-8] an empty client id requires Clean Session 1 in 3.1.1.
            return Err(refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID));
        }
        if connect.protocol == ProtocolVersion::V3_1 {
            // MQTT 3.1 requires 1 to 23 characters.
            return Err(refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID));
        }
        let id = assigned_id();
        if v5 {
            properties.assigned_client_identifier = Some(id.clone());
        }
        id
    } else {
        connect.client_id.clone()
    };

    let asked = connect.keep_alive;
    let over_cap = policy
        .max_keepalive
        .filter(|&cap| asked == 0 || asked > cap);
    let keep_alive = match (policy.server_keep_alive, over_cap) {
        (Some(server), _) if v5 => {
            properties.server_keep_alive = Some(server);
            server
        }
        (None, Some(cap)) if v5 => {
            properties.server_keep_alive = Some(cap);
            cap
        }
        (_, Some(cap)) if !v5 => {
            // The 3.1.1 encoder sends 0x85 as return code 0x02 Identifier rejected.
            let mut refused = refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            refused.properties.reason_string =
                Some(format!("keep alive {asked} is not in 1..={cap} (max_keepalive)").into());
            return Err(refused);
        }
        _ => asked,
    };
    if v5 {
        properties.receive_maximum = Some(policy.receive_maximum);
        properties.maximum_packet_size = Some(policy.max_packet_size);
        properties.topic_alias_maximum = Some(policy.topic_alias_maximum);
    }
    let client = &connect.properties;
    Ok(Accepted {
        client_id,
        keep_alive: Duration::from_secs(u64::from(keep_alive)),
        client_max_packet_size: client.maximum_packet_size,
        client_receive_maximum: client.receive_maximum.unwrap_or(u16::MAX),
        client_topic_alias_maximum: client.topic_alias_maximum.unwrap_or(0),
        request_problem_information: client.request_problem_information.unwrap_or(1) == 1,
        conn_ack: ConnAck {
            session_present: false,
            reason_code: ReasonCode::SUCCESS,
            properties,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ConnectPolicy {
        ConnectPolicy {
            max_packet_size: 1 << 20,
            server_keep_alive: None,
            max_keepalive: None,
            receive_maximum: 100,
            topic_alias_maximum: 0,
            max_session_expiry: Duration::from_secs(3600),
            max_inflight_messages: 1024,
            connack_debug_properties: false,
            node: None,
        }
    }

    fn connect(protocol: ProtocolVersion, id: &str, clean: bool) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 30,
            client_id: ByteString::from(id),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn mqtt_3_1_3_8_empty_id_needs_clean_session_in_v311() {
        let refused = accept_connect(
            &connect(ProtocolVersion::V3_1_1, "", false),
            &policy(),
            || "x".into(),
        );
        assert_eq!(
            refused.unwrap_err().reason_code,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        );
        let accepted = accept_connect(
            &connect(ProtocolVersion::V3_1_1, "", true),
            &policy(),
            || "x".into(),
        )
        .unwrap();
        assert_eq!(accepted.client_id, "x");
        assert_eq!(accepted.conn_ack.properties, Properties::default());
    }

    #[test]
    fn mqtt_3_2_2_16_v5_empty_id_is_assigned_and_returned() {
        let accepted = accept_connect(&connect(ProtocolVersion::V5, "", false), &policy(), || {
            "given".into()
        })
        .unwrap();
        assert_eq!(accepted.client_id, "given");
        assert_eq!(
            accepted
                .conn_ack
                .properties
                .assigned_client_identifier
                .as_deref(),
            Some("given")
        );
    }

    #[test]
    fn server_keep_alive_overrides_v5_only() {
        let policy = ConnectPolicy {
            server_keep_alive: Some(5),
            ..policy()
        };
        let v5 = accept_connect(&connect(ProtocolVersion::V5, "a", true), &policy, || {
            "x".into()
        })
        .unwrap();
        assert_eq!(v5.keep_alive, Duration::from_secs(5));
        assert_eq!(v5.conn_ack.properties.server_keep_alive, Some(5));
        let v3 = accept_connect(
            &connect(ProtocolVersion::V3_1_1, "a", true),
            &policy,
            || "x".into(),
        )
        .unwrap();
        assert_eq!(v3.keep_alive, Duration::from_secs(30));
    }

    fn with_keep_alive(protocol: ProtocolVersion, keep_alive: u16) -> Connect {
        Connect {
            keep_alive,
            ..connect(protocol, "a", true)
        }
    }

    #[test]
    fn max_keepalive_caps_v5_and_refuses_v311_above_it_or_at_zero() {
        let capped = ConnectPolicy {
            max_keepalive: Some(60),
            ..policy()
        };
        let policy = &capped;
        for asked in [0, 61, u16::MAX] {
            let v5 = accept_connect(&with_keep_alive(ProtocolVersion::V5, asked), policy, || {
                "x".into()
            })
            .unwrap();
            assert_eq!(v5.keep_alive, Duration::from_secs(60), "asked {asked}");
            assert_eq!(v5.conn_ack.properties.server_keep_alive, Some(60));
            for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V3_1] {
                let refused =
                    accept_connect(&with_keep_alive(version, asked), policy, || "x".into())
                        .unwrap_err();
                assert_eq!(refused.reason_code.to_v3_connack(), 2, "asked {asked}");
            }
        }
        for asked in [1, 60] {
            for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
                let ok = accept_connect(&with_keep_alive(version, asked), policy, || "x".into())
                    .unwrap();
                assert_eq!(ok.keep_alive, Duration::from_secs(u64::from(asked)));
                assert_eq!(ok.conn_ack.properties.server_keep_alive, None);
            }
        }
        let uncapped = accept_connect(
            &with_keep_alive(ProtocolVersion::V3_1_1, 0),
            &self::policy(),
            || "x".into(),
        )
        .unwrap();
        assert_eq!(uncapped.keep_alive, Duration::ZERO);
    }

    #[test]
    fn enhanced_auth_is_refused_with_bad_authentication_method() {
        let mut c = connect(ProtocolVersion::V5, "a", true);
        c.properties.authentication_method = Some("SCRAM".into());
        let refused = accept_connect(&c, &policy(), || "x".into()).unwrap_err();
        assert_eq!(refused.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    }

    #[test]
    fn mqtt_3_1_2_2_an_unknown_level_is_answered_in_the_3_1_1_format() {
        let refusal = refuse_malformed(&DecodeError::UnsupportedProtocolVersion(9), Some(9))
            .expect("answered");
        assert_eq!(refusal.version, ProtocolVersion::V3_1_1);
        assert_eq!(
            refusal.reason_code,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        );
        let Some(Packet::ConnAck(ack)) = refusal.conn_ack else {
            panic!("a CONNACK");
        };
        assert_eq!(ack.reason_code.to_v3_connack(), 1);
    }

    #[test]
    fn mqtt_4_8_0_1_a_malformed_connect_is_answered_in_v5_only() {
        let error = DecodeError::Malformed("x");
        let v5 = refuse_malformed(&error, Some(5)).expect("v5 learns why");
        assert_eq!(v5.reason_code, error.reason_code());
        let Some(Packet::ConnAck(ack)) = v5.conn_ack else {
            panic!("a CONNACK");
        };
        assert!(ack.properties.reason_string.is_some());
        assert!(refuse_malformed(&error, Some(4)).is_none());
        assert!(refuse_malformed(&error, None).is_none());
    }

    #[test]
    fn claimed_level_reads_the_variable_header() {
        // CONNECT, remaining length 10, "MQTT", level 5.
        let bytes = [0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0];
        assert_eq!(claimed_level(&bytes), Some(5));
        assert_eq!(claimed_level(&bytes[..5]), None);
        assert_eq!(claimed_level(&[]), None);
    }

    #[test]
    fn requested_expiry_follows_the_version() {
        let max = Duration::from_secs(100);
        let mut v5 = connect(ProtocolVersion::V5, "a", true);
        assert_eq!(requested_expiry(&v5, max), Duration::ZERO);
        v5.properties.session_expiry_interval = Some(7);
        assert_eq!(requested_expiry(&v5, max), Duration::from_secs(7));
        v5.properties.session_expiry_interval = Some(u32::MAX);
        assert_eq!(requested_expiry(&v5, max), max);
        let clean = connect(ProtocolVersion::V3_1_1, "a", true);
        assert_eq!(requested_expiry(&clean, max), Duration::ZERO);
        let kept = connect(ProtocolVersion::V3_1_1, "a", false);
        assert_eq!(requested_expiry(&kept, max), max);
    }
}
