//! A client's PUBLISH on its way to the engine, and the acknowledgements it earns.
//!
//! A PUBLISH has its Topic Alias resolved (set or used, then removed: an alias means
//! something on its own connection only), must then name a topic, and a QoS 2 one must
//! fit our Receive Maximum. A QoS 1/2 PUBLISH is refused before it is routed while the
//! store gate is closed; otherwise its acknowledgement is held until the read's
//! [`Step::Release`] has been carried out, and [`Link::release`] queues it: refused when a
//! core could not store a message of the read, else granted, with the QoS 2 id journaled
//! just before its PUBREC leaves.

use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::{End, Engine, LimitHit, Link, Step, StoreClosed};
use crate::broker::{CoreMsg, Effects};
use crate::protocol::{Ack, Packet, PacketId, Publish, QoS, ReasonCode};
use crate::session::state;

impl Link {
    pub(super) fn handle_publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
        engine: &mut impl Engine,
    ) -> Result<(), End> {
        resolve_topic_alias(&mut self.aliases, &mut publish)?;
        if publish.topic.is_empty() {
            return Err(End::Violation(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.3.2-8] empty topic without alias".into(),
            ));
        }
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        if !self.limits.topic_fits(&publish.topic) {
            engine.count_limit(LimitHit::TopicLevels);
            return Err(End::Violation(
                ReasonCode::TOPIC_NAME_INVALID,
                "the topic has more levels than max_topic_levels".into(),
            ));
        }
        if !self.limits.admit_publish(now) {
            engine.count_limit(LimitHit::PublishRate);
            return self.refuse_over_rate(qos, packet_id);
        }
        if !engine.may_publish(&self.client_id, &publish.topic) {
            // As Mosquitto does: v5 is told (0x87), 3.1.1 cannot be and gets its plain
            // acknowledgement; the message goes nowhere, and no QoS 2 state is kept.
            if let Some(id) = packet_id {
                let code = match self.version.is_v5() {
                    true => ReasonCode::NOT_AUTHORIZED,
                    false => ReasonCode::SUCCESS,
                };
                self.acks.push(ack_packet(qos, state::ack(id, code)));
            }
            return Ok(());
        }
        if qos != QoS::AtMostOnce && self.refusals_before.is_none() {
            self.refusals_before = Some(engine.refusals());
        }
        let route = match (qos, packet_id) {
            (QoS::ExactlyOnce, Some(id)) => {
                if engine.awaiting_release(&self.client_id) >= usize::from(self.receive_maximum) {
                    return Err(End::Violation(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "[MQTT-3.3.4-9] receive maximum exceeded".into(),
                    ));
                }
                engine.receive_qos2(&self.client_id, id)
            }
            _ => true,
        };
        let closed = match packet_id {
            Some(_) if route => engine.store_closed(),
            _ => None,
        };
        if let (Some(why), Some(id)) = (closed, packet_id) {
            // Refused before it is routed: the store cannot take new messages.
            engine.count_refused();
            if qos == QoS::ExactlyOnce {
                engine.refuse_qos2(&self.client_id, id);
            }
            if !self.version.is_v5() {
                return Err(End::StoreFull(why));
            }
            let mut ack = state::ack(id, ReasonCode::SUCCESS);
            refuse_ack(&mut ack, why);
            self.acks.push(ack_packet(qos, ack));
            return Ok(());
        }
        if route {
            let effects = match (qos, packet_id) {
                (QoS::ExactlyOnce, Some(id)) => {
                    engine.publish_exactly_once(&self.client_id, id, publish, now)
                }
                _ => engine.publish(&self.client_id, publish, now),
            };
            self.absorb(effects);
        }
        if let Some(id) = packet_id {
            self.acks
                .push(ack_packet(qos, state::ack(id, ReasonCode::SUCCESS)));
        }
        Ok(())
    }

    /// A PUBLISH over `max_publish_rate`, dropped (see `limits`): a v5 QoS 1/2 one is
    /// answered 0x97, a 3.1.1 QoS 1/2 one ends the connection, a QoS 0 one is just dropped.
    fn refuse_over_rate(&mut self, qos: QoS, packet_id: Option<PacketId>) -> Result<(), End> {
        let Some(id) = packet_id else {
            return Ok(());
        };
        if !self.version.is_v5() {
            return Err(End::Violation(
                ReasonCode::MESSAGE_RATE_TOO_HIGH,
                "PUBLISH over max_publish_rate (3.1.1 cannot be told)".into(),
            ));
        }
        // 0x96 Message rate too high is no PUBACK/PUBREC code (table 3-4): 0x97 is.
        let mut ack = state::ack(id, ReasonCode::QUOTA_EXCEEDED);
        ack.properties.reason_string = Some(ByteString::from_static(
            "more PUBLISH packets a second than max_publish_rate: this one was dropped",
        ));
        self.acks.push(ack_packet(qos, ack));
        Ok(())
    }

    /// Adds a publish's effects to the read's batch, noting whether a message crossed to
    /// another core at QoS 1/2 (or retained): its acknowledgement then waits for them.
    fn absorb(&mut self, effects: Effects) {
        if !self.routed_on {
            self.routed_on = effects.to_cores.iter().any(|(_, msg)| match msg {
                CoreMsg::Publish(m) => m.qos != QoS::AtMostOnce,
                CoreMsg::Retain(_) => true,
                _ => false,
            });
        }
        self.pending.extend(effects);
    }

    /// The conditions of a [`Step::Release`] hold (synced, durable): queues the held
    /// acknowledgements. Each is refused (v5 0x97) when a core refused to store a message
    /// since the read's first QoS 1/2 PUBLISH; a 3.x connection, which has no negative
    /// acknowledgement, ends instead ([`End::StoreFull`]), its refused acks unsent.
    pub fn release(&mut self, engine: &mut impl Engine) {
        let before = self.release_before.take();
        let refused = before.is_some_and(|before| engine.refused_since(&before));
        if refused {
            tracing::warn!(
                publishes = self.acks.len(),
                "QoS 1/2 publishes refused: a core could not store them (disk full)"
            );
        }
        let v5 = self.version.is_v5();
        for mut ack in self.acks.drain(..) {
            let (Packet::PubAck(a) | Packet::PubRec(a)) = &mut ack else {
                self.steps.push_back(Step::Send(ack));
                continue;
            };
            // Acks refused at the gate already let their QoS 2 id go in `handle_publish`.
            let refused_now = refused && a.reason_code == ReasonCode::SUCCESS;
            if refused_now {
                engine.count_refused();
                refuse_ack(a, StoreClosed::DiskFull);
            }
            let packet_id = a.packet_id;
            let stored = a.reason_code == ReasonCode::SUCCESS;
            if matches!(ack, Packet::PubRec(_)) {
                if stored {
                    engine.journal_qos2_received(&self.client_id, packet_id);
                } else if refused_now {
                    engine.refuse_qos2(&self.client_id, packet_id);
                }
            }
            if stored || v5 {
                self.steps.push_back(Step::Send(ack));
            }
        }
        if refused && !v5 {
            self.end_with(End::StoreFull(StoreClosed::DiskFull));
        }
    }

    /// A DISCONNECT from the client: a v5 one may set a new Session Expiry Interval
    /// (capped by ours), but not after the CONNECT asked for 0 [MQTT-3.14.2-2].
    pub(super) fn disconnected(&mut self, publish_will: bool, session_expiry: Option<u32>) -> End {
        if let Some(secs) = session_expiry {
            if self.zero_expiry_at_connect && secs != 0 {
                return End::Violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.14.2-2] Session Expiry set on DISCONNECT after 0 on CONNECT".into(),
                );
            }
            self.expiry = Duration::from_secs(u64::from(secs)).min(self.max_session_expiry);
        }
        End::ClientDisconnected { publish_will }
    }
}

