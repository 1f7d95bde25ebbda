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
