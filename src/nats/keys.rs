//! The names the cluster uses in NATS (subjects, the stream and consumer, KV keys), and the
//! bridge's two tables: which of this node's cores want which filter (so that the node
//! announces a filter once, when its first core wants it) and the numbering of node names.
//!
//! Invariants: a KV key names its node before the first `.` (node names hold no `.`); the
//! same filter always hashes to the same key; a node's interest in a filter is announced
//! exactly when the set of its cores wanting it becomes non-empty and withdrawn exactly
//! when it becomes empty.

use std::collections::{HashMap, HashSet};

use bytestring::ByteString;
use sha2::{Digest, Sha256};

use crate::broker::NodeId;
use crate::ownership::CoreId;

pub const INTEREST_BUCKET: &str = "berth_interest";
pub const NODES_BUCKET: &str = "berth_nodes";
pub const RETAINED_BUCKET: &str = "berth_retained";
pub const BARRIER_SUBJECT: &str = "berth.barrier";
pub const CONSUMER: &str = "berth_in";

/// A node's name as NATS sees it: `.` (allowed in node names, a separator in subjects and
/// not allowed in stream names) becomes `=` (which node names never hold, so no two names
/// meet).
pub fn nats_name(node: &str) -> String {
    node.replace('.', "=")
}

pub fn q0_subject(node: &str) -> String {
    format!("berth.node.{node}.q0")
}

pub fn in_subject(node: &str) -> String {
    format!("berth.node.{node}.in")
}

pub fn in_stream(node: &str) -> String {
    format!("BERTH_IN_{node}")
}

/// The KV key of `node`'s interest in `filter`: KV keys allow few characters, filters any.
pub fn interest_key(node: &str, filter: &str) -> String {
    let digest = Sha256::digest(filter.as_bytes());
    let mut key = String::with_capacity(node.len() + 1 + 32);
    key.push_str(node);
    key.push('.');
    for byte in &digest[..16] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// The KV key of the retained message of `topic` (a key of no node: it holds no `.`).
pub fn retained_key(topic: &str) -> String {
    let digest = Sha256::digest(topic.as_bytes());
    let mut key = String::with_capacity(64);
    for byte in &digest[..] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// The node a KV key belongs to.
pub fn key_node(key: &str) -> Option<&str> {
    key.split_once('.')
        .map(|(node, _)| node)
        .filter(|n| !n.is_empty())
}

/// Which cores of this node want which filters.
#[derive(Default)]
pub struct LocalInterest {
    filters: HashMap<ByteString, HashSet<CoreId>>,
}

impl LocalInterest {
    /// Core `core` gained or lost `filter`; `Some(present)` when the node's interest
    /// changes (the first core came, the last went).
    pub fn announced(&mut self, core: CoreId, filter: &ByteString, present: bool) -> Option<bool> {
        if present {
            let cores = self.filters.entry(filter.clone()).or_default();
            (cores.insert(core) && cores.len() == 1).then_some(true)
        } else {
            let cores = self.filters.get_mut(filter)?;
            if !cores.remove(&core) {
                return None;
            }
            if cores.is_empty() {
                self.filters.remove(filter);
                return Some(false);
            }
            None
        }
    }

    /// Every filter some core wants.
    pub fn filters(&self) -> impl Iterator<Item = &ByteString> {
        self.filters.keys()
    }
}

/// Node names and the numbers the cores know them by.
#[derive(Default)]
pub struct NodeNames {
    ids: HashMap<String, NodeId>,
    names: Vec<String>,
}

impl NodeNames {
    pub fn id(&mut self, name: &str) -> NodeId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = NodeId(self.names.len() as u32);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.names.get(id.0 as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_node_and_are_stable() {
        let key = interest_key("n1", "a/+/#");
        assert_eq!(key, interest_key("n1", "a/+/#"));
        assert_ne!(key, interest_key("n1", "a/+"));
        assert_eq!(key_node(&key), Some("n1"));
        assert_eq!(key.len(), 2 + 1 + 32);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
        assert_eq!(key_node(".x"), None);
        assert_eq!(key_node("nodot"), None);
    }

    #[test]
    fn a_node_announces_a_filter_once_for_all_its_cores() {
        let mut interest = LocalInterest::default();
        let f = ByteString::from_static("a/#");
        assert_eq!(interest.announced(CoreId(0), &f, true), Some(true));
        assert_eq!(interest.announced(CoreId(1), &f, true), None);
        assert_eq!(interest.announced(CoreId(1), &f, true), None);
        assert_eq!(interest.announced(CoreId(0), &f, false), None);
        assert_eq!(interest.announced(CoreId(0), &f, false), None);
        assert_eq!(interest.announced(CoreId(1), &f, false), Some(false));
        assert_eq!(interest.announced(CoreId(1), &f, false), None);
        assert_eq!(interest.filters().count(), 0);
    }

    #[test]
    fn dotted_node_names_become_one_subject_token() {
        let node = nats_name("n1.eu-west_2");
        assert_eq!(node, "n1=eu-west_2");
        assert_eq!(q0_subject(&node), "berth.node.n1=eu-west_2.q0");
        assert_eq!(in_stream(&node), "BERTH_IN_n1=eu-west_2");
        assert_eq!(key_node(&interest_key(&node, "a/b")), Some("n1=eu-west_2"));
    }

    #[test]
    fn node_names_are_numbered_once() {
        let mut names = NodeNames::default();
        let a = names.id("a");
        let b = names.id("b");
        assert_ne!(a, b);
        assert_eq!(names.id("a"), a);
        assert_eq!(names.name(b), Some("b"));
        assert_eq!(names.name(NodeId(9)), None);
    }
}
