//! Inbound QoS 2 exactly once across a crash.
//!
//! The publisher's core journals an inbound QoS 2 message of a persistent session
//! (QOS2_ROUTING, with an [`Origin`]) before routing it, and keeps it until QOS2_IN (written
//! just before PUBREC) or QOS2_RELEASED confirms it. A crash in between leaves it
//! unconfirmed: recovery routes it again and restores its packet id as awaiting PUBREL, so
//! the client's DUP retransmission is acknowledged without routing. Every core remembers
//! the origins it took lately ([`Origins`], also journaled inside MESSAGE records and
//! checkpoints) and skips a message it took already: once in each log, and once to each
//! subscriber. Shared-subscription and retained deliveries are not deduplicated.
//!
//! [`ExactlyOnce`] is what one core holds of this; the `Broker` calls here are the
//! connection's side of it (`receive_qos2`, `journal_qos2_received`, `refuse_qos2`), and
//! `Broker::publish_exactly_once` (in `publish.rs`) writes QOS2_ROUTING. Invariants: a message is unconfirmed
//! from the QOS2_ROUTING record written for it until the record that confirms it (or its
//! session's end), and every checkpoint restates each unconfirmed one; an origin is
//! admitted once within [`ORIGIN_WINDOW`]; `reroute` is filled only by recovery and emptied
//! by the one `route_again` that follows it.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::Record;
use super::Broker;
use crate::protocol::PacketId;
use crate::session::state::Origin;

/// How many origins a core remembers. A recovery routes again only the messages that were
/// between QOS2_ROUTING and QOS2_IN at the crash (at most the publishers' Receive Maximum
/// each), all of them recent.
pub const ORIGIN_WINDOW: usize = 1 << 16;

/// An inbound QoS 2 message waiting for its QOS2_IN: what the publisher's core keeps in
/// memory and what its QOS2_ROUTING record says (`Record::Qos2Routing` holds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub sid: u64,
    pub packet_id: u16,
    pub origin_seq: u64,
    pub expires_ms: u64,
    pub publisher: ByteString,
    /// The message as a v5 PUBLISH.
    pub publish: Bytes,
}

impl Routing {
    pub fn record(&self) -> Record {
        Record::Qos2Routing(self.clone())
    }
}

/// One core's part of exactly once: as a publisher's core, the inbound QoS 2 messages it
/// journaled and has not yet confirmed; as a subscriber's core, the origins it took.
#[derive(Debug, Default)]
pub(super) struct ExactlyOnce {
    /// Inbound QoS 2 messages of persistent sessions journaled but not yet confirmed:
    /// (sid, packet id) -> the QOS2_ROUTING record.
    unconfirmed: HashMap<(u64, u16), Routing>,
    /// Origins of the inbound QoS 2 messages this core took lately.
    origins: Origins,
    /// Set by recovery: unconfirmed inbound QoS 2 messages (publisher, record) waiting
    /// for `route_again`.
    reroute: Vec<(ByteString, Routing)>,
}

impl ExactlyOnce {
    /// Its QOS2_ROUTING record is in the log: the message is routed next.
    pub fn routing(&mut self, routing: Routing) {
        self.unconfirmed
            .insert((routing.sid, routing.packet_id), routing);
    }

    /// QOS2_IN or QOS2_RELEASED confirms session `sid`'s message `packet_id` (or is about
    /// to). Returns whether it was unconfirmed.
    pub fn confirm(&mut self, sid: u64, packet_id: u16) -> bool {
        self.unconfirmed.remove(&(sid, packet_id)).is_some()
    }

    /// Session `sid` ended: its messages need no confirmation any more.
    pub fn end_session(&mut self, sid: u64) {
        if !self.unconfirmed.is_empty() {
            self.unconfirmed.retain(|&(s, _), _| s != sid);
        }
    }

