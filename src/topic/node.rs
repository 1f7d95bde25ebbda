//! The nodes of the subscription tree and the steps between them.
//!
//! Kept apart from `tree.rs` so that the tree reads as its operations; nothing here knows
//! about subscribers.

use crate::hash::HashState;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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

/// Longest level kept inline in a [`Label`]; 22 bytes make the label 24, a `Box<str>` + tag.
const INLINE_LABEL: usize = 22;

/// A level as the tree stores it. Short levels (numeric ids, `cmd`, `status`) sit inline:
/// comparing one follows no pointer, which at a million filters saves a cache miss per
/// level matched, and storing one costs no allocation.
#[derive(Clone)]
pub(super) enum Label {
    Inline { len: u8, bytes: [u8; INLINE_LABEL] },
    Heap(Box<str>),
}

impl Label {
    pub(super) fn new(level: &str) -> Self {
        match u8::try_from(level.len()) {
            Ok(len) if level.len() <= INLINE_LABEL => {
                let mut bytes = [0; INLINE_LABEL];
                bytes[..level.len()].copy_from_slice(level.as_bytes());
                Label::Inline { len, bytes }
            }
            _ => Label::Heap(level.into()),
        }
    }

    #[inline]
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Label::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Label::Heap(level) => level.as_bytes(),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        // A label is always a whole level cut from a `str` at `/`, so this cannot fail.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Label {}

/// Hashes as the bytes do, so that maps keyed by `Label` are searched with a `&[u8]`.
impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Label {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

pub(super) type LevelMap = HashMap<Label, NodeId, HashState>;

/// Literal children. Most nodes of a large tree have exactly one (`{id}` -> `cmd` in
/// `device/{id}/cmd`), so that case is inline rather than a map of its own.
#[derive(Default)]
pub(super) enum Children {
    #[default]
    None,
    One(Label, NodeId),
    Many(Box<LevelMap>),
}

impl Children {
    #[inline]
    pub(super) fn get(&self, level: &str) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(label, id) => (label.as_bytes() == level.as_bytes()).then_some(*id),
            Children::Many(map) => map.get(level.as_bytes()).copied(),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Children::None => 0,
            Children::One(..) => 1,
            Children::Many(map) => map.len(),
        }
    }

    pub(super) fn insert(&mut self, level: &str, id: NodeId, hash: HashState) {
        *self = match std::mem::take(self) {
            Children::None => Children::One(Label::new(level), id),
            Children::One(label, other) => {
                let mut map = LevelMap::with_capacity_and_hasher(2, hash);
                map.insert(label, other);
                map.insert(Label::new(level), id);
                Children::Many(Box::new(map))
            }
            Children::Many(mut map) => {
                map.insert(Label::new(level), id);
                Children::Many(map)
            }
        }
    }

    pub(super) fn remove(&mut self, level: &str) -> Option<NodeId> {
        match self {
            Children::None => None,
            Children::One(label, id) => {
                if label.as_bytes() != level.as_bytes() {
                    return None;
                }
                let id = *id;
                *self = Children::None;
                Some(id)
            }
            Children::Many(map) => {
                let id = map.remove(level.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn labels_keep_their_level_inline_or_on_the_heap() {
        for level in [
            "",
            "cmd",
            &"a".repeat(22),
            &"a".repeat(23),
            "主题主题主题主题",
            "ü",
        ] {
            let label = Label::new(level);
            assert_eq!(label.as_str(), level);
            assert_eq!(
                matches!(label, Label::Inline { .. }),
                level.len() <= INLINE_LABEL
            );
            let hash = HashState::random();
            assert_eq!(
                hash.hash_one(&label),
                hash.hash_one(level.as_bytes()),
                "Borrow<[u8]> needs equal hashes"
            );
        }
    }

    #[test]
    fn children_go_from_one_to_a_map_and_back() {
        let hash = HashState::random();
        let id = |n| NodeId(NonZeroU32::new(n).unwrap());
        let mut children = Children::None;
        children.insert("a", id(1), hash);
        assert!(matches!(children, Children::One(..)));
        children.insert(&"long".repeat(10), id(2), hash);
        children.insert("c", id(3), hash);
        assert!(matches!(children, Children::Many(_)));
        assert_eq!(children.get(&"long".repeat(10)), Some(id(2)));
        assert_eq!(children.get("b"), None);
        assert_eq!(children.remove("a"), Some(id(1)));
        assert_eq!(children.remove("a"), None);
        assert_eq!(children.remove(&"long".repeat(10)), Some(id(2)));
        assert!(matches!(children, Children::One(..)));
        assert_eq!((children.len(), children.any()), (1, Some(id(3))));
        assert_eq!(children.remove("c"), Some(id(3)));
        assert!(matches!(children, Children::None));
    }
}
