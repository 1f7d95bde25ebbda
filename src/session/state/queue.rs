//! A session's queue: the messages that wait for room in its window or for its client to
//! come back, eight bytes each, under the limits the operator set.
//!
//! Guarantees: entries leave in the order they came (a full queue drops from the front
//! or refuses at the back, never reorders); never more than `max_messages` entries, nor
//! more than `max_bytes` of payload unless a single entry alone is larger; every entry
//! dropped is reported ([`Change::Dropped`]) and counted in `Session::dropped`.

use std::sync::Arc;

use super::{Change, Delivery, Message, Messages, Seq, Session};
use crate::protocol::QoS;

/// One message waiting for (or in) delivery to one session, packed into 8 bytes: the
/// message's [`Seq`] in the low 61 bits, the delivery QoS and the retain flag above. This
/// is all a queue holds per message; the message itself lives once in the core's table
/// (and log), however many sessions it waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Queued(u64);

impl Queued {
    const SEQ_BITS: u32 = 61;

    #[inline]
    pub fn new(seq: Seq, qos: QoS, retain: bool) -> Queued {
        debug_assert!(seq < 1 << Self::SEQ_BITS);
        Queued(seq | (qos as u64) << Self::SEQ_BITS | u64::from(retain) << 63)
    }

    #[inline]
    pub fn seq(self) -> Seq {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }

    #[inline]
    pub fn qos(self) -> QoS {
        match (self.0 >> Self::SEQ_BITS) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    #[inline]
    pub fn retain(self) -> bool {
        self.0 >> 63 == 1
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} q{} r{}",
            self.seq(),
            self.qos() as u8,
            self.retain()
        )
    }
}

/// What happens when a queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Drop the oldest queued message to make room (counted).
    #[default]
    DropOldest,
    /// Refuse the new message (counted).
    RefuseNewest,
}

/// Bounds on one session's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub overflow: Overflow,
    /// Whether QoS 0 messages wait for an offline session.
    pub queue_qos0: bool,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_messages: 1000,
            max_bytes: usize::MAX,
            overflow: Overflow::DropOldest,
            queue_qos0: false,
        }
    }
}

impl Session {
    /// Queues `entry` (a payload of `size` bytes) behind what waits already, making room
    /// as `limits.overflow` says: `Queued`, or `Skipped { refused: true }`.
    #[inline]
    pub(super) fn enqueue(
        &mut self,
        entry: Queued,
        size: usize,
        ids: Vec<u32>,
        limits: &QueueLimits,
        messages: &dyn Messages,
        changes: &mut Vec<Change>,
    ) -> Delivery {
        while self.held().queue.len() >= limits.max_messages
            || (!self.held().queue.is_empty() && self.held().queued_bytes + size > limits.max_bytes)
        {
            if limits.overflow == Overflow::RefuseNewest {
                self.dropped += 1;
                return Delivery::Skipped { refused: true };
            }
            let Some(oldest) = self.held_mut().queue.pop_front() else {
                break;
            };
            let held = self.held_mut();
            held.queued_bytes = held
                .queued_bytes
                .saturating_sub(messages.size(oldest.seq()));
            self.forget_ids(oldest.seq());
            self.dropped += 1;
            changes.push(Change::Dropped { seq: oldest.seq() });
        }
        self.push_queued(entry, ids, size);
        Delivery::Queued
    }

    /// Puts `entry` at the back of the queue, whatever its limits (a live delivery has
    /// made room; recovery restores what was granted).
    #[inline]
    pub(super) fn push_queued(&mut self, entry: Queued, ids: Vec<u32>, size: usize) {
        self.keep_ids(entry.seq(), ids);
        let held = self.held_mut();
        held.queue.push_back(entry);
        held.queued_bytes += size;
    }

    /// Takes the oldest queued entry, with its message if the table still has it.
    #[inline]
    pub(super) fn dequeue(
        &mut self,
        messages: &dyn Messages,
    ) -> Option<(Queued, Option<Arc<Message>>)> {
        // Nothing held, nothing to take: no allocation for an idle session's resume.
        let held = self.held.as_deref_mut()?;
        let entry = held.queue.pop_front()?;
        let message = messages.get(entry.seq());
        held.queued_bytes = held
            .queued_bytes
            .saturating_sub(message.as_ref().map_or(0, |m| m.payload.len()));
        Some((entry, message))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    #[test]
    fn queued_entry_packs_seq_qos_and_retain_into_eight_bytes() {
        assert_eq!(std::mem::size_of::<Queued>(), 8);
        let q = Queued::new((1 << 61) - 1, QoS::ExactlyOnce, true);
        assert_eq!(
            (q.seq(), q.qos(), q.retain()),
            ((1 << 61) - 1, QoS::ExactlyOnce, true)
        );
        let q = Queued::new(5, QoS::AtMostOnce, false);
        assert_eq!((q.seq(), q.qos(), q.retain()), (5, QoS::AtMostOnce, false));
    }

    #[test]
    fn queue_overflow_drops_oldest_and_counts() {
        let mut f = Fixture::new(2);
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        assert_eq!((f.session.queued(), f.session.dropped), (2, 3));
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!(kept, vec![4, 5]);
        assert_eq!(
            f.changes,
            vec![
                Change::Dropped { seq: 1 },
                Change::Dropped { seq: 2 },
                Change::Dropped { seq: 3 }
            ]
        );
    }

    #[test]
    fn queue_overflow_can_refuse_the_newest_instead() {
        let mut f = Fixture::new(2);
        f.limits.overflow = Overflow::RefuseNewest;
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!((kept, f.session.dropped), (vec![1, 2], 3));
    }

    #[test]
    fn queued_bytes_limit_drops_oldest() {
        let mut f = Fixture::new(100);
        f.limits.max_bytes = 5; // payloads are "m1".."m9": 2 bytes each
        for _ in 0..5 {
            f.deliver(QoS::AtLeastOnce, QoS::AtLeastOnce, false);
        }
        let kept: Vec<Seq> = f.session.queued_entries().map(Queued::seq).collect();
        assert_eq!(kept, vec![4, 5]);
    }
}
