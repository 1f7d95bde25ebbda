//! Fitting each outgoing packet to what the client's CONNECT negotiated, before the
//! writer encodes it. Pure: the writer task owns one [`Fitter`] per connection.
//!
//! Fitting a packet, in order:
//! - **Reason Strings** (MQTT 5.0 3.1.2.11.7): a failure acknowledgement or DISCONNECT
//!   without one gets the specification's name of its reason code. When the client sent
//!   Request Problem Information 0, Reason String and User Properties are removed from
//!   every packet but CONNACK, PUBLISH and DISCONNECT [MQTT-3.1.2-29].
//! - **Topic aliases** (3.3.2.3.4): when the client's Topic Alias Maximum is above 0, the
//!   first that many distinct topics sent on the connection get aliases 1, 2, ... in turn;
//!   a topic's first PUBLISH carries topic and alias, later ones the alias alone. Later
//!   topics go in full. The map lives and dies with the connection (a resumed session
//!   starts a new one) [MQTT-3.3.2-7]. First-come rather than LRU: an alias is never
//!   reassigned, so a client never has to follow a remapping.
//! - **Maximum Packet Size** (3.1.2.11.4): a packet above the client's maximum is not
//!   sent [MQTT-3.1.2-24]. Other packets lose their Reason String, then their User
//!   Properties, first. An oversized PUBLISH is discarded and counted as dropped, and one
//!   of QoS 1 or 2 is treated as delivered, so it never holds the client's window
//!   [MQTT-3.1.2-25]: [`Dropped::completion`] is the acknowledgement the engine takes in
//!   place of the client's.
//!
//! **Invariant:** a packet that [`Fitter::fit`] returns as [`Fitted::Send`] (and a frame
//! that [`Fitter::as_is`] returns) is never above the client's Maximum Packet Size.

use std::collections::HashMap;

use bytestring::ByteString;

use crate::broker::SharedPublish;
use crate::protocol::{self, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};
use crate::session::state;

/// What the client's CONNECT settled about the packets it accepts.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    pub version: ProtocolVersion,
    pub max_packet_size: Option<u32>,
    pub topic_alias_maximum: u16,
    pub request_problem_information: bool,
}

impl ClientLimits {
    /// What a CONNECT says about the packets its client accepts.
    pub fn of(connect: &protocol::Connect) -> ClientLimits {
        let properties = &connect.properties;
        ClientLimits {
            version: connect.protocol,
            max_packet_size: properties.maximum_packet_size,
            topic_alias_maximum: properties.topic_alias_maximum.unwrap_or(0),
            request_problem_information: properties.request_problem_information != Some(0),
        }
    }
}

/// A packet the client cannot take (above its Maximum Packet Size).
#[derive(Debug)]
pub struct Dropped {
    /// Whether it was a PUBLISH (counted as a dropped message).
    pub publish: bool,
    /// For a QoS 1/2 PUBLISH: the acknowledgement to hand the engine as if the client had
    /// sent it, which completes the delivery and releases the next queued message. Only
    /// while the connection still holds the session: after a takeover the packet id
    /// belongs to the new connection's window.
    pub completion: Option<Packet>,
}

impl Dropped {
    fn of(packet: &Packet) -> Dropped {
        let Packet::Publish(publish) = packet else {
            return Dropped {
                publish: false,
                completion: None,
            };
        };
        let completion = match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => {
                Some(Packet::PubComp(state::ack(id, ReasonCode::SUCCESS)))
            }
            _ => None,
        };
        Dropped {
            publish: true,
            completion,
        }
    }
}

#[derive(Debug)]
pub enum Fitted {
    Send(Packet),
    Dropped(Dropped),
}

/// The per-connection state of fitting packets to the client (see the module docs).
pub struct Fitter {
    limits: ClientLimits,
    /// Topics given an alias on this connection.
    aliases: HashMap<ByteString, u16>,
}

impl Fitter {
    pub fn new(limits: ClientLimits) -> Fitter {
        Fitter {
            limits,
            aliases: HashMap::new(),
        }
    }

