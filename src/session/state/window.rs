//! A session's outbound window: the QoS 1/2 messages sent and not yet acknowledged, in the
//! order they were sent (MQTT 5.0 section 4.3, 4.4, 4.9).
//!
//! Every entry comes in through [`Session::enter_window`], and every new PUBLISH through
//! [`Session::put_in_flight`] on top of it, whether it comes straight from a delivery or
//! from the queue. Guarantees: a new PUBLISH goes out only while fewer messages than the
//! client's Receive Maximum are in flight [MQTT-4.9.0-2]; on a resume no more PUBLISH are
//! resent than the new Receive Maximum allows, the rest as acknowledgements free room
//! [MQTT-3.3.4-9]; packet ids in flight are unique [MQTT-2.2.1-3] and a new one follows
//! the newest; unacknowledged messages are resent first, with DUP, in their original
//! order [MQTT-4.4.0-1]; the queue moves into the window in its own order.

use std::time::Instant;

use super::{ack, publish_of, Change, Message, Messages, Queued, Session};
use crate::protocol::{Packet, PacketId, Publish, QoS, ReasonCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// QoS 1 sent, PUBACK outstanding; QoS 2 sent, PUBREC outstanding.
    Published,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP outstanding.
    Released,
}

#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub packet_id: PacketId,
    pub entry: Queued,
    pub state: Outbound,
    /// Sent on an earlier connection and not yet resent on this one: a resume resends only
    /// as many PUBLISH as the new Receive Maximum allows, the rest as acknowledgements
    /// free room [MQTT-3.3.4-9].
    pub awaiting_resend: bool,
}

impl Session {
    /// Whether a new PUBLISH may go out now: fewer messages in flight than the client's
    /// Receive Maximum [MQTT-4.9.0-2]. The held-back ones count: they go first.
    #[inline]
    pub(super) fn window_has_room(&self) -> bool {
        self.held().in_flight.len() < usize::from(self.receive_maximum)
    }

    /// Where the message in flight with `packet_id` sits in the window.
    fn in_flight_position(&self, packet_id: PacketId) -> Option<usize> {
        self.held()
            .in_flight
            .iter()
            .position(|f| f.packet_id == packet_id)
    }

    /// The first id from the one after the newest that nothing in flight holds.
    fn free_packet_id(&self) -> PacketId {
        let mut id = self.next_packet_id;
        loop {
            // The window is at most 65,535 wide, so a free id always exists.
            if let Some(pid) = PacketId::new(id) {
                if self.in_flight_position(pid).is_none() {
                    return pid;
                }
            }
            id = id.checked_add(1).unwrap_or(1);
        }
    }

    /// The one way into the window, for a live send and for recovery alike: the entry
    /// goes behind the others (the resend order), and the next id is looked for after its
    /// own, so that a restored session goes on numbering as the live one would have.
    #[inline]
    pub(super) fn enter_window(&mut self, in_flight: InFlight) {
        self.next_packet_id = in_flight.packet_id.get().checked_add(1).unwrap_or(1);
        self.held_mut().in_flight.push_back(in_flight);
    }

