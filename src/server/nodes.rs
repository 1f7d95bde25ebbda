//! A core's side of the cluster bridge (`crate::nats`): what it hands the bridge (its
//! interest, its messages for other nodes), the wait of a QoS 1/2 acknowledgement for
//! JetStream's and of a new filter's SUBACK for the other nodes' routing, and the loop that carries out what the bridge sends it (other nodes'
//! interest, their messages, the cluster's retained messages).
//!
//! Invariants: a core never waits on the bridge: work is handed over with `try_send`, and
//! when the bridge's channel is full a QoS 0 message is dropped (counted) and a QoS 1/2
//! one refused (`Counters::forward_refused`, so its publisher's acknowledgement is
//! refused as for a full disk); [`Core::sync_nodes_for`] returns only once the forwards
//! up to the ticket it is given (and this core's earlier ones) are answered, and a publish
//! that forwarded nothing waits for nothing; a message from another node is answered
//! as stored only after it is routed here, synced with the other cores and durable, as a
//! client's PUBACK would be.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use glommio::channels::local_channel::{self, LocalSender};

use super::local::Core;
use crate::broker::NodeId;
use crate::nats::{FromCore, ToCore};
use crate::protocol::QoS;
use crate::session::Message;

/// Injected messages one turn of [`node_loop`] routes before it syncs and answers them.
const INJECT_BATCH: usize = 256;

/// The last QoS 1/2 forward (ticket) an [`Core::apply`] made; 0: none. An acknowledgement
/// of what was applied waits for it ([`Core::sync_nodes_for`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodesOwed(u64);

/// One core's link to the bridge.
pub struct NodeLink {
    to_bridge: flume::Sender<FromCore>,
    /// Tickets handed out: QoS 1/2 forwards, numbered from 1.
    issued: Cell<u64>,
    /// Every ticket up to this one is answered.
    answered: Cell<u64>,
    /// Answered tickets above `answered` (answers come back per target node, so out of
    /// order across nodes).
    answered_above: RefCell<BTreeSet<u64>>,
    /// [`Core::sync_nodes_for`] calls waiting: the ticket each waits for.
    waiters: RefCell<Vec<(u64, LocalSender<()>)>>,
}

impl NodeLink {
    pub fn new(to_bridge: flume::Sender<FromCore>) -> NodeLink {
        NodeLink {
            to_bridge,
            issued: Cell::new(0),
            answered: Cell::new(0),
            answered_above: RefCell::new(BTreeSet::new()),
            waiters: RefCell::new(Vec::new()),
        }
    }

    fn answer(&self, ticket: u64) {
        let mut above = self.answered_above.borrow_mut();
        above.insert(ticket);
        let mut answered = self.answered.get();
        while above.remove(&(answered + 1)) {
            answered += 1;
        }
        self.answered.set(answered);
        // Dropping a waiter's sender wakes it.
        self.waiters
            .borrow_mut()
            .retain(|(wanted, _)| *wanted > answered);
    }
}

impl Core {
    /// Hands the bridge what an engine call produced for the cluster; without a cluster
    /// it is dropped (the engine announces interest whether or not there is one).
    pub(super) fn to_nodes(
        &self,
        messages: Vec<(NodeId, Arc<Message>, Vec<ByteString>)>,
        interest: Vec<(ByteString, bool)>,
    ) -> NodesOwed {
        let mut owed = NodesOwed::default();
        let Some(link) = &self.nodes else {
            return owed;
        };
        for (filter, present) in interest {
            // A new filter's SUBACK waits until other nodes route it here, a gone one's
            // UNSUBACK until they no longer do (`crate::nats`).
            let ticket = {
                let ticket = link.issued.get() + 1;
                link.issued.set(ticket);
                owed = NodesOwed(ticket);
                Some(ticket)
            };
            let announced = FromCore::Interest {
                core: self.id,
                filter,
                present,
                ticket,
            };
            if link.to_bridge.try_send(announced).is_err() {
                // Lost, the node's entry would be wrong until a restart: say so.
                tracing::error!(core = %self.id, "cluster: the bridge's channel is full; an interest change was lost");
                if let Some(ticket) = ticket {
                    link.answer(ticket);
                }
            }
        }
        for (node, message, groups) in messages {
            let qos = message.qos;
            self.hand_to_bridge(link, qos, &mut owed, |ticket| FromCore::Forward {
                core: self.id,
                node,
                message,
                groups,
                ticket,
            });
        }
        owed
    }

