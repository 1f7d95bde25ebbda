//! A session's delivery state: what it is subscribed to, what it has in flight in each
//! direction and what waits for it (MQTT 5.0 section 4.1, 4.3, 4.4, 4.9).
//!
//! Pure and clock-free: the caller says when things happen, and each call returns the
//! packets to send. The state outlives connections: a persistent session keeps its
//! subscriptions, unacknowledged messages and queue while its client is away, and
//! [`Session::resume`] replays them in order when the client returns.
//!
//! Invariants: never more QoS 1/2 PUBLISH in flight than the client's Receive Maximum
//! [MQTT-4.9.0-2]; packet ids in flight are unique [MQTT-2.2.1-3]; a QoS 2 message
//! received is routed once, however often its PUBLISH is retransmitted, until its PUBREL
//! [MQTT-4.3.3-10]; unacknowledged messages are resent first, with DUP, in their original
//! order [MQTT-4.4.0-1].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{
    Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, SubscriptionOptions,
};

/// A message as routed between sessions and cores: shared, never copied per subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The properties passed on to subscribers (Topic Alias and Subscription Identifiers
    /// removed; Message Expiry Interval rewritten on delivery).
    pub properties: Properties,
    /// The publishing client, for No Local.
    pub publisher: ByteString,
    /// When the Message Expiry Interval runs out, if it was set.
    pub expires_at: Option<Instant>,
}

/// A subscription as the session keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    /// QoS 1 sent, PUBACK outstanding; QoS 2 sent, PUBREC outstanding.
    Published,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP outstanding.
    Released,
}

#[derive(Debug, Clone)]
struct InFlight {
    packet_id: PacketId,
    publish: Publish,
    state: Outbound,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    pub subscriptions: HashMap<ByteString, Subscription>,
    /// The client's Receive Maximum for the current (or last) connection.
    receive_maximum: u16,
    next_packet_id: u16,
    in_flight: VecDeque<InFlight>,
    /// Messages waiting for room in the window (or for the client to come back).
    queue: VecDeque<(Arc<Message>, QoS, bool, Vec<u32>)>,
    /// Queue bound; the oldest message is dropped beyond it.
    max_queued: usize,
    pub dropped: u64,
    /// Inbound QoS 2 packet ids received and not yet released by PUBREL.
    awaiting_rel: HashSet<u16>,
}

