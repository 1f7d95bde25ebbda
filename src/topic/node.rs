//! The nodes of the subscription tree and the steps between them.
//!
//! Kept apart from `tree.rs` so that the tree reads as its operations; nothing here knows
//! about subscribers.

use super::hash::LevelHashState;
use std::collections::HashMap;
use std::num::NonZeroU32;

/// Index of a non-root node in the arena. The root is index 0 and nobody's child, which
/// leaves zero free as the niche that makes `Option<NodeId>` four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NodeId(pub(super) NonZeroU32);

impl NodeId {
    pub(super) fn index(self) -> usize {
        self.0.get() as usize
    }
}

/// Index + 1 of a subscription list in `SubscriptionTree::slots`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotId(pub(super) NonZeroU32);

impl SlotId {
    pub(super) fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

pub(super) type LevelMap = HashMap<Box<str>, NodeId, LevelHashState>;

/// Literal children. Most nodes of a large tree have exactly one (`{id}` -> `cmd` in
/// `device/{id}/cmd`), so that case is inline rather than a map of its own.
#[derive(Default)]
pub(super) enum Children {
    #[default]
    None,
    One(Box<str>, NodeId),
    Many(Box<LevelMap>),
}

impl Children {
    #[inline]
    pub(super) fn get(&self, level: &str) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(label, id) => (**label == *level).then_some(*id),
            Children::Many(map) => map.get(level).copied(),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Children::None => 0,
            Children::One(..) => 1,
            Children::Many(map) => map.len(),
        }
    }

    pub(super) fn insert(&mut self, level: &str, id: NodeId, hash: LevelHashState) {
        *self = match std::mem::take(self) {
            Children::None => Children::One(level.into(), id),
            Children::One(label, other) => {
                let mut map = LevelMap::with_capacity_and_hasher(2, hash);
                map.insert(label, other);
                map.insert(level.into(), id);
                Children::Many(Box::new(map))
            }
            Children::Many(mut map) => {
                map.insert(level.into(), id);
                Children::Many(map)
            }
        }
    }

    pub(super) fn remove(&mut self, level: &str) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(label, id) => {
                if **label != *level {
                    return None;
                }
                let id = *id;
                *self = Children::None;
                Some(id)
            }
            Children::Many(map) => {
                let id = map.remove(level)?;
                if map.len() == 1 {
                    let last = map.drain().next();
                    if let Some((label, last)) = last {
                        *self = Children::One(label, last);
                    }
                } else if map.capacity() > 16 && map.len() * 4 < map.capacity() {
                    // Give back what a crowd of departed siblings left behind.
                    map.shrink_to(map.len() * 2);
                }
                Some(id)
            }
        }
    }

    /// Some child, for walking a chain of single-child nodes.
    pub(super) fn any(&self) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(_, id) => Some(*id),
            Children::Many(map) => map.values().next().copied(),
        }
    }
}

/// One step of a filter's path below the root.
#[derive(Clone, Copy)]
pub(super) enum Edge<'a> {
    Level(&'a str),
    Plus,
}

/// Splits a validated filter into the part walked as edges and whether it ends in `#`.
/// `#` alone has no edges; `/#` has one empty level.
pub(super) fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), true)
    } else {
        (Some(filter), false)
    }
}

pub(super) fn edges(prefix: Option<&str>) -> impl Iterator<Item = Edge<'_>> {
    prefix.into_iter().flat_map(|p| p.split('/')).map(|level| {
        if level == "+" {
            Edge::Plus
        } else {
            Edge::Level(level)
        }
    })
}

#[derive(Default)]
pub(super) struct Node {
    pub(super) children: Children,
    pub(super) plus: Option<NodeId>,
    /// Subscriptions whose filter ends at this node.
    pub(super) exact: Option<SlotId>,
    /// Subscriptions whose filter is this node's path followed by `/#` (`#` at the root).
    pub(super) multi: Option<SlotId>,
}

impl Node {
    #[inline]
    pub(super) fn child(&self, edge: Edge<'_>) -> Option<NodeId> {
        match edge {
            Edge::Level(level) => self.children.get(level),
            Edge::Plus => self.plus,
        }
    }

    pub(super) fn slot(&self, multi: bool) -> Option<SlotId> {
        if multi {
            self.multi
        } else {
            self.exact
        }
    }

    pub(super) fn slot_mut(&mut self, multi: bool) -> &mut Option<SlotId> {
        if multi {
            &mut self.multi
        } else {
            &mut self.exact
        }
    }

    pub(super) fn degree(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// Whether the node must stay even if the one path through it is removed.
    pub(super) fn needed_besides_one_child(&self) -> bool {
        self.exact.is_some() || self.multi.is_some() || self.degree() > 1
    }

    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_none() && self.multi.is_none() && self.degree() == 0
    }
}