    /// Gives the bridge one message of `qos` (`make` builds it around its ticket). A QoS 1/2
    /// one is ticketed, the ticket kept in `owed`, so the acknowledgement waits for it; one
    /// the bridge's full channel does not take is refused at once (its ticket answered,
    /// counted in `forward_refused`), a QoS 0 one dropped and counted.
    fn hand_to_bridge(
        &self,
        link: &NodeLink,
        qos: QoS,
        owed: &mut NodesOwed,
        make: impl FnOnce(Option<u64>) -> FromCore,
    ) {
        let ticket = (qos != QoS::AtMostOnce).then(|| {
            let ticket = link.issued.get() + 1;
            link.issued.set(ticket);
            *owed = NodesOwed(ticket);
            ticket
        });
        if link.to_bridge.try_send(make(ticket)).is_err() {
            match ticket {
                Some(ticket) => {
                    self.broker.borrow_mut().counters.forward_refused += 1;
                    link.answer(ticket);
                }
                None => self.broker.borrow_mut().counters.dropped += 1,
            }
        }
    }

    /// Hands the bridge the retained messages (and clears) published here, for every
    /// node's store. A QoS 1/2 one is ticketed as a forward is: its acknowledgement waits
    /// until the cluster's bucket holds it (or refuses it, counted in `forward_refused`).
    pub(super) fn retained_to_nodes(&self, messages: Vec<Arc<Message>>) -> NodesOwed {
        let mut owed = NodesOwed::default();
        let Some(link) = &self.nodes else {
            return owed;
        };
        for message in messages {
            let qos = message.qos;
            self.hand_to_bridge(link, qos, &mut owed, |ticket| FromCore::Retain {
                core: self.id,
                message,
                ticket,
            });
        }
        owed
    }

    /// Returns once the QoS 1/2 forwards up to `owed` (what [`Core::apply`] returned for
    /// the effects an acknowledgement covers) are stored in their nodes' streams, or
    /// refused (counted in `forward_refused`): a client's acknowledgement waits for this.
    /// Answers are kept as a watermark, so this also waits for this core's earlier
    /// forwards; a publish that sent nothing to other nodes waits for nothing. Without a
    /// cluster, at once.
    pub async fn sync_nodes_for(&self, owed: NodesOwed) {
        let Some(link) = &self.nodes else {
            return;
        };
        let wanted = owed.0;
        if link.answered.get() >= wanted {
            return;
        }
        let (done, wait) = local_channel::new_bounded(1);
        link.waiters.borrow_mut().push((wanted, done));
        // `None` once `answer` dropped the sender.
        let _ = wait.recv().await;
    }

    /// Tells the bridge that this core has announced its recovered filters.
    pub fn recovered_to_nodes(&self) {
        if let Some(link) = &self.nodes {
            let _ = link
                .to_bridge
                .try_send(FromCore::Recovered { core: self.id });
        }
    }

    /// The bridge answered a forward.
    fn node_answered(&self, ticket: u64, stored: bool) {
        if let Some(link) = &self.nodes {
            if !stored {
                self.broker.borrow_mut().counters.forward_refused += 1;
            }
            link.answer(ticket);
        }
    }
}

/// Carries out what the bridge sends this core, in order. Messages from other nodes are
/// routed a batch at a time: one sync with the other cores and one wait for the log cover
/// the batch, as they cover a client's read.
pub async fn node_loop(core: Rc<Core>, inbox: flume::Receiver<ToCore>) {
    while let Ok(first) = inbox.recv_async().await {
        let mut batch = vec![first];
        while batch.len() < INJECT_BATCH {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let before = core.refusals();
        let mut stored = Vec::new();
        let mut barriers = Vec::new();
        for work in batch {
            match work {
                ToCore::Interest {
                    node,
                    filter,
                    present,
                } => core
                    .broker
                    .borrow_mut()
                    .remote_interest(node, filter, present),
                ToCore::Acked { ticket, ok } => core.node_answered(ticket, ok),
                ToCore::Retained { publisher, publish } => core
                    .broker
                    .borrow_mut()
                    .retained_from_node(&publisher, publish, Instant::now()),
                ToCore::Barrier(done) => barriers.push(done),
                ToCore::Inject {
                    publisher,
                    publish,
                    groups,
                    stream_seq,
                    done,
                } => {
                    let effects = core.broker.borrow_mut().publish_from_node(
                        &publisher,
                        publish,
                        stream_seq,
                        &groups,
                        Instant::now(),
                    );
                    core.apply(effects).await;
                    stored.extend(done);
                }
            }
        }
        if !stored.is_empty() {
            core.sync_peers().await;
            let durable = core.broker.borrow().durable();
            if let Some(durable) = durable {
                if let Err(error) = durable.await {
                    tracing::error!(%error, "the log could not be made durable");
                }
            }
            let ok = !core.refused_since(&before);
            for done in stored {
                let _ = done.send(ok);
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}
