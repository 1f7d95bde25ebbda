//! The session state's tests: a message table as a map, a fixture that delivers
//! numbered messages and drives the session as a connection would, and the tests that
//! cross the parts (delivery, window, queue, resume together).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::protocol::{Properties, Publish, ReasonCode};

/// The message table, as a map.
#[derive(Default)]
pub(super) struct Table(RefCell<std::collections::HashMap<Seq, Arc<Message>>>);

impl Messages for Table {
    fn get(&self, seq: Seq) -> Option<Arc<Message>> {
        self.0.borrow().get(&seq).cloned()
    }
    fn size(&self, seq: Seq) -> usize {
        self.get(seq).map_or(0, |m| m.payload.len())
    }
}

pub(super) struct Fixture {
    pub(super) session: Session,
    pub(super) table: Table,
    pub(super) next: Seq,
    pub(super) limits: QueueLimits,
    pub(super) changes: Vec<Change>,
    pub(super) now: Instant,
}

impl Fixture {
    pub(super) fn new(max_messages: usize) -> Fixture {
        Fixture {
            session: Session::new("c".into()),
            table: Table::default(),
            next: 1,
            limits: QueueLimits {
                max_messages,
                ..QueueLimits::default()
            },
            changes: Vec::new(),
            now: Instant::now(),
        }
    }

    pub(super) fn deliver(&mut self, publish_qos: QoS, sub_qos: QoS, online: bool) -> Delivery {
        let seq = self.next;
        self.next += 1;
        let message = Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::from(format!("m{seq}")),
            qos: publish_qos,
            retain: false,
            properties: Properties::default(),
            publisher: "p".into(),
            expires_at: None,
            origin: None,
        });
        self.table.0.borrow_mut().insert(seq, message.clone());
        let entry = Queued::new(seq, publish_qos.min(sub_qos), false);
        self.session.deliver(
            entry,
            &message,
            vec![],
            online,
            &self.limits,
            &self.table,
            self.now,
            &mut self.changes,
        )
    }

    pub(super) fn resume(&mut self, receive_maximum: u16) -> Vec<Packet> {
        let mut out = Vec::new();
        self.session.resume(
            receive_maximum,
            &self.table,
            self.now,
            &mut out,
            &mut self.changes,
        );
        out
    }

    pub(super) fn complete(&mut self, packet_id: PacketId) -> Vec<Packet> {
        let mut out = Vec::new();
        self.session.on_complete(
            packet_id,
            &self.table,
            self.now,
            &mut out,
            &mut self.changes,
        );
        out
    }
}

/// An idle session holds no delivery allocation; one with messages does, and gives it
/// back once they are acknowledged and it is compacted (as at disconnect).
#[test]
fn an_idle_session_holds_no_delivery_state() {
    assert!(
        std::mem::size_of::<Session>() <= 96,
        "{}",
        std::mem::size_of::<Session>()
    );
    let mut f = Fixture::new(10);
    assert!(f.resume(10).is_empty());
    assert!(
        f.session.held.is_none(),
        "resume with nothing held keeps nothing"
    );
    assert!(matches!(
        f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false),
        Delivery::Queued
    ));
    assert!(f.session.held.is_some());
    assert_eq!(f.session.queued(), 1);
    let out = f.resume(10);
    let Some(Packet::Publish(p)) = out.first() else {
        panic!("the queued message is sent on resume")
    };
    f.session.compact();
    assert!(f.session.held.is_some(), "in flight: still held");
    f.complete(p.packet_id.unwrap());
    assert_eq!(f.session.in_flight(), 0);
    f.session.compact();
    assert!(f.session.held.is_none());
}

pub(super) fn sent(d: Delivery) -> Publish {
    match d {
        Delivery::Sent(Packet::Publish(p)) | Delivery::InFlight(Packet::Publish(p)) => p,
        other => panic!("not sent: {other:?}"),
    }
}

#[test]
fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let mut f = Fixture::new(10);
    let p = sent(f.deliver(QoS::ExactlyOnce, QoS::AtLeastOnce, true));
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let p = sent(f.deliver(QoS::AtMostOnce, QoS::ExactlyOnce, true));
    assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None));
}