    /// Sends `entry` (QoS 1/2) as a new PUBLISH under a free packet id and keeps it in
    /// flight until acknowledged; the caller has checked [`Session::window_has_room`] and
    /// that nothing queued is older. `ids` are its Subscription Identifiers, already kept.
    #[inline]
    pub(super) fn put_in_flight(
        &mut self,
        entry: Queued,
        message: &Message,
        ids: Vec<u32>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Publish {
        debug_assert!(self.window_has_room(), "[MQTT-4.9.0-2] window full");
        debug_assert!(entry.qos() != QoS::AtMostOnce, "QoS 0 is never in flight");
        let packet_id = self.free_packet_id();
        self.enter_window(InFlight {
            packet_id,
            entry,
            state: Outbound::Published,
            awaiting_resend: false,
        });
        changes.push(Change::Sent {
            seq: entry.seq(),
            packet_id: Some(packet_id),
        });
        publish_of(message, entry, Some(packet_id), ids, now)
    }

    /// Moves queued messages into the window, oldest first, as far as it allows. A queued
    /// QoS 0 message goes out and is done; one expired or gone from the table is done
    /// unsent.
    pub fn drain(
        &mut self,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        while self.window_has_room() {
            let Some((entry, message)) = self.dequeue(messages) else {
                break;
            };
            let message = match message {
                Some(m) if !m.expired(now) => m,
                Some(_) => {
                    self.forget_ids(entry.seq());
                    changes.push(Change::Expired { seq: entry.seq() });
                    continue;
                }
                None => {
                    self.forget_ids(entry.seq());
                    changes.push(Change::Done { seq: entry.seq() });
                    continue;
                }
            };
            let ids = self.ids_of(entry.seq()).to_vec();
            if entry.qos() == QoS::AtMostOnce {
                self.forget_ids(entry.seq());
                out.push(Packet::Publish(publish_of(&message, entry, None, ids, now)));
                changes.push(Change::Sent {
                    seq: entry.seq(),
                    packet_id: None,
                });
                changes.push(Change::Done { seq: entry.seq() });
                continue;
            }
            let publish = self.put_in_flight(entry, &message, ids, now, changes);
            out.push(Packet::Publish(publish));
        }
    }

    /// The client (re)connected: resend what is unacknowledged, with DUP, in order
    /// [MQTT-4.4.0-1], then fill the window from the queue.
    pub fn resume(
        &mut self,
        receive_maximum: u16,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        self.receive_maximum = receive_maximum.max(1);
        let mut gone = Vec::new();
        let mut quota = usize::from(self.receive_maximum);
        for i in 0..self.held().in_flight.len() {
            let in_flight = self.held().in_flight[i];
            match in_flight.state {
                Outbound::Published if quota == 0 => {
                    self.held_mut().in_flight[i].awaiting_resend = true;
                }
                Outbound::Published => {
                    quota -= 1;
                    self.held_mut().in_flight[i].awaiting_resend = false;
                    match self.resend(in_flight, messages, now) {
                        Some(packet) => out.push(packet),
                        None => gone.push(in_flight.packet_id),
                    }
                }
                Outbound::Released => out.push(Packet::PubRel(ack(
                    in_flight.packet_id,
                    ReasonCode::SUCCESS,
                ))),
            }
        }
        for packet_id in gone {
            self.complete(packet_id, changes);
        }
        self.drain(messages, now, out, changes);
        self.compact();
    }

    /// The DUP PUBLISH for an unacknowledged message; `None` if its record vanished. A
    /// message already sent is resent even if it has expired since: the client may hold
    /// it half-acknowledged.
    fn resend(&self, in_flight: InFlight, messages: &dyn Messages, now: Instant) -> Option<Packet> {
        let seq = in_flight.entry.seq();
        let message = messages.get(seq)?;
        let ids = self.ids_of(seq).to_vec();
        let mut publish = publish_of(
            &message,
            in_flight.entry,
            Some(in_flight.packet_id),
            ids,
            now,
        );
        publish.dup = true;
        Some(Packet::Publish(publish))
    }

    /// Resends held-back unacknowledged messages, in order, as far as the window allows.
    fn resend_held(
        &mut self,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        loop {
            // A QoS 2 message counts against Receive Maximum until its PUBCOMP, PUBREC
            // or not [MQTT-4.9.0-2]: only the held-back ones are outside the window.
            let window = &self.held().in_flight;
            let sending = window.iter().filter(|f| !f.awaiting_resend).count();
            if sending >= usize::from(self.receive_maximum) {
                return;
            }
            let Some(i) = window.iter().position(|f| f.awaiting_resend) else {
                return;
            };
            let slot = &mut self.held_mut().in_flight[i];
            slot.awaiting_resend = false;
            let in_flight = *slot;
            match self.resend(in_flight, messages, now) {
                Some(packet) => out.push(packet),
                None => {
                    self.complete(in_flight.packet_id, changes);
                }
            }
        }
    }

    /// Ends the delivery in flight under `packet_id`; false if there is none.
    fn complete(&mut self, packet_id: PacketId, changes: &mut Vec<Change>) -> bool {
        let Some(pos) = self.in_flight_position(packet_id) else {
            return false;
        };
        if let Some(done) = self.held_mut().in_flight.remove(pos) {
            self.forget_ids(done.entry.seq());
            changes.push(Change::Done {
                seq: done.entry.seq(),
            });
        }
        true
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) ends a delivery.
    pub fn on_complete(
        &mut self,
        packet_id: PacketId,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        if self.complete(packet_id, changes) {
            self.resend_held(messages, now, out, changes);
            self.drain(messages, now, out, changes);
        }
    }

    /// PUBREC: the message is delivered; answer PUBREL [MQTT-4.3.3-4].
    #[allow(clippy::too_many_arguments)]
    pub fn on_pub_rec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        messages: &dyn Messages,
        now: Instant,
        out: &mut Vec<Packet>,
        changes: &mut Vec<Change>,
    ) {
        let Some(pos) = self.in_flight_position(packet_id) else {
            out.push(Packet::PubRel(ack(
                packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            )));
            return;
        };
        if reason_code.is_error() {
            // The receiver refused it: the delivery ends here (MQTT 5.0 4.3.3).
            self.complete(packet_id, changes);
            self.resend_held(messages, now, out, changes);
            self.drain(messages, now, out, changes);
            return;
        }
        let f = &mut self.held_mut().in_flight[pos];
        if f.state == Outbound::Published {
            f.state = Outbound::Released;
            f.awaiting_resend = false;
            changes.push(Change::Received { seq: f.entry.seq() });
        }
        out.push(Packet::PubRel(ack(packet_id, ReasonCode::SUCCESS)));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scenario::{steps, Run};
    use super::super::tests::{sent, Fixture};
    use super::super::Delivery;
    use super::*;

    #[test]
    fn mqtt_4_9_0_2_the_window_fills_to_receive_maximum_and_stays_full_while_messages_wait() {
        let mut f = Fixture::new(100);
        f.resume(3);
        let first: Vec<Publish> = (0..3)
            .map(|_| sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true)))
            .collect();
        for _ in 0..7 {
            let queued = f.deliver(QoS::ExactlyOnce, QoS::ExactlyOnce, true);
            assert!(matches!(queued, Delivery::Queued), "{queued:?}");
        }
        let mut window: Vec<PacketId> = first.iter().filter_map(|p| p.packet_id).collect();
        let mut order = Vec::new();
        while let Some(oldest) = window.first().copied() {
            window.remove(0);
            for packet in f.complete(oldest) {
                let Packet::Publish(p) = packet else {
                    panic!("{packet:?}")
                };
                order.push(p.payload.clone());
                window.extend(p.packet_id);
            }
            assert_eq!(f.session.in_flight(), window.len());
            assert!(f.session.in_flight() <= 3);
            if f.session.queued() > 0 {
                assert_eq!(f.session.in_flight(), 3, "full while messages wait");
            }
        }
        let expected: Vec<String> = (4..=10).map(|seq| format!("m{seq}")).collect();
        assert_eq!(
            order, expected,
            "the queue goes into the window in its own order"
        );
    }

    #[test]
    fn a_new_packet_id_follows_the_newest_and_skips_ids_in_flight() {
        let mut f = Fixture::new(100);
        f.resume(u16::MAX);
        f.session.next_packet_id = u16::MAX;
        let a = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        let b = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        assert_eq!(
            (a.packet_id, b.packet_id),
            (PacketId::new(u16::MAX), PacketId::new(1))
        );
        f.session.next_packet_id = u16::MAX;
        let c = sent(f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true));
        assert_eq!(c.packet_id, PacketId::new(2), "65535 and 1 are in flight");
    }

    proptest! {
        /// The scenario's client checks every packet: ids unique, never more PUBLISH
        /// awaiting an answer than Receive Maximum, new messages in delivery order.
        #[test]
        fn the_window_never_exceeds_receive_maximum_and_keeps_the_queue_order(steps in steps()) {
            let mut run = Run::new(5);
            for step in &steps {
                run.step(step);
            }
        }
    }
}