fn ack_packet(qos: QoS, ack: Ack) -> Packet {
    if qos == QoS::ExactlyOnce {
        Packet::PubRec(ack)
    } else {
        Packet::PubAck(ack)
    }
}

/// Makes `ack` say that its message was not stored (MQTT 5.0 0x97 Quota exceeded).
fn refuse_ack(ack: &mut Ack, why: StoreClosed) {
    ack.reason_code = ReasonCode::QUOTA_EXCEEDED;
    ack.properties.reason_string = Some(ByteString::from_static(match why {
        StoreClosed::DiskFull => "the broker cannot store messages now: its disk is full",
        StoreClosed::StoredBytes => "the broker holds max_stored_bytes of messages already",
    }));
}

/// Applies a client's Topic Alias (MQTT 5.0 3.3.2.3.4): a topic with an alias sets it, an
/// empty topic with one uses it. The alias is removed, being meaningful on this
/// connection only.
fn resolve_topic_alias(
    aliases: &mut [Option<ByteString>],
    publish: &mut Publish,
) -> Result<(), End> {
    let Some(alias) = publish
        .properties
        .values_mut()
        .and_then(|values| values.topic_alias.take())
    else {
        return Ok(());
    };
    let Some(slot) = usize::from(alias)
        .checked_sub(1)
        .and_then(|i| aliases.get_mut(i))
    else {
        return Err(End::Violation(
            ReasonCode::TOPIC_ALIAS_INVALID,
            format!(
                "[MQTT-3.3.2-9] [MQTT-3.3.2-10] topic alias {alias} is not in 1..={}",
                aliases.len()
            ),
        ));
    };
    if !publish.topic.is_empty() {
        *slot = Some(publish.topic.clone());
        return Ok(());
    }
    match slot {
        Some(topic) => {
            publish.topic = topic.clone();
            Ok(())
        }
        None => Err(End::Violation(
            ReasonCode::PROTOCOL_ERROR,
            format!("topic alias {alias} used before a PUBLISH set it (MQTT 5.0 3.3.2.3.4)"),
        )),
    }
}
