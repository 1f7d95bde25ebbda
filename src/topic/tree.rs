//! The subscription tree: which subscriptions of this core match a Topic Name.
//!
//! A trie with one node per filter level. Each node has its literal children in a map keyed
//! by the level (a per-tree keyed hash, see `hash.rs`), a separate slot for its `+` child,
//! and two lists of subscriptions: those whose filter ends at the node (`exact`) and those
//! whose filter ends with `/#` right below it (`multi`): `#` matches its parent level and
//! everything under it, so it needs no node of its own.
//!
//! Nodes live in one arena (`Vec`) and refer to each other by `u32` index: half the size of
//! a pointer, no recursive `Drop` (a 30,000-level filter would overflow the stack
//! otherwise), and a walk can hold node indices while the caller mutates subscription
//! values. Matching is iterative with a small inline stack, so a publish allocates nothing
//! unless the trie is deeper than [`WALK_INLINE`] levels of branching.
//!
//! Guarantees:
//! * a filter starting with `+` or `#` never matches a Topic Name starting with `$`
//!   [MQTT-4.7.2-1]; `$SYS/#` does;
//! * removing a filter's last subscription frees every node no other filter needs, so the
//!   live node count is bounded by the live filters (the arena keeps its high-water
//!   capacity, and reuses freed slots; it is released when the tree empties);
//! * [`Inserted::filter_added`] and [`Removed::filter_removed`] report exactly when a
//!   filter gains its first and loses its last subscription, which is when the core's
//!   interest in it, as replicated to the other cores, changes.
//!
//! A session whose filters overlap (`a/+` and `a/#`) is visited once per matching filter;
//! whether that yields one delivery or several is the router's choice (5.0 section 4.8).

use super::node::{edges, split_filter, Children, Edge, Node, NodeId, SlotId};
use super::subs::Subs;
use super::{TopicFilter, TopicName};
use crate::hash::HashState;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;

const ROOT: usize = 0;

/// Frames of the match walk kept on the call stack before it spills to the heap.
pub const WALK_INLINE: usize = 32;

/// Where the walk has got to in the Topic Name: the offset of the next level, or `END`
/// once every level is consumed. Topic Names are at most 65,535 bytes, so `u32` fits.
const END: u32 = u32::MAX;

/// What [`SubscriptionTree::insert`] did.
#[must_use = "`filter_added` says when the core's interest in the filter begins"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted<V> {
    /// The value this key had for this filter, now replaced: subscribing again to the
    /// same filter replaces the subscription [MQTT-3.8.4-3].
    pub replaced: Option<V>,
    /// Whether the filter had no subscription on this tree before.
    pub filter_added: bool,
}

/// What [`SubscriptionTree::remove`] did.
#[must_use = "`filter_removed` says when the core's interest in the filter ends"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed<V> {
    /// The value removed; `None` when the key had no subscription to the filter.
    pub removed: Option<V>,
    /// Whether that was the filter's last subscription on this tree.
    pub filter_removed: bool,
}

impl<V> Removed<V> {
    fn nothing() -> Self {
        Removed {
            removed: None,
            filter_removed: false,
        }
    }
}

