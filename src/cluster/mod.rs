//! A berth cluster's entry tier: which node a client id lives on (slot homes, [`slots`]),
//! and the HAProxy configuration that routes each connection there ([`haproxy`]).
//!
//! **Invariant** of the cluster: a client id is live on exactly one node. A node never
//! accepts a CONNECT whose client id's slot another node owns (it refuses it, telling
//! the client where to go: [`Home::of`]), and gives a client without an id only an id
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

impl Home<'_> {
    /// The home of `client_id` as `cluster` (if any) sees it: without a cluster every id
    /// lives here.
    pub fn of<'a>(cluster: Option<&'a Cluster>, client_id: &str) -> Home<'a> {
        cluster.map_or(Home::Here, |c| c.home_of(client_id))
    }
}
