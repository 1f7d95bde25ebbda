//! A core's connection counters: plain cells the connection tasks add to, read for `$SYS`
//! and the admin API (no atomics: one core writes and reads them).

use std::cell::Cell;

use crate::broker::{CoreStats, Stat};
use crate::protocol::Packet;

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
    }
}