/// The subscriptions one core holds, keyed by subscriber `K` (a session key) with a value
/// `V` per subscription (its options), matched against Topic Names.
///
/// Each (filter, key) pair holds at most one value. Shared subscriptions are kept apart,
/// in a [`SharedSubscriptions`](super::SharedSubscriptions), which is this tree keyed by
/// ShareName with a whole share group as the value.
pub struct SubscriptionTree<K, V> {
    /// `nodes[0]` is the root. Freed nodes are reset and listed in `free_nodes`.
    nodes: Vec<Node>,
    free_nodes: Vec<NodeId>,
    /// Subscription lists, one per filter that has any; freed ones are empty and listed in
    /// `free_slots`. Apart from the nodes so that a walk over `nodes` can hand out `&mut V`.
    slots: Vec<Subs<K, V>>,
    free_slots: Vec<SlotId>,
    subscriptions: usize,
    hash: HashState,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTree")
            .field("subscriptions", &self.subscriptions)
            .field("filters", &(self.slots.len() - self.free_slots.len()))
            .field("nodes", &(self.nodes.len() - 1 - self.free_nodes.len()))
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        SubscriptionTree {
            nodes: vec![Node::default()],
            free_nodes: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            subscriptions: 0,
            hash: HashState::random(),
        }
    }

    /// Subscriptions held, counting each (filter, key) pair once.
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// Distinct filters with at least one subscription.
    pub fn filter_count(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Live nodes other than the root: zero once every subscription is removed.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - 1 - self.free_nodes.len()
    }

    /// Subscribes `key` to `filter` with `value`, replacing its previous value for that
    /// filter if it had one.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Inserted<V> {
        let (prefix, multi) = split_filter(filter.as_str());
        let mut at = ROOT;
        for edge in edges(prefix) {
            at = match self.nodes[at].child(edge) {
                Some(child) => child.index(),
                None => {
                    let child = self.alloc_node();
                    match edge {
                        Edge::Level(level) => {
                            self.nodes[at].children.insert(level, child, self.hash)
                        }
                        Edge::Plus => self.nodes[at].plus = Some(child),
                    }
                    child.index()
                }
            };
        }
        let (slot, filter_added) = match self.nodes[at].slot(multi) {
            Some(slot) => (slot, false),
            None => {
                let slot = self.alloc_slot();
                *self.nodes[at].slot_mut(multi) = Some(slot);
                (slot, true)
            }
        };
        let replaced = self.slots[slot.index()].insert(key, value);
        if replaced.is_none() {
            self.subscriptions += 1;
        }
        Inserted {
            replaced,
            filter_added,
        }
    }

    /// Unsubscribes `key` from `filter`, pruning the nodes nothing else needs.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Removed<V> {
        let (prefix, multi) = split_filter(filter.as_str());
        let mut at = ROOT;
        // The deepest node on the path that stays whatever happens below it, and the edge
        // from it towards the filter's node: below that edge is a chain of nodes that only
        // this filter needs, to free if its last subscription goes.
        let mut cut: Option<(usize, Edge<'_>)> = None;
        for edge in edges(prefix) {
            let node = &self.nodes[at];
            if at == ROOT || node.needed_besides_one_child() {
                cut = Some((at, edge));
            }
            match node.child(edge) {
                Some(child) => at = child.index(),
                None => return Removed::nothing(),
            }
        }
        let Some(slot) = self.nodes[at].slot(multi) else {
            return Removed::nothing();
        };
        let Some(removed) = self.slots[slot.index()].remove(key) else {
            return Removed::nothing();
        };
        self.subscriptions -= 1;
        if !self.slots[slot.index()].is_empty() {
            return Removed {
                removed: Some(removed),
                filter_removed: false,
            };
        }
        self.free_slot(slot);
        *self.nodes[at].slot_mut(multi) = None;
        if at != ROOT && self.nodes[at].is_empty() {
            if let Some((parent, edge)) = cut {
                self.prune(parent, edge);
            }
        }
        Removed {
            removed: Some(removed),
            filter_removed: true,
        }
    }

    /// The value `key` subscribed to `filter` with.
    pub fn get(&self, filter: &TopicFilter, key: &K) -> Option<&V> {
        self.slots[self.find_slot(filter)?.index()].get(key)
    }

    pub fn get_mut(&mut self, filter: &TopicFilter, key: &K) -> Option<&mut V> {
        let slot = self.find_slot(filter)?;
        self.slots[slot.index()].get_mut(key)
    }

    /// Whether any subscription to exactly this filter exists (the core's interest in it).
    pub fn contains_filter(&self, filter: &TopicFilter) -> bool {
        self.find_slot(filter).is_some()
    }

    /// How many subscribers exactly this filter has.
    pub fn subscriber_count(&self, filter: &TopicFilter) -> usize {
        self.find_slot(filter)
            .map_or(0, |slot| self.slots[slot.index()].len())
    }

    /// Calls `visit` with every subscription whose filter matches `topic`.
    pub fn matches(&self, topic: &TopicName, mut visit: impl FnMut(&K, &V)) {
        walk(&self.nodes, topic.as_str(), |slot| {
            for (key, value) in self.slots[slot.index()].entries() {
                visit(key, value);
            }
        });
    }

    /// Like [`matches`](Self::matches), with the values mutable (a share group's
    /// round-robin cursor, a per-subscription counter).
    pub fn matches_mut(&mut self, topic: &TopicName, mut visit: impl FnMut(&K, &mut V)) {
        let slots = &mut self.slots;
        walk(&self.nodes, topic.as_str(), |slot| {
            for (key, value) in slots[slot.index()].iter_mut() {
                visit(key, value);
            }
        });
    }

    /// Calls `visit` with each filter held and its subscriber count, in no set order.
    /// For replicating a core's interest from scratch and for `$SYS`; it allocates.
    pub fn for_each_filter(&self, mut visit: impl FnMut(&str, usize)) {
        // (node, the filter levels that lead to it joined by `/`)
        let mut stack: Vec<(usize, String)> = vec![(ROOT, String::new())];
        while let Some((at, path)) = stack.pop() {
            let node = &self.nodes[at];
            let child_path = |level: &str| {
                if at == ROOT {
                    level.to_owned()
                } else {
                    format!("{path}/{level}")
                }
            };
            if let Some(slot) = node.exact {
                visit(&path, self.slots[slot.index()].len());
            }
            if let Some(slot) = node.multi {
                visit(&child_path("#"), self.slots[slot.index()].len());
            }
            if let Some(plus) = node.plus {
                stack.push((plus.index(), child_path("+")));
            }
            match &node.children {
                Children::None => {}
                Children::One(level, id) => stack.push((id.index(), child_path(level.as_str()))),
                Children::Many(map) => {
                    stack.extend(
                        map.iter()
                            .map(|(level, id)| (id.index(), child_path(level.as_str()))),
                    );
                }
            }
        }
    }

    fn find_slot(&self, filter: &TopicFilter) -> Option<SlotId> {
        let (prefix, multi) = split_filter(filter.as_str());
        let mut at = ROOT;
        for edge in edges(prefix) {
            at = self.nodes[at].child(edge)?.index();
        }
        self.nodes[at].slot(multi)
    }

    fn alloc_node(&mut self) -> NodeId {
        if let Some(id) = self.free_nodes.pop() {
            return id;
        }
        self.nodes.push(Node::default());
        let index = u32::try_from(self.nodes.len() - 1)
            .ok()
            .and_then(NonZeroU32::new);
        NodeId(index.expect("fewer than 2^32 nodes: each takes tens of bytes"))
    }

    fn alloc_slot(&mut self) -> SlotId {
        if let Some(id) = self.free_slots.pop() {
            return id;
        }
        self.slots.push(Subs::default());
        let id = u32::try_from(self.slots.len())
            .ok()
            .and_then(NonZeroU32::new);
        SlotId(id.expect("fewer than 2^32 filters: each takes tens of bytes"))
    }

    fn free_slot(&mut self, slot: SlotId) {
        self.free_slots.push(slot);
        if self.free_slots.len() == self.slots.len() {
            // Empty: give the arena back rather than keep its high-water mark.
            self.slots = Vec::new();
            self.free_slots = Vec::new();
        }
    }

    /// Unlinks the child of `parent` along `edge` and frees the chain of single-child,
    /// subscription-less nodes that hangs from it, down to the emptied node.
    fn prune(&mut self, parent: usize, edge: Edge<'_>) {
        let detached = match edge {
            Edge::Level(level) => self.nodes[parent].children.remove(level),
            Edge::Plus => self.nodes[parent].plus.take(),
        };
        let mut next = detached;
        while let Some(id) = next {
            let node = std::mem::take(&mut self.nodes[id.index()]);
            debug_assert!(node.exact.is_none() && node.multi.is_none() && node.degree() <= 1);
            next = node.plus.or_else(|| node.children.any());
            self.free_nodes.push(id);
        }
        if self.free_nodes.len() == self.nodes.len() - 1 {
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free_nodes = Vec::new();
        }
    }
}

