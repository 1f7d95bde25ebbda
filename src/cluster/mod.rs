//! A berth cluster's entry tier: which node a client id lives on (slot homes, [`slots`]),
//! and the HAProxy configuration that routes each connection there ([`haproxy`]).
//!
//! **Invariant** of the cluster: a client id is live on exactly one node. A node never
//! accepts a CONNECT whose client id's slot another node owns (it refuses it, telling
//! the client where to go: [`Cluster::home_of`]), and gives a client without an id only an id
//! whose slot it owns. Takeover therefore stays on one node, with no cluster-wide
//! session registry. Pure: no I/O, no clock.

pub mod haproxy;
pub mod slots;

use std::sync::Arc;

pub use slots::{slot_of, Node, Slot, SlotMap, SlotMapError, SLOTS};

/// This node's view of the cluster: its name and the slot map in force.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub node: String,
    pub map: Arc<SlotMap>,
}

/// Where a client id lives, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home<'a> {
    Here,
    /// Another node owns the slot: the client is to go to `node` at its address.
    Elsewhere {
        slot: Slot,
        node: &'a Node,
    },
}

impl Cluster {
    /// Where `client_id` lives.
    pub fn home_of(&self, client_id: &str) -> Home<'_> {
        let slot = slot_of(client_id.as_bytes());
        let (owner, _) = self.map.owner(slot);
        if owner.name == self.node {
            Home::Here
        } else {
            Home::Elsewhere { slot, node: owner }
        }
    }

    /// Whether this node owns any slot (else it can give no client an id).
    pub fn owns_slots(&self) -> bool {
        self.map.slots_of(&self.node) > 0
    }

    /// Where a client without an id goes when this node owns no slot: the first node
    /// that owns one.
    pub fn any_home(&self) -> Option<&Node> {
        self.map
            .nodes()
            .iter()
            .find(|n| self.map.slots_of(&n.name) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(node: &str, text: &str) -> Cluster {
        Cluster {
            node: node.into(),
            map: Arc::new(SlotMap::parse(text).unwrap()),
        }
    }

    #[test]
    fn an_id_lives_where_its_slot_is_owned() {
        let text = "node n1 127.0.0.2:1883\nnode n2 127.0.0.3:1883\n0-2047 n1 1\n2048-4095 n2 1\n";
        let (n1, n2) = (cluster("n1", text), cluster("n2", text));
        for i in 0..200 {
            let id = format!("c{i}");
            let slot = slot_of(id.as_bytes());
            let (here, there) = if slot.0 < 2048 {
                (&n1, &n2)
            } else {
                (&n2, &n1)
            };
            assert_eq!(here.home_of(&id), Home::Here);
            match there.home_of(&id) {
                Home::Elsewhere { slot: s, node } => {
                    assert_eq!(s, slot);
                    assert_eq!(node.name, here.node);
                }
                Home::Here => panic!("{id} at home on both nodes"),
            }
        }
        assert!(n1.owns_slots());
    }

    #[test]
    fn a_node_without_slots_names_one_with_some() {
        let text = "node n1 127.0.0.2:1883\nnode n2 127.0.0.3:1883\n0-4095 n2 1\n";
        let idle = cluster("n1", text);
        assert!(!idle.owns_slots());
        assert_eq!(idle.any_home().unwrap().name, "n2");
    }
}
