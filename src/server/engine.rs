//! The engine a connection's [`Link`](crate::session::Link) calls: this core's broker, its
//! store gate and its refusal figures, behind `session::Engine`.
//!
//! **Invariant:** every call borrows the broker for that call only, so the link's calls
//! never hold a borrow across an await (the link never awaits; its driver does, between
//! calls).

use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::gate::Closed;
use super::local::Core;
use crate::broker::{Effects, SubscribeOutcome};
use crate::protocol::{Packet, PacketId, Publish, Subscribe, UnsubAck, Unsubscribe};
use crate::session::link::{Engine, LimitHit, StoreClosed};

pub struct CoreEngine<'a>(pub &'a Core);

impl Engine for CoreEngine<'_> {
    fn connect(
        &mut self,
        client_id: &ByteString,
        username: Option<&str>,
        clean_start: bool,
        expiry: Duration,
        receive_maximum: u16,
        now: Instant,
    ) -> Option<(bool, Duration, Vec<Packet>, Effects)> {
        self.0.broker.borrow_mut().connect_as(
            client_id,
            username,
            clean_start,
            expiry,
            receive_maximum,
            now,
        )
    }

    fn may_publish(&mut self, client_id: &ByteString, topic: &str) -> bool {
        self.0.broker.borrow_mut().may_publish(client_id, topic)
    }

    fn hold_will(&mut self, client_id: &ByteString, will: &Publish, delay_secs: u32) {
        self.0
            .broker
            .borrow_mut()
            .hold_will(client_id, will, delay_secs);
    }

    fn schedule_will(&mut self, client_id: &ByteString, will: Publish, at: Instant) {
        self.0
            .broker
            .borrow_mut()
            .schedule_will(client_id, will, at);
    }

    fn drop_will(&mut self, client_id: &ByteString) {
        self.0.broker.borrow_mut().drop_will(client_id);
    }

    fn publish(&mut self, client_id: &ByteString, publish: Publish, now: Instant) -> Effects {
        self.0.broker.borrow_mut().publish(client_id, publish, now)
    }

    fn publish_exactly_once(
        &mut self,
        client_id: &ByteString,
        packet_id: PacketId,
        publish: Publish,
        now: Instant,
    ) -> Effects {
        self.0
            .broker
            .borrow_mut()
            .publish_exactly_once(client_id, packet_id, publish, now)
    }

    fn receive_qos2(&mut self, client_id: &ByteString, packet_id: PacketId) -> bool {
        self.0
            .broker
            .borrow_mut()
            .receive_qos2(client_id, packet_id)
    }

    fn awaiting_release(&self, client_id: &ByteString) -> usize {
        self.0.broker.borrow().awaiting_release(client_id)
    }

    fn refuse_qos2(&mut self, client_id: &ByteString, packet_id: PacketId) {
        self.0.broker.borrow_mut().refuse_qos2(client_id, packet_id);
    }

    fn journal_qos2_received(&mut self, client_id: &ByteString, packet_id: PacketId) {
        self.0
            .broker
            .borrow_mut()
            .journal_qos2_received(client_id, packet_id);
    }

    fn on_ack(&mut self, client_id: &ByteString, packet: Packet, now: Instant) -> Effects {
        self.0.broker.borrow_mut().on_ack(client_id, packet, now)
    }

    fn subscribe(
        &mut self,
        client_id: &ByteString,
        subscribe: Subscribe,
        now: Instant,
    ) -> SubscribeOutcome {
        self.0
            .broker
            .borrow_mut()
            .subscribe(client_id, subscribe, now)
    }

    fn unsubscribe(
        &mut self,
        client_id: &ByteString,
        unsubscribe: Unsubscribe,
    ) -> (UnsubAck, Effects) {
        self.0
            .broker
            .borrow_mut()
            .unsubscribe(client_id, unsubscribe)
    }

    fn disconnect(
        &mut self,
        client_id: &ByteString,
        expiry: Option<Duration>,
        now: Instant,
    ) -> Effects {
        self.0
            .broker
            .borrow_mut()
            .disconnect(client_id, expiry, now)
    }

    fn store_closed(&self) -> Option<StoreClosed> {
        self.0.gate.closed().map(|why| match why {
            Closed::DiskFull => StoreClosed::DiskFull,
            Closed::StoredBytes => StoreClosed::StoredBytes,
        })
    }

    fn refusals(&self) -> Vec<u64> {
        self.0.refusals()
    }

    fn refused_since(&self, before: &[u64]) -> bool {
        self.0.refused_since(before)
    }

    fn count_refused(&mut self) {
        self.0.stats.publish_refused();
    }

    fn count_limit(&mut self, hit: LimitHit) {
        self.0.limits.count(hit);
    }
}