/// The walk's pending (node, next level offset) pairs: inline up to [`WALK_INLINE`], so
/// that an ordinary publish does not allocate, then on the heap.
struct WalkStack {
    inline: [(NodeId, u32); WALK_INLINE],
    len: usize,
    /// Only used while `inline` is full, so popping it first keeps the order LIFO.
    spill: Vec<(NodeId, u32)>,
}

impl WalkStack {
    fn new() -> Self {
        WalkStack {
            inline: [(NodeId(NonZeroU32::MIN), 0); WALK_INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, frame: (NodeId, u32)) {
        if self.len < WALK_INLINE {
            self.inline[self.len] = frame;
            self.len += 1;
        } else {
            self.spill.push(frame);
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<(NodeId, u32)> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.len = self.len.checked_sub(1)?;
        Some(self.inline[self.len])
    }
}

/// The level of `topic` starting at `from`, and where the next one starts (`END` if none).
#[inline]
fn next_level(topic: &str, from: u32) -> (&str, u32) {
    let rest = &topic[from as usize..];
    match rest.bytes().position(|b| b == b'/') {
        Some(i) => (&rest[..i], from + i as u32 + 1),
        None => (rest, END),
    }
}

/// Calls `on_slot` with every subscription list whose filter matches `topic`.
fn walk(nodes: &[Node], topic: &str, mut on_slot: impl FnMut(SlotId)) {
    let root = &nodes[ROOT];
    // [MQTT-4.7.2-1]: `#` and `+` as the first level do not match names starting with `$`.
    let wildcards_at_root = !topic.starts_with('$');
    if wildcards_at_root {
        if let Some(slot) = root.multi {
            on_slot(slot);
        }
    }
    let mut stack = WalkStack::new();
    let (level, next) = next_level(topic, 0);
    if let (Some(plus), true) = (root.plus, wildcards_at_root) {
        stack.push((plus, next));
    }
    if let Some(child) = root.children.get(level) {
        stack.push((child, next));
    }
    while let Some((id, from)) = stack.pop() {
        let node = &nodes[id.index()];
        // `#` matches the level that got us here (its parent) and any below.
        if let Some(slot) = node.multi {
            on_slot(slot);
        }
        if from == END {
            if let Some(slot) = node.exact {
                on_slot(slot);
            }
            continue;
        }
        let (level, next) = next_level(topic, from);
        if let Some(plus) = node.plus {
            stack.push((plus, next));
        }
        if let Some(child) = node.children.get(level) {
            stack.push((child, next));
        }
    }
}
