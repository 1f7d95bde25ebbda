//! A connection's outbox: the packets waiting for its writer.
//!
//! QoS 1 and 2 deliveries are bounded elsewhere (the client's Receive Maximum window,
//! then the session queue), and replies are bounded by what the client sends. QoS 0
//! deliveries are not: a subscriber that stops reading while publishers go on would grow
//! the outbox without end. So the outbox counts the bytes of QoS 0 PUBLISH packets it
//! holds and refuses one that would take it past `max_outbox_bytes`; the caller counts
//! the drop (`$SYS/broker/publish/messages/dropped`). Nothing else is ever refused.

use std::cell::Cell;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

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
#[derive(Clone, Default)]
pub struct QueuedBytes(Rc<Cell<usize>>);

impl QueuedBytes {
    /// The writer took `packet` off the outbox.
    pub fn taken(&self, packet: &Outgoing) {
        if let Some(size) = qos0_size(packet) {
            self.0.set(self.0.get().saturating_sub(size));
        }
    }
}

impl Outbox {
    /// `limit` 0 means unbounded.
    pub fn new(limit: usize) -> (Outbox, LocalReceiver<Outgoing>, QueuedBytes) {
        let (sender, receiver) = local_channel::new_unbounded();
        let queued = QueuedBytes::default();
        let limit = if limit == 0 { usize::MAX } else { limit };
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
            let queued = self.queued.0.get();
            // An empty outbox takes one message of any size, so a limit below the
            // largest message cannot starve a client of everything.
            if queued > 0 && queued.saturating_add(size) > self.limit {
                return false;
            }
            if self.sender.try_send(packet).is_ok() {
                self.queued.0.set(queued + size);
            }
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
            let (outbox, rx, queued) = Outbox::new(100);
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
    fn an_empty_outbox_takes_one_message_of_any_size() {
        glommio::LocalExecutor::default().run(async {
            let (outbox, _rx, _) = Outbox::new(10);
            assert!(outbox.send(qos0(1000)));
            assert!(!outbox.send(qos0(1)));
        });
    }
}
