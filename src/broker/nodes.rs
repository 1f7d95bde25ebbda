//! The other nodes of a cluster (`src/nats/`), as one core's engine sees them: which
//! nodes want which filters (this core's replica of the cluster's interest table), the
//! messages a PUBLISH routed here sends them, and the messages they send this node.
//!
//! Invariants: a message goes to another node only from the core its publisher's PUBLISH
//! was routed on (never from a core that got it from another core, and never when it came
//! from a node: no loops), at most once per node however many of the node's filters match;
//! `$SYS` topics stay on their node; a message from a node is delivered here as a local
//! publish is, but its retained flag does not replace this node's retained message: every
//! node's retained messages reach every node's store on their own way (a retained PUBLISH
//! of this node goes out in `retained_to_nodes`, the cluster's come back through
//! [`Broker::retained_from_node`], the bucket `berth_retained` ordering them); a QoS 2
//! message from this node's stream is taken once by each core however often the stream
//! delivers it (its stream sequence is its origin, [`STREAM_ORIGIN_CORE`]); with no
//! cluster the table is empty and a publish pays one branch (a retained one two).

use std::time::Instant;

use bytestring::ByteString;

use super::{Broker, Effects};
use crate::protocol::{Publish, QoS};
use crate::session::state::Origin;
use crate::session::Message;
use crate::topic::{SubscriptionTree, TopicFilter, TopicName};
use std::sync::Arc;

/// The origin core of a QoS 2 message from this node's stream: no core has this number
/// (cores are numbered from 0, far fewer than 65,535), so stream sequences never clash with
/// a core's own origins.
pub const STREAM_ORIGIN_CORE: u16 = u16::MAX;

/// A node of the cluster, as numbered by this process's bridge (names are the bridge's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Which other nodes want which plain filters.
#[derive(Default)]
pub(super) struct RemoteInterest {
    filters: SubscriptionTree<NodeId, ()>,
    /// This node is one of a cluster: its retained messages go to the other nodes.
    clustered: bool,
}

impl Broker {
    /// This core's node is one of a cluster (the server has a bridge).
    pub fn join_cluster(&mut self) {
        self.nodes.clustered = true;
    }

    /// A retained message (or clear) published on this node, for every node's store.
    pub(super) fn retained_to_nodes(&self, message: &Arc<Message>, effects: &mut Effects) {
        if self.nodes.clustered && !super::is_sys_topic(&message.topic) {
            effects.retained_to_nodes.push(message.clone());
        }
    }

    /// A retained message (or clear) of some node of the cluster, this one included, in
    /// the order the cluster's bucket holds them: it replaces this core's retained message
    /// of its topic (only this core's: the bridge tells every core). One that changes
    /// nothing (this node's own, coming back; the bucket read again) is not logged again.
    /// Nothing is delivered: live subscribers got the message as it was published.
    pub fn retained_from_node(&mut self, publisher: &ByteString, publish: Publish, now: Instant) {
        if super::is_sys_topic(&publish.topic) || TopicName::new(publish.topic.clone()).is_err() {
            return; // a node never sends one: a foreign entry in the bucket
        }
        let mut properties = publish.properties;
        if let Some(values) = properties.values_mut() {
            values.topic_alias = None;
            values.subscription_identifiers.clear();
        }
        if let Some(kept) = self.retained.get(&publish.topic) {
            if kept.payload == publish.payload
                && kept.qos == publish.qos
                && kept.properties == properties
            {
                return;
            }
        } else if publish.payload.is_empty() {
            return;
        }
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
        let message = Arc::new(Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: true,
            properties,
            publisher: publisher.clone(),
            expires_at,
            origin: None,
        });
        self.set_retained(&message);
    }

    /// Node `node` gained (`present`) or lost interest in `filter`. A filter that does not
    /// parse is ignored (a node never announces one; a foreign entry in the bucket might).
    pub fn remote_interest(&mut self, node: NodeId, filter: ByteString, present: bool) {
        let Ok(filter) = TopicFilter::new(filter) else {
            return;
        };
        if present {
            let _ = self.nodes.filters.insert(&filter, node, ());
        } else {
            let _ = self.nodes.filters.remove(&filter, &node);
        }
    }

    /// Adds one `to_nodes` entry per node interested in `topic`; whether there was one.
    pub(super) fn route_to_nodes(
        &self,
        topic: &TopicName,
        message: &Arc<Message>,
        effects: &mut Effects,
    ) -> bool {
        if self.nodes.filters.is_empty() || super::is_sys_topic(topic.as_str()) {
            return false;
        }
        let first = effects.to_nodes.len();
        self.nodes.filters.matches(topic, |node, _| {
            if !effects.to_nodes[first..].iter().any(|(n, _)| n == node) {
                effects.to_nodes.push((*node, message.clone()));
            }
        });
        effects.to_nodes.len() > first
    }

    /// A PUBLISH that another node received and sent here: routed to this node's cores
    /// and sessions as one from a client of this core, never to other nodes, and never
    /// kept as this node's retained message. `stream_seq`: its sequence in this node's
    /// stream (QoS 1/2). A QoS 2 one carries the origin [`STREAM_ORIGIN_CORE`] and that
    /// sequence, so that every core takes it once however often the stream delivers it
    /// (its acknowledgement lost, or this node killed between storing and acknowledging
    /// it): the cores' origin sets (journaled with the message, restated by checkpoints)
    /// skip it as they skip a local QoS 2 message routed again.
    pub fn publish_from_node(
        &mut self,
        publisher: &ByteString,
        publish: Publish,
        stream_seq: Option<u64>,
        now: Instant,
    ) -> Effects {
        let origin = stream_seq
            .filter(|_| publish.qos == QoS::ExactlyOnce)
            .map(|seq| Origin {
                core: STREAM_ORIGIN_CORE,
                seq,
            });
        self.route(publisher, publish, origin, false, now)
    }
}
