//! A connection's outbox: the packets waiting for its writer.
//!
//! QoS 1 and 2 deliveries are bounded elsewhere (the client's Receive Maximum window,
//! then the session queue), and replies are bounded by what the client sends. QoS 0
//! deliveries are not: a subscriber that stops reading while publishers go on would grow
//! the outbox without end. So the outbox counts the bytes of QoS 0 PUBLISH packets it
//! holds and refuses one that would take it past `max_outbox_bytes`; the caller counts
//! the drop (`$SYS/broker/publish/messages/dropped`). Nothing else is ever refused.
//!
//! It also tells the core's [`Egress`] gauge when it holds more than half its limit
//! ("backed up"), and when that ends: readers wait while many outboxes are backed up.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use super::egress::{Egress, STALE_FULL};

use crate::broker::Outgoing;
use crate::protocol::{Packet, QoS};

pub struct Outbox {
    sender: LocalSender<Outgoing>,
    /// Shared with the writer, which subtracts what it takes (see [`QueuedBytes`]).
    queued: QueuedBytes,
    /// `usize::MAX` when unbounded.
    limit: usize,
}

/// Bytes of QoS 0 PUBLISH in an outbox and not yet taken by its writer. The writer holds
/// this rather than the [`Outbox`], whose sender would keep it from ever ending.
#[derive(Clone)]
pub struct QueuedBytes(Rc<Gauge>);

struct Gauge {
    bytes: Cell<usize>,
    /// Above this many bytes the outbox is backed up (half its limit).
    backed_up_above: usize,
    /// When the outbox first refused a delivery since it was last under half its limit.
    full_since: Cell<Option<Instant>>,
    egress: Rc<Egress>,
}

impl Gauge {
    fn set(&self, bytes: usize) {
        let was = self.bytes.get() > self.backed_up_above;
        let is = bytes > self.backed_up_above;
        self.bytes.set(bytes);
        match (was, is) {
            (false, true) => self.egress.backed_up(),
            (true, false) => {
                self.egress.relieved();
                if self.full_since.take().is_some() {
                    self.egress.drained();
                }
            }
            _ => {}
        }
    }

    /// Tells the egress tally of a refused delivery: overload while the outbox has been
    /// full only briefly, a slow subscriber after [`STALE_FULL`].
    fn refused(&self) {
        let now = Instant::now();
        let since = *self.full_since.get().get_or_insert(now);
        self.full_since.set(Some(since));
        self.egress
            .offered(now.saturating_duration_since(since) < STALE_FULL);
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.egress.closed(self.bytes.get() > self.backed_up_above);
    }
}

impl QueuedBytes {
    /// The writer took `packet` off the outbox.
    pub fn taken(&self, packet: &Outgoing) {
        if let Some(size) = qos0_size(packet) {
            self.0.set(self.0.bytes.get().saturating_sub(size));
        }
    }
}

impl Outbox {
    /// `limit` 0 means unbounded (never backed up).
    pub fn new(limit: usize, egress: Rc<Egress>) -> (Outbox, LocalReceiver<Outgoing>, QueuedBytes) {
        let (sender, receiver) = local_channel::new_unbounded();
        let limit = if limit == 0 { usize::MAX } else { limit };
        egress.opened();
        let queued = QueuedBytes(Rc::new(Gauge {
            bytes: Cell::new(0),
            backed_up_above: limit / 2,
            full_since: Cell::new(None),
            egress,
        }));
        let outbox = Outbox {
            sender,
            queued: queued.clone(),
            limit,
        };
        (outbox, receiver, queued)
    }

    /// Queues `packet` for the writer. Returns false only when it was a QoS 0 PUBLISH
    /// refused because the outbox holds `limit` bytes of them already. A packet for a
    /// writer that has stopped (the connection is closing) is let go without a word:
    /// QoS 1/2 stay in the session and are sent again on the next connection.
    pub fn send(&self, packet: impl Into<Outgoing>) -> bool {
        let packet = packet.into();
        if let Some(size) = qos0_size(&packet) {
            let queued = self.queued.0.bytes.get();
            // An empty outbox takes one message of any size, so a limit below the
            // largest message cannot starve a client of everything.
            if queued > 0 && queued.saturating_add(size) > self.limit {
                self.queued.0.refused();
                return false;
            }
            if self.sender.try_send(packet).is_ok() {
                self.queued.0.set(queued + size);
            }
            self.queued.0.egress.offered(false);
            return true;
        }
        let _ = self.sender.try_send(packet);
        true
    }
}