    /// A message from another core (or this one) with `origin`: false if this core took
    /// it already.
    pub fn admit(&mut self, origin: Origin) -> bool {
        self.origins.admit(origin)
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The QOS2_ROUTING records a checkpoint restates, oldest first.
    pub fn unconfirmed_records(&self) -> Vec<Record> {
        let mut routing: Vec<_> = self.unconfirmed.values().collect();
        routing.sort_by_key(|r| r.origin_seq);
        routing.into_iter().map(Routing::record).collect()
    }

    /// Recovery: the origins the log names, and the messages it left unconfirmed (with
    /// their publishers, oldest first), to be routed again by `route_again`.
    pub fn recovered(&mut self, origins: Origins, pending: Vec<(ByteString, Routing)>) {
        self.origins = origins;
        for (_, r) in &pending {
            self.unconfirmed.insert((r.sid, r.packet_id), r.clone());
        }
        self.reroute = pending;
    }

    /// Whether recovery left messages to route again.
    pub fn has_reroute(&self) -> bool {
        !self.reroute.is_empty()
    }

    /// The messages recovery left to route again, taken out once.
    pub fn take_reroute(&mut self) -> Vec<(ByteString, Routing)> {
        std::mem::take(&mut self.reroute)
    }

    /// The unconfirmed messages: (sid, packet id).
    #[cfg(test)]
    pub fn unconfirmed(&self) -> impl Iterator<Item = &(u64, u16)> {
        self.unconfirmed.keys()
    }
}

impl Broker {
    /// An inbound QoS 2 PUBLISH whose message could not be stored everywhere it was
    /// routed: its PUBREC says so (or the connection closes), so its packet id is let go
    /// at once and the journaled routing confirmed as ended, so that neither the client's
    /// next PUBLISH with this id nor a recovery takes it as already routed.
    pub fn refuse_qos2(&mut self, client_id: &ByteString, packet_id: PacketId) {
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return;
        };
        slot.session.on_pub_rel(packet_id);
        if let Some(sid) = slot.sid {
            if self.exactly_once.confirm(sid, packet_id.get()) {
                self.journal(&Record::Qos2Released {
                    sid,
                    packet_id: packet_id.get(),
                });
            }
        }
    }

    /// Whether an inbound QoS 2 PUBLISH is new (route it) or a retransmission.
    pub fn receive_qos2(&mut self, client_id: &ByteString, packet_id: PacketId) -> bool {
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return true;
        };
        slot.session.receive_qos2(packet_id)
    }

    /// Journals an inbound QoS 2 packet id as received, just before its PUBREC leaves:
    /// only once the message is in the log of every core it was routed to, so that a
    /// crash before this point makes the client resend (at worst a duplicate), never
    /// makes the broker drop the resent PUBLISH as already routed (a loss).
    pub fn journal_qos2_received(&mut self, client_id: &ByteString, packet_id: PacketId) {
        if let Some(sid) = self.sessions.get(client_id).and_then(|slot| slot.sid) {
            self.exactly_once.confirm(sid, packet_id.get());
            self.journal(&Record::Qos2In {
                sid,
                packet_id: packet_id.get(),
            });
        }
    }

    pub fn awaiting_release(&self, client_id: &ByteString) -> usize {
        self.sessions
            .get(client_id)
            .map_or(0, |slot| slot.session.awaiting_release())
    }
}

/// The origins a core took lately, oldest first.
#[derive(Debug, Default)]
pub struct Origins {
    seen: HashSet<Origin>,
    order: VecDeque<Origin>,
}

impl Origins {
    /// Records `origin`; false if it was seen already.
    pub fn admit(&mut self, origin: Origin) -> bool {
        if !self.seen.insert(origin) {
            return false;
        }
        self.order.push_back(origin);
        if self.order.len() > ORIGIN_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Whether `origin` was seen (within the window).
    pub fn contains(&self, origin: Origin) -> bool {
        self.seen.contains(&origin)
    }

    pub fn list(&self) -> Vec<Origin> {
        self.order.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_each_origin_once_within_the_window() {
        let mut origins = Origins::default();
        let o = |seq| Origin { core: 1, seq };
        assert!(origins.admit(o(5)));
        assert!(
            origins.admit(o(3)),
            "out of order is fine: a set, not a maximum"
        );
        assert!(!origins.admit(o(5)));
        assert!(origins.admit(Origin { core: 0, seq: 5 }));
        for seq in 10..10 + ORIGIN_WINDOW as u64 {
            assert!(origins.admit(o(seq)));
        }
        assert!(origins.admit(o(5)), "forgotten once out of the window");
        assert_eq!(origins.list().len(), ORIGIN_WINDOW);
    }
}
