//! A core's connection counters: plain cells the connection tasks add to, read for `$SYS`
//! and the admin API (no atomics: one core writes and reads them).

use std::cell::{Cell, RefCell};

use crate::broker::{CoreStats, Stat};
use crate::histogram::{Histogram, CHECKPOINT_SECONDS};
use crate::protocol::{Packet, ReasonCode};

/// CONNECTs refused, by the CONNACK's reason code (the 5.0 code; a 3.x client got its
/// return code mapped from it) and why (a limit's name, or the code's own name): a short
/// list, a few kinds ever happen on one broker.
pub type Refusals = Vec<(Refused, u64)>;

/// One kind of refused CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// `None`: nothing could be answered (a malformed CONNECT of an unknown level).
    pub code: Option<ReasonCode>,
    /// A limit's name (`client_id_length`, `banned`, `flapping`, ...) or the code's
    /// description, as the logs say it.
    pub why: &'static str,
}

/// Counters for this core; read and summed across cores for $SYS.
#[derive(Debug, Default)]
pub struct IoStats {
    pub accepted: Cell<u64>,
    pub handed_off: Cell<u64>,
    pub taken_in: Cell<u64>,
    pub connect_failures: Cell<u64>,
    /// What this core's connections read and wrote (`$SYS/broker/bytes/...`,
    /// `messages/...`, `publish/messages/...`).
    pub bytes_received: Cell<u64>,
    pub bytes_sent: Cell<u64>,
    pub packets_received: Cell<u64>,
    pub packets_sent: Cell<u64>,
    pub publish_received: Cell<u64>,
    pub publish_sent: Cell<u64>,
    /// PUBLISH packets not sent to a connected client: its outbox held `max_outbox_bytes`
    /// of QoS 0 already, or the packet was above its Maximum Packet Size.
    pub publish_dropped: Cell<u64>,
    /// Of those, QoS 0 dropped at a full outbox while the core was not behind (a subscriber
    /// slower than its peers) and while it was (overload: most outboxes full, `egress`).
    pub dropped_slow: Cell<u64>,
    pub dropped_overload: Cell<u64>,
    /// QoS 1/2 PUBLISH packets refused because the store could not take their message
    /// (disk full, `max_stored_bytes`): v5 0x97, or a closed 3.x connection.
    pub publish_refused: Cell<u64>,
    /// CONNECT packets decoded (`load/connections`).
    pub connects: Cell<u64>,
    pub refusals: RefCell<Refusals>,
    /// How long this core's completed checkpoints took, start to END.
    pub checkpoints: CheckpointTimes,
}

/// The checkpoint durations of one core (its own type so that `IoStats` stays `Default`).
#[derive(Debug)]
pub struct CheckpointTimes(pub RefCell<Histogram>);

impl Default for CheckpointTimes {
    fn default() -> CheckpointTimes {
        CheckpointTimes(RefCell::new(Histogram::new(CHECKPOINT_SECONDS)))
    }
}

impl IoStats {
    pub fn read(&self, bytes: usize) {
        add(&self.bytes_received, bytes as u64);
    }

    pub fn wrote(&self, bytes: usize) {
        add(&self.bytes_sent, bytes as u64);
    }

    /// Counts a packet from a client and hands it back.
    pub fn received(&self, packet: Packet) -> Packet {
        add(&self.packets_received, 1);
        if matches!(packet, Packet::Publish(_)) {
            add(&self.publish_received, 1);
        }
        packet
    }

    /// A CONNECT decoded (it goes to `received` as a packet of no other kind).
    pub fn received_connect(&self) {
        add(&self.packets_received, 1);
        add(&self.connects, 1);
    }

    /// A CONNECT refused (once per refusal, whether or not a CONNACK could be sent).
    pub fn refused(&self, refused: Refused) {
        let mut refusals = self.refusals.borrow_mut();
        match refusals.iter_mut().find(|(kind, _)| *kind == refused) {
            Some((_, count)) => *count += 1,
            None => refusals.push((refused, 1)),
        }
    }

    pub fn sent(&self, packet: &Packet) {
        add(&self.packets_sent, 1);
        if matches!(packet, Packet::Publish(_)) {
            add(&self.publish_sent, 1);
        }
    }

    pub fn publish_dropped(&self) {
        add(&self.publish_dropped, 1);
    }

    /// A QoS 0 PUBLISH dropped at a full outbox; `overload`: the core was behind.
    pub fn outbox_dropped(&self, overload: bool) {
        self.publish_dropped();
        match overload {
            true => add(&self.dropped_overload, 1),
            false => add(&self.dropped_slow, 1),
        }
    }

    pub fn publish_refused(&self) {
        add(&self.publish_refused, 1);
    }

    /// Fills in the connection figures of a `$SYS` snapshot.
    pub fn fill(&self, stats: &mut CoreStats) {
        stats.set(Stat::BytesReceived, self.bytes_received.get());
        stats.set(Stat::BytesSent, self.bytes_sent.get());
        stats.set(Stat::MessagesReceived, self.packets_received.get());
        stats.set(Stat::MessagesSent, self.packets_sent.get());
        stats.set(Stat::PublishReceived, self.publish_received.get());
        stats.set(Stat::PublishSent, self.publish_sent.get());
        stats.set(Stat::PublishRefused, self.publish_refused.get());
        stats.set(Stat::DroppedSlowSubscriber, self.dropped_slow.get());
        stats.set(Stat::DroppedOverload, self.dropped_overload.get());
        let outbox = self.dropped_slow.get() + self.dropped_overload.get();
        stats.set(
            Stat::DroppedTooLarge,
            self.publish_dropped.get().saturating_sub(outbox),
        );
        let disk_full = stats.get(Stat::DroppedDiskFull);
        stats.set(
            Stat::DroppedDiskFull,
            disk_full.wrapping_add(self.publish_refused.get()),
        );
        stats.set(Stat::SocketsAccepted, self.accepted.get());
        stats.set(Stat::Connects, self.connects.get());
        // The engine counts its own drops (queues, share groups); these add to them.
        let dropped = stats.get(Stat::PublishDropped);
        stats.set(
            Stat::PublishDropped,
            dropped.wrapping_add(self.publish_dropped.get()),
        );
    }
}

fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_count_in_the_total_and_by_cause() {
        let stats = IoStats::default();
        stats.outbox_dropped(false);
        stats.outbox_dropped(false);
        stats.outbox_dropped(true);
        stats.publish_dropped(); // a packet over the client's maximum: neither cause
        let mut figures = CoreStats::default();
        figures.set(Stat::PublishDropped, 10); // the engine's own drops
        stats.fill(&mut figures);
        assert_eq!(figures.get(Stat::PublishDropped), 14);
        assert_eq!(figures.get(Stat::DroppedSlowSubscriber), 2);
        assert_eq!(figures.get(Stat::DroppedOverload), 1);
        assert_eq!(figures.get(Stat::DroppedTooLarge), 1);
    }

    #[test]
    fn refusals_are_counted_by_code_and_reason() {
        let stats = IoStats::default();
        let banned = Refused {
            code: Some(ReasonCode::BANNED),
            why: "banned",
        };
        let flapping = Refused {
            code: Some(ReasonCode::BANNED),
            why: "flapping",
        };
        stats.refused(banned);
        stats.refused(flapping);
        stats.refused(banned);
        assert_eq!(*stats.refusals.borrow(), vec![(banned, 2), (flapping, 1)]);
    }
}