impl Session {
    pub fn new(client_id: ByteString, max_queued: usize) -> Session {
        Session {
            client_id,
            subscriptions: HashMap::new(),
            receive_maximum: u16::MAX,
            next_packet_id: 1,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            max_queued,
            dropped: 0,
            awaiting_rel: HashSet::new(),
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A message matched one of this session's subscriptions. `online` says whether a
    /// connection is attached: offline sessions queue QoS 1/2 and drop QoS 0.
    pub fn deliver(
        &mut self,
        message: &Arc<Message>,
        subscription: &Subscription,
        ids: Vec<u32>,
        online: bool,
        now: Instant,
    ) -> Option<Packet> {
        if message.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let qos = message.qos.min(subscription.options.qos);
        let retain = subscription.options.retain_as_published && message.retain;
        if qos == QoS::AtMostOnce {
            return online
                .then(|| Packet::Publish(publish_of(message, qos, retain, None, ids, now)));
        }
        if online
            && self.in_flight.len() < usize::from(self.receive_maximum)
            && self.queue.is_empty()
        {
            return Some(self.send(message, qos, retain, ids, now));
        }
        if self.queue.len() >= self.max_queued {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back((message.clone(), qos, retain, ids));
        None
    }

    /// Sends a retained message on subscribe: retain flag set [MQTT-3.3.1-8], QoS capped
    /// by the subscription.
    pub fn deliver_retained(
        &mut self,
        message: &Arc<Message>,
        subscription: &Subscription,
        now: Instant,
    ) -> Option<Packet> {
        let ids = subscription.identifier.into_iter().collect();
        let qos = message.qos.min(subscription.options.qos);
        if message.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        if qos == QoS::AtMostOnce {
            return Some(Packet::Publish(publish_of(
                message, qos, true, None, ids, now,
            )));
        }
        if self.in_flight.len() < usize::from(self.receive_maximum) && self.queue.is_empty() {
            return Some(self.send(message, qos, true, ids, now));
        }
        self.queue.push_back((message.clone(), qos, true, ids));
        None
    }

    fn send(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        ids: Vec<u32>,
        now: Instant,
    ) -> Packet {
        let packet_id = self.allocate_packet_id();
        let publish = publish_of(message, qos, retain, Some(packet_id), ids, now);
        self.in_flight.push_back(InFlight {
            packet_id,
            publish: publish.clone(),
            state: Outbound::Published,
        });
        Packet::Publish(publish)
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            // The window is at most 65,535 wide, so a free id always exists.
            if let Some(pid) = PacketId::new(id) {
                if !self.in_flight.iter().any(|f| f.packet_id == pid) {
                    return pid;
                }
            }
        }
    }

    /// Moves queued messages into the window as far as it allows.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<Packet>) {
        while self.in_flight.len() < usize::from(self.receive_maximum) {
            let Some((message, qos, retain, ids)) = self.queue.pop_front() else {
                break;
            };
            if message.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            out.push(self.send(&message, qos, retain, ids, now));
        }
    }

    /// The client (re)connected: resend what is unacknowledged, with DUP, in order
    /// [MQTT-4.4.0-1], then fill the window from the queue.
    pub fn resume(&mut self, receive_maximum: u16, now: Instant, out: &mut Vec<Packet>) {
        self.receive_maximum = receive_maximum.max(1);
        for in_flight in &self.in_flight {
            out.push(match in_flight.state {
                Outbound::Published => {
                    let mut publish = in_flight.publish.clone();
                    publish.dup = true;
                    Packet::Publish(publish)
                }
                Outbound::Released => Packet::PubRel(ack(in_flight.packet_id, ReasonCode::SUCCESS)),
            });
        }
        self.drain(now, out);
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) ends a delivery.
    pub fn on_complete(&mut self, packet_id: PacketId, now: Instant, out: &mut Vec<Packet>) {
        if let Some(pos) = self.in_flight.iter().position(|f| f.packet_id == packet_id) {
            self.in_flight.remove(pos);
            self.drain(now, out);
        }
    }

    /// PUBREC: the message is delivered; answer PUBREL [MQTT-4.3.3-4].
    pub fn on_pub_rec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        now: Instant,
        out: &mut Vec<Packet>,
    ) {
        let Some(pos) = self.in_flight.iter().position(|f| f.packet_id == packet_id) else {
            out.push(Packet::PubRel(ack(
                packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            )));
            return;
        };
        if reason_code.is_error() {
            // The receiver refused it: the delivery ends here [MQTT-4.3.3-4 note].
            self.in_flight.remove(pos);
            self.drain(now, out);
            return;
        }
        self.in_flight[pos].state = Outbound::Released;
        out.push(Packet::PubRel(ack(packet_id, ReasonCode::SUCCESS)));
    }

    /// An inbound QoS 2 PUBLISH: returns whether to route it (false for a retransmission
    /// of one not yet released) [MQTT-4.3.3-10].
    pub fn receive_qos2(&mut self, packet_id: PacketId) -> bool {
        self.awaiting_rel.insert(packet_id.get())
    }

    pub fn awaiting_release(&self) -> usize {
        self.awaiting_rel.len()
    }

    /// PUBREL for an inbound QoS 2 message: answer PUBCOMP.
    pub fn on_pub_rel(&mut self, packet_id: PacketId) -> Packet {
        let reason = if self.awaiting_rel.remove(&packet_id.get()) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        Packet::PubComp(ack(packet_id, reason))
    }
}

pub fn ack(packet_id: PacketId, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason_code,
        properties: Properties::default(),
    }
}