    /// The encoding of a shared QoS 0 PUBLISH when this client takes it unchanged: no
    /// topic aliases to apply and within its Maximum Packet Size. Otherwise the caller
    /// fits a copy of the packet.
    pub fn as_is<'a>(&self, shared: &'a SharedPublish) -> Option<&'a bytes::Bytes> {
        if self.limits.topic_alias_maximum > 0 {
            return None;
        }
        let frame = shared.frame(self.limits.version)?;
        match self.limits.max_packet_size {
            Some(max) if frame.len() > max as usize => None,
            _ => Some(frame),
        }
    }

    pub fn fit(&mut self, mut packet: Packet) -> Fitted {
        if self.limits.version.is_v5() {
            self.explain(&mut packet);
        }
        let Packet::Publish(mut publish) = packet else {
            return self.check_size(packet);
        };
        let topic = publish.topic.clone();
        let new_alias = self.alias(&mut publish);
        match self.check_size(Packet::Publish(publish)) {
            Fitted::Send(packet) => {
                if let Some(alias) = new_alias {
                    // Only once the client has seen the topic with its alias.
                    self.aliases.insert(topic, alias);
                }
                Fitted::Send(packet)
            }
            dropped => dropped,
        }
    }

    /// Adds a Reason String to a failure, or removes Reason String and User Properties
    /// where Request Problem Information 0 forbids them [MQTT-3.1.2-29].
    fn explain(&self, packet: &mut Packet) {
        let allowed = self.limits.request_problem_information
            || matches!(
                packet,
                Packet::ConnAck(_) | Packet::Publish(_) | Packet::Disconnect(_)
            );
        let Some((properties, failure)) = failure_properties(packet) else {
            return;
        };
        if !allowed {
            if let Some(values) = properties.values_mut() {
                values.reason_string = None;
                values.user_properties.clear();
            }
        } else if let Some(code) = failure {
            if properties.reason_string.is_none() {
                properties.reason_string = Some(code.description().into());
            }
        }
    }

    /// Puts this connection's alias on `publish` (alone, if the client knows it already).
    /// Returns the alias to remember for its topic once the packet is sent, if it is new.
    fn alias(&self, publish: &mut Publish) -> Option<u16> {
        // An alias from the publisher's connection means nothing on this one.
        if let Some(values) = publish.properties.values_mut() {
            values.topic_alias = None;
        }
        if self.limits.topic_alias_maximum == 0 {
            return None;
        }
        if let Some(&alias) = self.aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = ByteString::new();
            return None;
        }
        if self.aliases.len() >= usize::from(self.limits.topic_alias_maximum) {
            return None;
        }
        let alias = self.aliases.len() as u16 + 1;
        publish.properties.topic_alias = Some(alias);
        Some(alias)
    }

    fn check_size(&self, mut packet: Packet) -> Fitted {
        let Some(max) = self.limits.max_packet_size.map(|m| m as usize) else {
            return Fitted::Send(packet);
        };
        let version = self.limits.version;
        if protocol::encoded_len(&packet, version) <= max {
            return Fitted::Send(packet);
        }
        if !matches!(packet, Packet::Publish(_)) {
            // MQTT 5.0 3.2.2.3.9, 3.4.2.2.2, ...: drop Reason String, then User Properties.
            if let Some(properties) = properties_mut(&mut packet) {
                properties.reason_string = None;
                if protocol::encoded_len(&packet, version) <= max {
                    return Fitted::Send(packet);
                }
                if let Some(properties) = properties_mut(&mut packet) {
                    properties.user_properties.clear();
                }
                if protocol::encoded_len(&packet, version) <= max {
                    return Fitted::Send(packet);
                }
            }
        }
        Fitted::Dropped(Dropped::of(&packet))
    }

    pub fn version(&self) -> ProtocolVersion {
        self.limits.version
    }
}

fn properties_mut(packet: &mut Packet) -> Option<&mut Properties> {
    failure_properties(packet).map(|(p, _)| p)
}

