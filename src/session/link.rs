//! One accepted connection's protocol rules: keep-alive, PINGREQ, DISCONNECT and the
//! packets a client may never send. Message-carrying packets are passed on to the
//! session and routing layers.

use std::time::{Duration, Instant};

use crate::protocol::{Packet, ProtocolVersion, ReasonCode};

/// What the server does after a packet from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Answer with this packet.
    Reply(Packet),
    /// A packet for the session/routing layer (PUBLISH, SUBSCRIBE, acks...).
    Forward(Packet),
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

#[derive(Debug)]
pub struct Link {
    pub version: ProtocolVersion,
    keep_alive: Duration,
    last_packet: Instant,
}

impl Link {
    pub fn new(version: ProtocolVersion, keep_alive: Duration, now: Instant) -> Link {
        Link {
            version,
            keep_alive,
            last_packet: now,
        }
    }

    /// When the connection must be closed if no packet arrives before: one and a half
    /// times the keep alive after the last packet [MQTT-3.1.2-24]. None when keep-alive is off.
    pub fn deadline(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            None
        } else {
            Some(self.last_packet + self.keep_alive + self.keep_alive / 2)
        }
    }

    pub fn on_packet(&mut self, packet: Packet, now: Instant) -> Result<LinkEvent, Violation> {
        self.last_packet = now;
        let protocol_error = |rule| {
            Err(Violation {
                reason_code: ReasonCode::PROTOCOL_ERROR,
                rule,
            })
        };
        match packet {
            Packet::PingReq => Ok(LinkEvent::Reply(Packet::PingResp)),
            Packet::Disconnect(disconnect) => Ok(LinkEvent::Disconnected {
                publish_will: self.version.is_v5()
                    && disconnect.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                session_expiry: disconnect.properties.session_expiry_interval,
            }),
            Packet::Connect(_) => {
                protocol_error("[MQTT-3.1.0-2] a second CONNECT on one connection")
            }
            Packet::Auth(_) => {
                protocol_error("[MQTT-4.12.0-1] AUTH without an authentication method in CONNECT")
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                protocol_error("a server-to-client packet sent by the client")
            }
            Packet::Publish(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_) => Ok(LinkEvent::Forward(packet)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Disconnect, Properties};

    #[test]
    fn mqtt_3_1_2_24_deadline_is_one_and_a_half_keep_alives() {
        let start = Instant::now();
        let mut link = Link::new(ProtocolVersion::V3_1_1, Duration::from_secs(10), start);
        assert_eq!(link.deadline(), Some(start + Duration::from_secs(15)));
        let later = start + Duration::from_secs(4);
        assert_eq!(
            link.on_packet(Packet::PingReq, later),
            Ok(LinkEvent::Reply(Packet::PingResp))
        );
        assert_eq!(link.deadline(), Some(later + Duration::from_secs(15)));
        assert_eq!(
            Link::new(ProtocolVersion::V5, Duration::ZERO, start).deadline(),
            None
        );
    }

    #[test]
    fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
        let mut link = Link::new(ProtocolVersion::V5, Duration::ZERO, Instant::now());
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
        let err = link
            .on_packet(Packet::Connect(Box::new(connect)), Instant::now())
            .unwrap_err();
        assert_eq!(err.reason_code, ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn disconnect_with_will_only_in_v5() {
        let with_will = Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties::default(),
        };
        let mut v5 = Link::new(ProtocolVersion::V5, Duration::ZERO, Instant::now());
        assert_eq!(
            v5.on_packet(Packet::Disconnect(with_will.clone()), Instant::now()),
            Ok(LinkEvent::Disconnected {
                publish_will: true,
                session_expiry: None
            })
        );
        let mut v3 = Link::new(ProtocolVersion::V3_1_1, Duration::ZERO, Instant::now());
        assert_eq!(
            v3.on_packet(Packet::Disconnect(with_will), Instant::now()),
            Ok(LinkEvent::Disconnected {
                publish_will: false,
                session_expiry: None
            })
        );
    }
}