fn publish_of(
    message: &Message,
    qos: QoS,
    retain: bool,
    packet_id: Option<PacketId>,
    ids: Vec<u32>,
    now: Instant,
) -> Publish {
    let mut properties = message.properties.clone();
    properties.subscription_identifiers = ids;
    if let Some(at) = message.expires_at {
        // [MQTT-3.3.2-6] pass on the time that is left, not the original interval.
        properties.message_expiry_interval =
            Some(at.saturating_duration_since(now).as_secs().max(1) as u32);
    }
    Publish {
        dup: false,
        qos,
        retain,
        topic: message.topic.clone(),
        packet_id,
        properties,
        payload: message.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            properties: Properties::default(),
            publisher: "p".into(),
            expires_at: None,
        })
    }

    fn sub(qos: QoS) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            identifier: None,
        }
    }

    fn pid(p: &Packet) -> PacketId {
        match p {
            Packet::Publish(p) => p.packet_id.unwrap(),
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
        let mut s = Session::new("c".into(), 10);
        let now = Instant::now();
        match s.deliver(
            &message(QoS::ExactlyOnce),
            &sub(QoS::AtLeastOnce),
            vec![],
            true,
            now,
        ) {
            Some(Packet::Publish(p)) => assert_eq!(p.qos, QoS::AtLeastOnce),
            other => panic!("{other:?}"),
        }
        match s.deliver(
            &message(QoS::AtMostOnce),
            &sub(QoS::ExactlyOnce),
            vec![],
            true,
            now,
        ) {
            Some(Packet::Publish(p)) => assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mqtt_4_9_0_2_window_holds_receive_maximum_then_queues() {
        let mut s = Session::new("c".into(), 10);
        let now = Instant::now();
        let mut out = Vec::new();
        s.resume(2, now, &mut out);
        let a = s
            .deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                true,
                now,
            )
            .unwrap();
        let _b = s
            .deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                true,
                now,
            )
            .unwrap();
        assert!(s
            .deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                true,
                now
            )
            .is_none());
        assert_eq!((s.in_flight(), s.queued()), (2, 1));
        s.on_complete(pid(&a), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((s.in_flight(), s.queued()), (2, 0));
    }

    #[test]
    fn mqtt_4_4_0_1_resume_resends_unacknowledged_with_dup_in_order() {
        let mut s = Session::new("c".into(), 10);
        let now = Instant::now();
        let first = s
            .deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                true,
                now,
            )
            .unwrap();
        let second = s
            .deliver(
                &message(QoS::ExactlyOnce),
                &sub(QoS::ExactlyOnce),
                vec![],
                true,
                now,
            )
            .unwrap();
        let mut out = Vec::new();
        s.on_pub_rec(pid(&second), ReasonCode::SUCCESS, now, &mut out);
        assert!(matches!(out.pop(), Some(Packet::PubRel(_))));
        // Offline: QoS 1 queues, QoS 0 is dropped.
        assert!(s
            .deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                false,
                now
            )
            .is_none());
        assert!(s
            .deliver(
                &message(QoS::AtMostOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                false,
                now
            )
            .is_none());
        s.resume(10, now, &mut out);
        assert_eq!(out.len(), 3);
        match &out[0] {
            Packet::Publish(p) => assert!(p.dup && p.packet_id == Some(pid(&first))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[1], Packet::PubRel(a) if a.packet_id == pid(&second)));
        assert!(matches!(&out[2], Packet::Publish(p) if !p.dup));
    }

    #[test]
    fn mqtt_4_3_3_10_inbound_qos2_routes_once_until_released() {
        let mut s = Session::new("c".into(), 10);
        let id = PacketId::new(7).unwrap();
        assert!(s.receive_qos2(id));
        assert!(!s.receive_qos2(id));
        assert!(
            matches!(s.on_pub_rel(id), Packet::PubComp(a) if a.reason_code == ReasonCode::SUCCESS)
        );
        assert!(s.receive_qos2(id));
        assert!(
            matches!(s.on_pub_rel(PacketId::new(8).unwrap()), Packet::PubComp(a) if a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
        );
    }

    #[test]
    fn queue_overflow_drops_oldest_and_counts() {
        let mut s = Session::new("c".into(), 2);
        let now = Instant::now();
        for _ in 0..5 {
            s.deliver(
                &message(QoS::AtLeastOnce),
                &sub(QoS::AtLeastOnce),
                vec![],
                false,
                now,
            );
        }
        assert_eq!((s.queued(), s.dropped), (2, 3));
    }
}
