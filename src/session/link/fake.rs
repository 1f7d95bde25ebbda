//! The engine the Link's tests drive it with: records the calls it makes, answers as
//! configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::*;
use crate::broker::CoreMsg;
use crate::protocol::{Properties, QoS, ReasonCode, SubAck};
use crate::session::Message;

/// Records the calls the link makes; answers as configured.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) calls: Vec<String>,
    /// Inbound QoS 2 ids awaiting PUBREL, as the session would count them.
    pub(super) awaiting: usize,
    pub(super) closed: Option<StoreClosed>,
    /// Whether a core refused to store a message since the snapshot.
    pub(super) refused: bool,
    /// Whether a publish goes to another core (at its own QoS).
    pub(super) to_other_core: bool,
    /// The expiry the engine grants (the asked one when `None`).
    pub(super) granted: Option<Duration>,
    pub(super) session_limit: bool,
    /// Which session expiry `disconnect` was told.
    pub(super) offline_expiry: Option<Duration>,
    /// When `schedule_will` was told to publish.
    pub(super) will_at: Option<Instant>,
    /// A topic the ACL refuses to the client.
    pub(super) denied: Option<&'static str>,
}

fn message(qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::from_static(b"x"),
        qos,
        retain: false,
        properties: Properties::default(),
        publisher: "c".into(),
        expires_at: None,
        origin: None,
    })
}

impl Engine for Fake {
    fn connect(
        &mut self,
        _: &ByteString,
        _: Option<&str>,
        _: bool,
        expiry: Duration,
        _: u16,
        _: Instant,
    ) -> Option<(bool, Duration, Vec<Packet>, Effects)> {
        self.calls.push("connect".into());
        if self.session_limit {
            return None;
        }
        let granted = self.granted.unwrap_or(expiry);
        Some((false, granted, Vec::new(), Effects::default()))
    }
    fn hold_will(&mut self, _: &ByteString, _: &Publish, delay: u32) {
        self.calls.push(format!("hold_will {delay}"));
    }
    fn schedule_will(&mut self, _: &ByteString, _: Publish, at: Instant) {
        self.calls.push("schedule_will".into());
        self.will_at = Some(at);
    }
    fn drop_will(&mut self, _: &ByteString) {
        self.calls.push("drop_will".into());
    }
    fn may_publish(&mut self, _: &ByteString, topic: &str) -> bool {
        self.denied != Some(topic)
    }
    fn publish(&mut self, _: &ByteString, publish: Publish, _: Instant) -> Effects {
        self.calls.push(format!("publish {}", publish.topic));
        let mut effects = Effects::default();
        if self.to_other_core {
            effects.to_cores.push((
                crate::ownership::CoreId(1),
                CoreMsg::Publish(message(publish.qos)),
            ));
        }
        effects
    }
    fn publish_exactly_once(
        &mut self,
        client_id: &ByteString,
        _: PacketId,
        publish: Publish,
        now: Instant,
    ) -> Effects {
        self.calls.push("exactly_once".into());
        self.publish(client_id, publish, now)
    }
    fn receive_qos2(&mut self, _: &ByteString, _: PacketId) -> bool {
        self.awaiting += 1;
        true
    }
    fn awaiting_release(&self, _: &ByteString) -> usize {
        self.awaiting
    }
    fn refuse_qos2(&mut self, _: &ByteString, id: PacketId) {
        self.calls.push(format!("refuse_qos2 {}", id.get()));
    }
    fn journal_qos2_received(&mut self, _: &ByteString, id: PacketId) {
        self.calls.push(format!("journal_qos2 {}", id.get()));
    }
    fn on_ack(&mut self, _: &ByteString, _: Packet, _: Instant) -> Effects {
        Effects::default()
    }
    fn subscribe(&mut self, _: &ByteString, subscribe: Subscribe, _: Instant) -> SubscribeOutcome {
        SubscribeOutcome {
            sub_ack: SubAck {
                packet_id: subscribe.packet_id,
                properties: Properties::default(),
                reason_codes: vec![ReasonCode::GRANTED_QOS_1],
            },
            effects: Effects::default(),
            interest_changed: true,
        }
    }
    fn unsubscribe(&mut self, _: &ByteString, _: Unsubscribe) -> (UnsubAck, Effects) {
        unreachable!("not used here")
    }
    fn disconnect(&mut self, _: &ByteString, expiry: Option<Duration>, _: Instant) -> Effects {
        self.offline_expiry = expiry;
        Effects::default()
    }
    fn store_closed(&self) -> Option<StoreClosed> {
        self.closed
    }
    fn refusals(&self) -> Vec<u64> {
        vec![0, 0]
    }
    fn refused_since(&self, _: &[u64]) -> bool {
        self.refused
    }
    fn count_refused(&mut self) {
        self.calls.push("count_refused".into());
    }
}