#[test]
fn mqtt_4_9_0_2_window_holds_receive_maximum_then_queues() {
    let mut f = Fixture::new(10);
    f.resume(2);
    let a = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
    let _b = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
    assert!(matches!(
        f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true),
        Delivery::Queued
    ));
    assert_eq!((f.session.in_flight(), f.session.queued()), (2, 1));
    let out = f.complete(a.packet_id.unwrap());
    assert_eq!(out.len(), 1);
    assert_eq!((f.session.in_flight(), f.session.queued()), (2, 0));
    assert!(f.changes.contains(&Change::Done { seq: 1 }));
    assert!(f.changes.contains(&Change::Sent {
        seq: 3,
        packet_id: PacketId::new(3)
    }));
}

#[test]
fn mqtt_4_4_0_1_resume_resends_unacknowledged_with_dup_in_order() {
    let mut f = Fixture::new(10);
    let first = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
    let second = sent(f.deliver(QoS::ExactlyOnce, QoS::ExactlyOnce, true));
    let mut out = Vec::new();
    f.session.on_pub_rec(
        second.packet_id.unwrap(),
        ReasonCode::SUCCESS,
        &f.table,
        f.now,
        &mut out,
        &mut f.changes,
    );
    assert!(matches!(out.pop(), Some(Packet::PubRel(_))));
    // Offline: QoS 1 queues, QoS 0 is not kept.
    assert!(matches!(
        f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false),
        Delivery::Queued
    ));
    assert!(matches!(
        f.deliver(QoS::AtMostOnce, QoS::AtLeastOnce, false),
        Delivery::Skipped { refused: false }
    ));
    let out = f.resume(10);
    assert_eq!(out.len(), 3);
    match &out[0] {
        Packet::Publish(p) => assert!(p.dup && p.packet_id == first.packet_id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[1], Packet::PubRel(a) if Some(a.packet_id) == second.packet_id));
    assert!(matches!(&out[2], Packet::Publish(p) if !p.dup && p.payload == "m3"));
}

#[test]
fn mqtt_3_3_4_9_resume_resends_no_more_than_the_new_receive_maximum() {
    let mut f = Fixture::new(100);
    f.resume(10);
    let sent: Vec<Publish> = (0..6)
        .map(|_| sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true)))
        .collect();
    let out = f.resume(4);
    let resent: Vec<_> = out
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.dup, p.packet_id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        resent,
        sent[..4]
            .iter()
            .map(|p| (true, p.packet_id))
            .collect::<Vec<_>>()
    );
    // Each acknowledgement lets one held-back message through, with its own id.
    let out = f.complete(sent[0].packet_id.unwrap());
    assert!(matches!(&out[..], [Packet::Publish(p)] if p.dup && p.packet_id == sent[4].packet_id));
    let out = f.complete(sent[1].packet_id.unwrap());
    assert!(matches!(&out[..], [Packet::Publish(p)] if p.dup && p.packet_id == sent[5].packet_id));
    let out = f.complete(sent[2].packet_id.unwrap());
    assert!(out.is_empty());
}

#[test]
fn offline_qos0_is_queued_only_when_configured() {
    let mut f = Fixture::new(10);
    f.limits.queue_qos0 = true;
    assert!(matches!(
        f.deliver(QoS::AtMostOnce, QoS::AtLeastOnce, false),
        Delivery::Queued
    ));
    let out = f.resume(10);
    assert!(
        matches!(&out[..], [Packet::Publish(p)] if p.qos == QoS::AtMostOnce && p.packet_id.is_none())
    );
    assert!(f.changes.contains(&Change::Done { seq: 1 }));
    assert_eq!(f.session.queued() + f.session.in_flight(), 0);
}

/// A message delivered while others wait goes behind them, even with room in the window
/// (the window's room is taken by the queue first) [MQTT-4.6.0-6].
#[test]
fn mqtt_4_6_0_6_a_delivery_never_overtakes_the_queue() {
    let mut f = Fixture::new(10);
    assert!(matches!(
        f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false),
        Delivery::Queued
    ));
    assert!(matches!(
        f.deliver(QoS::ExactlyOnce, QoS::ExactlyOnce, true),
        Delivery::Queued
    ));
    let out = f.resume(10);
    let payloads: Vec<_> = out
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.payload.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads, ["m1", "m2"]);
}
