//! The store gate: whether the broker takes new QoS 1/2 messages from clients.
//!
//! berth acknowledges a QoS 1/2 PUBLISH only once its message is in the log of every core
//! it was routed to. The gate closes, for every core at once, while
//! - any core's log cannot make its next segment (disk full: each log's background thread
//!   raises its [`RoomSignal`] and lowers it once a segment could be made), or
//! - the messages held for sessions, all cores together, weigh more than
//!   `max_stored_bytes` (each core publishes its own figure every 100 ms, `server::SHUTDOWN_POLL`, so the
//!   bound can be passed by what arrives within one period).
//!
//! While it is closed, a client's QoS 1/2 PUBLISH is refused before it is routed (v5:
//! PUBACK/PUBREC 0x97 Quota exceeded; 3.1.x, which has no negative acknowledgement: the
//! connection is closed unacknowledged, so the client publishes again later). Everything
//! else goes on: QoS 0, subscribing, delivering what is held. A message admitted just
//! before the gate closed is still stored while its core's head segment has room (a
//! quarter of a segment is kept for the records that follow sent data); one that no
//! longer fits is refused on that core (`Broker::counters.store_refused`), and
//! [`Refusals`] carries that back to the publisher's acknowledgement.
//!
//! **Invariant:** read on the publish path (two relaxed loads per core and a sum), written
//! only on a change of state or once per 100 ms per core: no atomic is written
//! per message.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::RoomSignal;

/// Why the gate is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A core's log cannot make its next segment.
    DiskFull,
    /// `max_stored_bytes` is reached.
    StoredBytes,
}

/// A core's figure on a cache line of its own, so that one core's update does not evict
/// the line the other cores read.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

pub struct StoreGate {
    lacking: Box<[RoomSignal]>,
    stored: Box<[Padded]>,
    /// 0: no broker-wide bound.
    max_stored_bytes: u64,
}

impl StoreGate {
    pub fn new(cores: usize, max_stored_bytes: u64) -> StoreGate {
        StoreGate {
            lacking: (0..cores).map(|_| RoomSignal::default()).collect(),
            stored: (0..cores).map(|_| Padded::default()).collect(),
            max_stored_bytes,
        }
    }

    /// The signal core `core`'s log raises while it lacks room.
    pub fn signal(&self, core: usize) -> RoomSignal {
        self.lacking[core].clone()
    }

    /// Core `core` holds `bytes` of messages for its sessions.
    pub fn set_stored(&self, core: usize, bytes: u64) {
        let slot = &self.stored[core].0;
        if slot.load(Ordering::Relaxed) != bytes {
            slot.store(bytes, Ordering::Relaxed);
        }
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }

    /// `None` while new QoS 1/2 messages are taken.
    pub fn closed(&self) -> Option<Closed> {
        if self.lacking.iter().any(RoomSignal::is_set) {
            return Some(Closed::DiskFull);
        }
        if self.max_stored_bytes > 0 && self.stored_bytes() >= self.max_stored_bytes {
            return Some(Closed::StoredBytes);
        }
        None
    }

    pub fn max_stored_bytes(&self) -> u64 {
        self.max_stored_bytes
    }
}

/// How many messages each core has refused to store so far, as this core last heard
/// (its own figure from its engine, the others' from their `Synced` replies). A batch
/// of publishes was stored everywhere it went if no figure rose between a snapshot taken
/// before the batch was routed and one taken after the sync that follows it: the counts
/// only grow, and a core answers a sync only after everything sent before it.
/// Conservative: a refusal of another publisher's message in the same window refuses this
/// batch too (the client publishes again: at worst a duplicate, never a loss).
#[derive(Debug, Default)]
pub struct Refusals {
    seen: Vec<u64>,
}

impl Refusals {
    pub fn new(cores: usize) -> Refusals {
        Refusals {
            seen: vec![0; cores],
        }
    }

    /// A core said it has refused `count` so far (replies may arrive out of order).
    pub fn heard(&mut self, core: usize, count: u64) {
        if let Some(seen) = self.seen.get_mut(core) {
            *seen = (*seen).max(count);
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.seen.clone()
    }

    /// Whether any core refused a message since `before`.
    pub fn rose_since(&self, before: &[u64]) -> bool {
        self.seen.iter().zip(before).any(|(now, then)| now > then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_closes_while_any_log_lacks_room_or_the_bound_is_reached() {
        let gate = StoreGate::new(2, 1000);
        assert_eq!(gate.closed(), None);
        gate.signal(1).set(true);
        assert_eq!(gate.closed(), Some(Closed::DiskFull));
        gate.signal(1).set(false);
        assert_eq!(gate.closed(), None);
        gate.set_stored(0, 600);
        assert_eq!(gate.closed(), None);
        gate.set_stored(1, 400);
        assert_eq!(gate.closed(), Some(Closed::StoredBytes));
        gate.set_stored(1, 399);
        assert_eq!(gate.closed(), None);
        let unbounded = StoreGate::new(1, 0);
        unbounded.set_stored(0, u64::MAX / 2);
        assert_eq!(unbounded.closed(), None);
    }

    #[test]
    fn a_refusal_counted_after_the_snapshot_is_seen_one_before_is_not() {
        let mut refusals = Refusals::new(3);
        refusals.heard(1, 4);
        let before = refusals.snapshot();
        refusals.heard(1, 3); // An older reply arriving late.
        refusals.heard(2, 0);
        assert!(!refusals.rose_since(&before));
        refusals.heard(2, 1);
        assert!(refusals.rose_since(&before));
    }
}
