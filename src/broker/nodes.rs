//! The other nodes of a cluster (`src/nats/`), as one core's engine sees them: which
//! nodes want which filters (this core's replica of the cluster's interest table), the
//! messages a PUBLISH routed here sends them, and the messages they send this node.
//!
//! Invariants: a message goes to another node only from the core its publisher's PUBLISH
//! was routed on (never from a core that got it from another core, and never when it came
//! from a node: no loops), at most once per node however many of the node's filters and
//! groups match; a share group with members on other nodes is given each message on one
//! node only (picked here, round robin over its member nodes, this one included when it has
//! members; a message from a node goes only to the groups it names);
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

use super::share::shared_filter;
use super::{Broker, Effects};
use crate::protocol::{Publish, QoS};
use crate::session::state::Origin;
use crate::session::Message;
use crate::topic::{
    ParsedFilter, ShareName, SharedFilter, SubscriptionTree, TopicFilter, TopicName,
};
use std::sync::Arc;

/// The origin core of a QoS 2 message from this node's stream: no core has this number
/// (cores are numbered from 0, far fewer than 65,535), so stream sequences never clash with
/// a core's own origins.
pub const STREAM_ORIGIN_CORE: u16 = u16::MAX;

/// A node of the cluster, as numbered by this process's bridge (names are the bridge's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Which other nodes want which plain filters, and which have members of which share groups.
#[derive(Default)]
pub(super) struct RemoteInterest {
    filters: SubscriptionTree<NodeId, ()>,
    /// Share groups with members on other nodes (their `$share/{group}/{filter}` entries).
    groups: SubscriptionTree<ShareName, NodeGroup>,
    /// This node is one of a cluster: its retained messages go to the other nodes.
    clustered: bool,
}

/// A share group's member nodes other than this one, and the round robin over them.
struct NodeGroup {
    /// The group's filter, which the tree walk does not hand back.
    filter: TopicFilter,
    nodes: Vec<NodeId>,
    /// The next pick, modulo the member nodes (this one counted last when it has members).
    next: usize,
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
    /// A `$share/{group}/{filter}` entry says the node has members of that group.
    pub fn remote_interest(&mut self, node: NodeId, filter: ByteString, present: bool) {
        let filter = match ParsedFilter::parse(filter) {
            Ok(ParsedFilter::Plain(filter)) => filter,
            Ok(ParsedFilter::Shared(group)) => return self.remote_group(node, group, present),
            Err(_) => return,
        };
        if present {
            let _ = self.nodes.filters.insert(&filter, node, ());
        } else {
            let _ = self.nodes.filters.remove(&filter, &node);
        }
    }

    fn remote_group(&mut self, node: NodeId, group: SharedFilter, present: bool) {
        let groups = &mut self.nodes.groups;
        if let Some(row) = groups.get_mut(&group.filter, &group.group) {
            row.nodes.retain(|n| *n != node);
            if present {
                row.nodes.push(node);
            } else if row.nodes.is_empty() {
                let _ = groups.remove(&group.filter, &group.group);
            }
        } else if present {
            let row = NodeGroup {
                filter: group.filter.clone(),
                nodes: vec![node],
                next: 0,
            };
            let _ = groups.insert(&group.filter, group.group, row);
        }
    }

    /// Adds one `to_nodes` entry per node interested in `topic` (a plain filter, or a
    /// share group the node was picked for); whether there was one. A matching group with
    /// members on other nodes gets one node per message, round robin over its member
    /// nodes, this one among them when it has members; a group picked elsewhere is added
    /// to `away` (this node's members of it do not get the message) and named in that
    /// node's entry, so that it delivers to one member of it.
    pub(super) fn route_to_nodes(
        &mut self,
        topic: &TopicName,
        message: &Arc<Message>,
        away: &mut Vec<SharedFilter>,
        effects: &mut Effects,
    ) -> bool {
        if (self.nodes.filters.is_empty() && self.nodes.groups.is_empty())
            || super::is_sys_topic(topic.as_str())
        {
            return false;
        }
        let first = effects.to_nodes.len();
        self.nodes.filters.matches(topic, |node, _| {
            if !effects.to_nodes[first..].iter().any(|(n, ..)| n == node) {
                effects.to_nodes.push((*node, message.clone(), Vec::new()));
            }
        });
        if !self.nodes.groups.is_empty() {
            let shares = &self.shares;
            let mut picks = Vec::new();
            self.nodes.groups.matches_mut(topic, |group, row| {
                let shared = SharedFilter {
                    group: group.clone(),
                    filter: row.filter.clone(),
                };
                let here = usize::from(shares.has_group(&shared));
                let slot = row.next % (row.nodes.len() + here);
                row.next = row.next.wrapping_add(1);
                if let Some(node) = row.nodes.get(slot) {
                    picks.push((*node, shared));
                }
            });
            for (node, shared) in picks {
                let raw = ByteString::from(shared.to_string());
                away.push(shared);
                match effects.to_nodes[first..]
                    .iter_mut()
                    .find(|(n, ..)| *n == node)
                {
                    Some((_, _, groups)) => groups.push(raw),
                    None => effects.to_nodes.push((node, message.clone(), vec![raw])),
                }
            }
        }
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
    /// `groups`: the share groups (`$share/{group}/{filter}`) the sending node picked this
    /// node for; this node's other groups do not get the message (the sender picked
    /// another node, or itself, for them).
    pub fn publish_from_node(
        &mut self,
        publisher: &ByteString,
        publish: Publish,
        stream_seq: Option<u64>,
        groups: &[ByteString],
        now: Instant,
    ) -> Effects {
        let origin = stream_seq
            .filter(|_| publish.qos == QoS::ExactlyOnce)
            .map(|seq| Origin {
                core: STREAM_ORIGIN_CORE,
                seq,
            });
        // A QoS 2 message this core routed before (its stream delivered it again) gave
        // its groups their copy then: this core, the owner of its publisher's id, routes
        // every delivery of it, so its origin set says so (within one run of the node, or
        // after a restart when the origin reached this core's log with a plain delivery).
        let again = origin.is_some_and(|o| self.exactly_once.origins().contains(o));
        let groups: Vec<SharedFilter> = if again {
            Vec::new()
        } else {
            groups.iter().filter_map(shared_filter).collect()
        };
        self.route(publisher, publish, origin, Some(&groups), now)
    }
}
