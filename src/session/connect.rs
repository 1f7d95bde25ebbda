//! CONNECT validation and the CONNACK it earns.
//!
//! Keep alive: `server_keep_alive` replaces a v5 client's value outright. `max_keepalive`
//! (Mosquitto's name and meaning) caps it: a v5 client that asks for more, or for 0 (no
//! keep alive at all), is told the cap as Server Keep Alive (MQTT 5.0 3.2.2.3.14) and held
//! to it [MQTT-3.2.2-21]. 3.1.1 has no Server Keep Alive and the server must honour the
//! client's value [MQTT-3.1.2-24], so such a 3.1.1 (or 3.1) client can only be refused:
//! CONNACK 0x02 Identifier rejected, as Mosquitto answers it.

use std::time::Duration;

use bytestring::ByteString;

use crate::protocol::{ConnAck, Connect, Properties, ProtocolVersion, ReasonCode};

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
}
