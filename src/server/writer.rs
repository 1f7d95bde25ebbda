//! A connection's writer: takes packets off the outbox, fits each to what the client
//! negotiated in its CONNECT, and batches everything queued into one write.
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
//!   [MQTT-3.1.2-25].
//!
//! A write that makes no progress for `write_timeout` (the socket's write timeout: the
//! client has stopped reading) or fails ends the writer, which tells the read loop through
//! `failed` so that the whole connection closes; a connection never lives on without a
//! writer.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::BytesMut;
use bytestring::ByteString;
use futures_lite::future;
use futures_lite::io::{AsyncWriteExt, WriteHalf};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::net::TcpStream;

use super::local::Core;
use super::outbox::QueuedBytes;
use crate::broker::{Outgoing, SharedPublish};
use crate::protocol::{self, Packet, Properties, ProtocolVersion, Publish, QoS};
use crate::session::state;

/// The writer stops gathering queued packets into one write at this many bytes.
const WRITE_BATCH: usize = 16 * 1024;

/// What the client's CONNECT settled about the packets it accepts.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    pub version: ProtocolVersion,
    pub max_packet_size: Option<u32>,
    pub topic_alias_maximum: u16,
    pub request_problem_information: bool,
}

pub async fn write_loop(
    core: Rc<Core>,
    (client_id, serial): (ByteString, u64),
    mut writer: WriteHalf<TcpStream>,
    packets: LocalReceiver<Outgoing>,
    queued: QueuedBytes,
    limits: ClientLimits,
    failed: LocalSender<std::io::Error>,
) {
    let mut fit = Fitter::new(limits);
    let mut buf = BytesMut::with_capacity(4096);
    while let Some(packet) = packets.recv().await {
        let mut next = Some(packet);
        // Gather everything already queued into the same write.
        while let Some(outgoing) = next.take() {
            queued.taken(&outgoing);
            let packet = match outgoing {
                Outgoing::Packet(packet) => Some(*packet),
                Outgoing::Shared(shared) => match fit.as_is(&shared) {
                    Some(frame) => {
                        buf.extend_from_slice(frame);
                        core.stats.sent(shared.packet());
                        None
                    }
                    None => Some(shared.packet().clone()),
                },
            };
            if let Some(packet) = packet {
                match fit.fit(packet) {
                    Fitted::Send(packet) => encode(&packet, fit.limits.version, &mut buf, &core),
                    Fitted::Dropped(packet) => discard(&core, &client_id, serial, packet).await,
                }
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            if let Some(Some(packet)) = future::poll_once(packets.recv()).await {
                next = Some(packet);
            }
        }
        if buf.is_empty() {
            continue;
        }
        if let Err(error) = writer.write_all(&buf).await {
            let _ = failed.try_send(error);
            return;
        }
        core.stats.wrote(buf.len());
        buf.clear();
    }
    let _ = writer.flush().await;
    let _ = writer.close().await;
}

fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut, core: &Core) {
    match protocol::encode(packet, version, buf) {
        Ok(_) => core.stats.sent(packet),
        Err(e) => tracing::warn!(error = %e, "cannot encode an outgoing packet"),
    }
}

/// A packet too large for the client: counted, and a QoS 1/2 PUBLISH completed as if the
/// client had acknowledged it, which releases the next queued message. Only while this
/// connection (`serial`) still holds the session: after a takeover the packet id belongs
/// to the new connection's window.
async fn discard(core: &Core, client_id: &ByteString, serial: u64, packet: Packet) {
    tracing::debug!("not sending a packet larger than the client's Maximum Packet Size");
    let Packet::Publish(publish) = packet else {
        return;
    };
    core.stats.publish_dropped();
    if !core.is_current(client_id, serial) {
        return;
    }
    if let (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) = (publish.qos, publish.packet_id) {
        let effects = core.broker.borrow_mut().on_ack(
            client_id,
            Packet::PubComp(state::ack(id, protocol::ReasonCode::SUCCESS)),
            std::time::Instant::now(),
        );
        core.apply(effects).await;
    }
}

pub enum Fitted {
    Send(Packet),
    Dropped(Packet),
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
            Fitted::Dropped(Packet::Publish(mut publish)) => {
                publish.topic = topic;
                if let Some(values) = publish.properties.values_mut() {
                    values.topic_alias = None;
                }
                Fitted::Dropped(Packet::Publish(publish))
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
        Fitted::Dropped(packet)
    }
}

fn properties_mut(packet: &mut Packet) -> Option<&mut Properties> {
    failure_properties(packet).map(|(p, _)| p)
}

/// The properties of a packet that can carry a Reason String, with its failure reason
/// code if it reports one (for SUBACK and UNSUBACK, the first code that is not a grant).
fn failure_properties(
    packet: &mut Packet,
) -> Option<(&mut Properties, Option<protocol::ReasonCode>)> {
    let not_ok = |code: protocol::ReasonCode| (code.0 != 0).then_some(code);
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
    use crate::protocol::{Ack, PacketId, ReasonCode, SubAck};
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
