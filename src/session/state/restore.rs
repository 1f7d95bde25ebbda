//! Recovery: rebuilding a session's delivery state from its log records, in log order
//! (ARCHITECTURE.md, "Recovery rules").
//!
//! A MESSAGE record naming the session queues the message ([`Session::restore_queued`]);
//! SENT moves it into the window under its packet id, RECEIVED marks it PUBREL owed, DONE
//! ends it; a SNAPSHOT restates window entries directly ([`Session::restore_in_flight`]).
//! Entries reach the window through the same [`Session::enter_window`] as a live send, so
//! a restored session holds the same messages in flight, in the same order, and goes on
//! numbering packet ids as the live one would have. No limit is applied: what was granted
//! before the crash comes back, and the next resume holds back what the new Receive
//! Maximum does not allow.

use super::{InFlight, Outbound, Queued, Seq, Session};
use crate::protocol::PacketId;

impl Session {
    /// A queued reference, as the log recorded it.
    pub fn restore_queued(&mut self, entry: Queued, ids: Vec<u32>, size: usize) {
        self.push_queued(entry, ids, size);
    }

    /// A queued message was sent with `packet_id` (QoS 1/2) or at QoS 0 (None).
    pub fn restore_sent(&mut self, seq: Seq, packet_id: Option<PacketId>, size: usize) {
        let Some(pos) = self.held().queue.iter().position(|q| q.seq() == seq) else {
            return;
        };
        let held = self.held_mut();
        let Some(entry) = held.queue.remove(pos) else {
            return;
        };
        held.queued_bytes = held.queued_bytes.saturating_sub(size);
        if let Some(packet_id) = packet_id {
            self.enter_window(InFlight {
                packet_id,
                entry,
                state: Outbound::Published,
                awaiting_resend: false,
            });
        }
    }

    /// A window entry as a SNAPSHOT restated it.
    pub fn restore_in_flight(&mut self, in_flight: InFlight, ids: Vec<u32>) {
        self.keep_ids(in_flight.entry.seq(), ids);
        self.enter_window(in_flight);
    }

    /// PUBREC was received for the message in flight: PUBREL is owed.
    pub fn restore_received(&mut self, seq: Seq) {
        let Some(held) = self.held.as_deref_mut() else {
            return;
        };
        if let Some(f) = held.in_flight.iter_mut().find(|f| f.entry.seq() == seq) {
            f.state = Outbound::Released;
        }
    }

    /// The reference ended (acknowledged or dropped). Returns whether it was held.
    pub fn restore_done(&mut self, seq: Seq, size: usize) -> bool {
        self.forget_ids(seq);
        let Some(held) = self.held.as_deref_mut() else {
            return false;
        };
        if let Some(pos) = held.in_flight.iter().position(|f| f.entry.seq() == seq) {
            held.in_flight.remove(pos);
            return true;
        }
        if let Some(pos) = held.queue.iter().position(|q| q.seq() == seq) {
            held.queue.remove(pos);
            held.queued_bytes = held.queued_bytes.saturating_sub(size);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scenario::{holdings, size_of, steps, Record, Run};
    use super::super::tests::Fixture;
    use super::super::Delivery;
    use super::*;
    use crate::protocol::{Packet, QoS};

    /// A fresh session rebuilt from `log` as recovery does.
    fn replay(log: &[Record]) -> Session {
        let mut session = Session::new("c".into());
        for record in log {
            match *record {
                Record::Message(entry) => {
                    session.restore_queued(entry, Vec::new(), size_of(entry.seq()))
                }
                Record::Sent(seq, packet_id) => session.restore_sent(seq, packet_id, size_of(seq)),
                Record::Received(seq) => session.restore_received(seq),
                Record::Done(seq) => {
                    session.restore_done(seq, size_of(seq));
                }
            }
        }
        session
    }

    /// A fresh session rebuilt from a SNAPSHOT of `live`.
    fn from_snapshot(live: &Session) -> Session {
        let mut session = Session::new("c".into());
        for f in live.in_flight_entries() {
            session.restore_in_flight(*f, Vec::new());
        }
        for entry in live.queued_entries() {
            session.restore_queued(entry, Vec::new(), size_of(entry.seq()));
        }
        session
    }

    /// The client comes back with `receive_maximum` and one more message is delivered:
    /// what it is sent, and what the session reports.
    fn come_back(f: &mut Fixture, receive_maximum: u16) -> Back {
        let resumed = f.resume(receive_maximum);
        let new = match f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, true) {
            Delivery::InFlight(packet) => Some(packet),
            _ => None,
        };
        (resumed, new, std::mem::take(&mut f.changes))
    }

    /// `packets` with the ids of new (not DUP) PUBLISH taken out.
    fn without_new_ids(mut packets: Vec<Packet>) -> Vec<Packet> {
        for packet in &mut packets {
            if let Packet::Publish(p) = packet {
                if !p.dup {
                    p.packet_id = None;
                }
            }
        }
        packets
    }

    /// What [`come_back`] sees: the packets of the resume, the new message's PUBLISH (if
    /// the window had room) and the changes reported.
    type Back = (Vec<Packet>, Option<Packet>, Vec<super::super::Change>);

    #[test]
    fn a_sent_record_moves_the_message_from_the_queue_into_the_window() {
        let mut s = Session::new("c".into());
        s.restore_queued(Queued::new(1, QoS::AtLeastOnce, false), Vec::new(), 2);
        s.restore_queued(Queued::new(2, QoS::ExactlyOnce, false), vec![7], 2);
        s.restore_sent(2, PacketId::new(9), 2);
        s.restore_received(2);
        assert_eq!(
            holdings(&s),
            (vec![(9, 2, 2, Outbound::Released)], vec![1], 2)
        );
        assert_eq!(s.ids_of(2), [7]);
        assert_eq!(
            s.next_packet_id, 10,
            "numbering goes on after the restored id"
        );
        assert!(s.restore_done(2, 2) && s.restore_done(1, 2) && !s.restore_done(1, 2));
        assert_eq!(holdings(&s), (vec![], vec![], 0));
    }

    proptest! {
        /// Replaying the log of a live session (or restating it in a snapshot) puts the
        /// same messages in flight, under the same ids and in the same order, and queues
        /// the rest; a client that comes back is sent the same packets either way.
        #[test]
        fn restore_puts_the_same_messages_in_flight_as_the_live_session(
            steps in steps(),
            receive_maximum in 1u16..5,
        ) {
            let mut run = Run::new(5);
            for step in &steps {
                run.step(step);
            }
            let live = holdings(&run.f.session);
            let replayed = replay(&run.log);
            prop_assert_eq!(&holdings(&replayed), &live);
            let snapshot = from_snapshot(&run.f.session);
            prop_assert_eq!(&holdings(&snapshot), &live);

            let next = run.f.next;
            let expected = come_back(&mut run.f, receive_maximum);
            run.f.session = replayed;
            run.f.next = next;
            prop_assert_eq!(come_back(&mut run.f, receive_maximum), expected.clone());
            // A snapshot restates only the ids in flight, so the ids of new messages may
            // differ from the live session's; all else is the same.
            run.f.session = snapshot;
            run.f.next = next;
            let (resumed, _, _) = come_back(&mut run.f, receive_maximum);
            prop_assert_eq!(without_new_ids(resumed), without_new_ids(expected.0));
        }
    }
}