/// The properties of a packet that can carry a Reason String, with its failure reason
/// code if it reports one (for SUBACK and UNSUBACK, the first code that is not a grant).
fn failure_properties(packet: &mut Packet) -> Option<(&mut Properties, Option<ReasonCode>)> {
    let not_ok = |code: ReasonCode| (code.0 != 0).then_some(code);
    Some(match packet {
        Packet::ConnAck(p) => (
            &mut p.properties,
            p.reason_code.is_error().then_some(p.reason_code),
        ),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            let code = not_ok(a.reason_code);
            (&mut a.properties, code)
        }
        Packet::SubAck(s) => {
            let code = s.reason_codes.iter().copied().find(|c| c.0 > 0x02);
            (&mut s.properties, code)
        }
        Packet::UnsubAck(u) => {
            let code = u.reason_codes.iter().copied().find(|c| c.0 != 0);
            (&mut u.properties, code)
        }
        Packet::Disconnect(d) => (&mut d.properties, not_ok(d.reason_code)),
        Packet::Auth(a) => (&mut a.properties, None),
        Packet::Publish(p) => (&mut p.properties, None),
        Packet::Connect(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq
        | Packet::PingResp => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ack, PacketId, SubAck};
    use bytes::Bytes;

    fn limits(max: Option<u32>, aliases: u16, problems: bool) -> ClientLimits {
        ClientLimits {
            version: ProtocolVersion::V5,
            max_packet_size: max,
            topic_alias_maximum: aliases,
            request_problem_information: problems,
        }
    }

    fn publish(topic: &str, payload: usize) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from(vec![b'x'; payload]),
        })
    }

    fn sent(f: Fitted) -> Packet {
        match f {
            Fitted::Send(p) => p,
            Fitted::Dropped(p) => panic!("dropped {p:?}"),
        }
    }

    fn alias_of(p: &Packet) -> (String, Option<u16>) {
        match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_topics_get_aliases_and_later_sends_use_them_alone() {
        let mut f = Fitter::new(limits(None, 2, true));
        assert_eq!(
            alias_of(&sent(f.fit(publish("a", 1)))),
            ("a".into(), Some(1))
        );
        assert_eq!(
            alias_of(&sent(f.fit(publish("b", 1)))),
            ("b".into(), Some(2))
        );
        assert_eq!(alias_of(&sent(f.fit(publish("c", 1)))), ("c".into(), None));
        assert_eq!(
            alias_of(&sent(f.fit(publish("a", 1)))),
            ("".into(), Some(1))
        );
        assert_eq!(alias_of(&sent(f.fit(publish("c", 1)))), ("c".into(), None));
    }

    #[test]
    fn a_shared_publish_goes_as_is_unless_aliases_or_the_size_limit_change_it() {
        let Packet::Publish(p) = publish("a", 10) else {
            unreachable!()
        };
        let shared = SharedPublish::new(p);
        let frame = Fitter::new(limits(None, 0, true)).as_is(&shared);
        assert_eq!(
            frame.map(|f| f.len()),
            Some(16),
            "header 2, topic 2 + 1, properties 1, payload 10"
        );
        assert!(Fitter::new(limits(Some(16), 0, true))
            .as_is(&shared)
            .is_some());
        assert!(
            Fitter::new(limits(Some(15), 0, true))
                .as_is(&shared)
                .is_none(),
            "[MQTT-3.1.2-24] too large: fitted (and dropped) as a packet of its own"
        );
        assert!(
            Fitter::new(limits(None, 1, true)).as_is(&shared).is_none(),
            "the connection's topic aliases apply"
        );
    }

    #[test]
    fn no_aliases_when_the_client_allows_none() {
        let mut f = Fitter::new(limits(None, 0, true));
        assert_eq!(alias_of(&sent(f.fit(publish("a", 1)))), ("a".into(), None));
        assert_eq!(alias_of(&sent(f.fit(publish("a", 1)))), ("a".into(), None));
    }

    #[test]
    fn mqtt_3_1_2_24_oversized_publish_is_dropped_and_sets_no_alias() {
        let mut f = Fitter::new(limits(Some(50), 5, true));
        assert!(matches!(f.fit(publish("a", 100)), Fitted::Dropped(_)));
        assert_eq!(
            alias_of(&sent(f.fit(publish("a", 1)))),
            ("a".into(), Some(1))
        );
    }

    #[test]
    fn mqtt_3_1_2_25_an_oversized_qos1_publish_is_completed_as_if_acknowledged() {
        let Packet::Publish(mut p) = publish("a", 100) else {
            unreachable!()
        };
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(9);
        let Fitted::Dropped(dropped) =
            Fitter::new(limits(Some(50), 0, true)).fit(Packet::Publish(p))
        else {
            panic!("not dropped")
        };
        assert!(dropped.publish);
        assert!(matches!(
            dropped.completion,
            Some(Packet::PubComp(Ack { packet_id, .. })) if packet_id.get() == 9
        ));
        let Fitted::Dropped(qos0) = Fitter::new(limits(Some(50), 0, true)).fit(publish("a", 100))
        else {
            panic!("not dropped")
        };
        assert!(qos0.publish && qos0.completion.is_none());
    }

    #[test]
    fn failures_get_reason_strings_unless_problem_information_is_off() {
        let refused = || {
            Packet::SubAck(SubAck {
                packet_id: PacketId::new(1).unwrap(),
                properties: Properties::default(),
                reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::TOPIC_FILTER_INVALID],
            })
        };
        let Packet::SubAck(s) = sent(Fitter::new(limits(None, 0, true)).fit(refused())) else {
            unreachable!()
        };
        assert_eq!(
            s.properties.reason_string.as_deref(),
            Some("Topic Filter invalid")
        );
        let Packet::SubAck(s) = sent(Fitter::new(limits(None, 0, false)).fit(refused())) else {
            unreachable!()
        };
        assert_eq!(s.properties.reason_string, None);
    }

    #[test]
    fn oversized_acks_lose_their_reason_string_first() {
        let ack = Packet::PubAck(Ack {
            packet_id: PacketId::new(1).unwrap(),
            reason_code: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::default(),
        });
        let Packet::PubAck(a) = sent(Fitter::new(limits(Some(10), 0, true)).fit(ack)) else {
            unreachable!()
        };
        assert_eq!(a.properties.reason_string, None);
        assert_eq!(a.reason_code, ReasonCode::NOT_AUTHORIZED);
    }
}
