//! The rules one packet from a client is checked against on its own: PINGREQ,
//! DISCONNECT, `$SYS` publishes and the packets a client may never send. What passes is
//! handed on to the rest of the [`Link`](super::Link).

use crate::protocol::{Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe};
use crate::session::state::ack;
use crate::topic::{is_sys_topic, SHARE_PREFIX};

/// What the link does with a packet from the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// Answer with this packet.
    Reply(Packet),
    /// A packet for the session/routing layer (PUBLISH, SUBSCRIBE, acks...).
    Forward(Packet),
    /// Nothing to answer or pass on: a QoS 0 PUBLISH the server refuses.
    Discard,
    /// The client disconnected normally; `publish_will` is true for v5 reason 0x04;
    /// `session_expiry` is a new Session Expiry Interval from a v5 DISCONNECT.
    Disconnected {
        publish_will: bool,
        session_expiry: Option<u32>,
    },
}

/// A protocol violation: close the connection, with a DISCONNECT carrying `reason_code`
/// first when the client speaks v5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct Violation {
    pub reason_code: ReasonCode,
    pub rule: &'static str,
}

/// Checks one packet from the client against the rules of its protocol version.
pub(super) fn check(version: ProtocolVersion, packet: Packet) -> Result<Checked, Violation> {
    let protocol_error = |rule| {
        Err(Violation {
            reason_code: ReasonCode::PROTOCOL_ERROR,
            rule,
        })
    };
    match packet {
        Packet::PingReq => Ok(Checked::Reply(Packet::PingResp)),
        Packet::Disconnect(disconnect) => Ok(Checked::Disconnected {
            publish_will: version.is_v5()
                && disconnect.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            session_expiry: disconnect.properties.session_expiry_interval,
        }),
        Packet::Connect(_) => protocol_error("[MQTT-3.1.0-2] a second CONNECT on one connection"),
        Packet::Auth(_) => {
            protocol_error("[MQTT-4.12.0-1] AUTH without an authentication method in CONNECT")
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            protocol_error("a server-to-client packet sent by the client")
        }
        Packet::Publish(publish) if !publish.properties.subscription_identifiers.is_empty() => {
            protocol_error("[MQTT-3.3.4-6] Subscription Identifier in a PUBLISH from a client")
        }
        Packet::Publish(publish) if is_sys_topic(&publish.topic) => {
            Ok(refuse_sys_publish(&publish))
        }
        Packet::Subscribe(subscribe) if shared_with_no_local(&subscribe) => {
            protocol_error("[MQTT-3.8.3-4] No Local set on a Shared Subscription")
        }
        Packet::Publish(_)
        | Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_) => Ok(Checked::Forward(packet)),
    }
}

/// Only the broker publishes under `$SYS`. As Mosquitto does: a QoS 1 or 2 PUBLISH is
/// answered with 0x87 Not authorized (a 3.1.1 client cannot be told, and just gets its
/// acknowledgement), a QoS 0 one is dropped; the message goes nowhere.
fn refuse_sys_publish(publish: &Publish) -> Checked {
    let refused = |id| ack(id, ReasonCode::NOT_AUTHORIZED);
    match (publish.qos, publish.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => Checked::Reply(Packet::PubAck(refused(id))),
        (QoS::ExactlyOnce, Some(id)) => Checked::Reply(Packet::PubRec(refused(id))),
        _ => Checked::Discard,
    }
}

fn shared_with_no_local(subscribe: &Subscribe) -> bool {
    subscribe
        .filters
        .iter()
        .any(|(filter, options)| options.no_local && filter.starts_with(SHARE_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Disconnect, Properties};

    #[test]
    fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
        let link = ProtocolVersion::V5;
        let connect = crate::protocol::Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            client_id: "a".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        };
        let err = check(link, Packet::Connect(Box::new(connect))).unwrap_err();
        assert_eq!(err.reason_code, ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn disconnect_with_will_only_in_v5() {
        let with_will = Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties::default(),
        };
        let v5 = ProtocolVersion::V5;
        assert_eq!(
            check(v5, Packet::Disconnect(with_will.clone())),
            Ok(Checked::Disconnected {
                publish_will: true,
                session_expiry: None
            })
        );
        let v3 = ProtocolVersion::V3_1_1;
        assert_eq!(
            check(v3, Packet::Disconnect(with_will)),
            Ok(Checked::Disconnected {
                publish_will: false,
                session_expiry: None
            })
        );
    }

    fn publish(topic: &str, qos: QoS) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| crate::protocol::PacketId::new(3).unwrap()),
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn publishing_under_sys_is_refused_with_not_authorized() {
        let link = ProtocolVersion::V5;
        let id = crate::protocol::PacketId::new(3).unwrap();
        assert_eq!(
            check(link, publish("$SYS/broker/uptime", QoS::AtLeastOnce)),
            Ok(Checked::Reply(Packet::PubAck(ack(
                id,
                ReasonCode::NOT_AUTHORIZED
            ))))
        );
        assert_eq!(
            check(link, publish("$SYS", QoS::ExactlyOnce)),
            Ok(Checked::Reply(Packet::PubRec(ack(
                id,
                ReasonCode::NOT_AUTHORIZED
            ))))
        );
        assert_eq!(
            check(link, publish("$SYS/x", QoS::AtMostOnce)),
            Ok(Checked::Discard)
        );
        assert!(matches!(
            check(link, publish("$SY/x", QoS::AtMostOnce)),
            Ok(Checked::Forward(_))
        ));
    }

    #[test]
    fn mqtt_3_3_4_6_subscription_identifier_in_a_client_publish_is_a_protocol_error() {
        let link = ProtocolVersion::V5;
        let Packet::Publish(mut with_id) = publish("t", QoS::AtLeastOnce) else {
            unreachable!()
        };
        with_id.properties.subscription_identifiers = vec![1];
        let err = check(link, Packet::Publish(with_id)).unwrap_err();
        assert_eq!(err.reason_code, ReasonCode::PROTOCOL_ERROR);
        assert!(err.rule.contains("MQTT-3.3.4-6"));
        assert!(matches!(
            check(link, publish("t", QoS::AtLeastOnce)),
            Ok(Checked::Forward(_))
        ));
    }

    #[test]
    fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
        use crate::protocol::SubscriptionOptions;
        let subscribe = |filter: &str, no_local| {
            Packet::Subscribe(Subscribe {
                packet_id: crate::protocol::PacketId::new(1).unwrap(),
                properties: Properties::default(),
                filters: vec![
                    ("a".into(), SubscriptionOptions::default()),
                    (
                        filter.into(),
                        SubscriptionOptions {
                            no_local,
                            ..Default::default()
                        },
                    ),
                ],
            })
        };
        let link = ProtocolVersion::V5;
        let err = check(link, subscribe("$share/g/t", true)).unwrap_err();
        assert_eq!(err.reason_code, ReasonCode::PROTOCOL_ERROR);
        assert!(err.rule.contains("MQTT-3.8.3-4"));
        for (filter, no_local) in [("$share/g/t", false), ("t", true)] {
            assert!(matches!(
                check(link, subscribe(filter, no_local)),
                Ok(Checked::Forward(_))
            ));
        }
    }
}
