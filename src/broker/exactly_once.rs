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

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::Record;
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