/// What a QoS 0 PUBLISH weighs in the outbox: its topic, payload and a fixed allowance for
/// header and properties (an estimate; the exact size would cost an encoding pass).
fn qos0_size(packet: &Outgoing) -> Option<usize> {
    match packet.packet() {
        Packet::Publish(p) if p.qos == QoS::AtMostOnce => {
            Some(p.topic.len() + p.payload.len() + 16)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Properties, Publish};
    use bytes::Bytes;
    use std::time::Duration;

    fn qos0(payload: usize) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from(vec![0; payload]),
        })
    }

    #[test]
    fn qos0_beyond_the_limit_is_refused_until_the_writer_takes_some() {
        glommio::LocalExecutor::default().run(async {
            let (outbox, rx, queued) = Outbox::new(100, Egress::new());
            assert!(outbox.send(qos0(50)));
            assert!(!outbox.send(qos0(50)), "67 + 67 bytes is over 100");
            assert!(
                outbox.send(Packet::PingResp),
                "only QoS 0 PUBLISH is bounded"
            );
            let taken = rx.recv().await.unwrap();
            queued.taken(&taken);
            assert!(outbox.send(qos0(50)));
        });
    }

    #[test]
    fn an_outbox_over_half_its_limit_is_backed_up_until_the_writer_takes_some() {
        glommio::LocalExecutor::default().run(async {
            let egress = Egress::new();
            let (a, rx_a, queued_a) = Outbox::new(100, egress.clone());
            let (b, _rx_b, _) = Outbox::new(100, egress.clone());
            let (_c, _rx_c, _) = Outbox::new(100, egress.clone());
            assert!(a.send(qos0(30)));
            assert!(!egress.behind(), "47 bytes of 100: not backed up");
            assert!(b.send(qos0(30)));
            assert!(b.send(qos0(1)));
            assert!(a.send(qos0(1)));
            assert!(egress.behind(), "two of three backed up");
            let taken = rx_a.recv().await.unwrap();
            queued_a.taken(&taken);
            assert!(!egress.behind(), "one of three");
            assert!(a.send(qos0(40)));
            assert!(egress.behind(), "a backed up again");
            drop((a, rx_a, queued_a));
            assert!(
                !egress.behind(),
                "a closed takes its backed-up state with it"
            );
        });
    }

    #[test]
    fn refusals_count_as_overload_only_while_the_outbox_is_newly_full() {
        glommio::LocalExecutor::default().run(async {
            let egress = Egress::new();
            let (outbox, rx, queued) = Outbox::new(100, egress.clone());
            assert!(outbox.send(qos0(60)));
            let mark = egress.mark();
            assert!(!outbox.send(qos0(60)));
            assert!(egress.sheds(mark), "refused by a newly full outbox");
            let drains = egress.drains();
            let taken = rx.recv().await.unwrap();
            queued.taken(&taken);
            assert_eq!(egress.drains(), drains + 1, "the full outbox drained");
            assert!(outbox.send(qos0(60)));
            assert!(!outbox.send(qos0(60)));
            glommio::timer::sleep(STALE_FULL + Duration::from_millis(10)).await;
            let mark = egress.mark();
            for _ in 0..10 {
                assert!(!outbox.send(qos0(60)));
            }
            assert!(
                !egress.sheds(mark),
                "full for longer than STALE_FULL: a slow subscriber, not overload"
            );
        });
    }

    #[test]
    fn an_empty_outbox_takes_one_message_of_any_size() {
        glommio::LocalExecutor::default().run(async {
            let (outbox, _rx, _) = Outbox::new(10, Egress::new());
            assert!(outbox.send(qos0(1000)));
            assert!(!outbox.send(qos0(1)));
        });
    }
}
