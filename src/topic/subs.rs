//! The subscriptions of one filter: a list keyed by subscriber, with an index once it is long.
//!
//! Most filters have one subscriber (`device/{id}/cmd`), so the list starts with room for
//! exactly one entry and no index. A few filters have very many (`#` for a monitoring
//! fleet, a busy share group); past [`INDEX_FROM`] entries a key -> position map keeps
//! subscribe and unsubscribe O(1) instead of a scan per call, which would make a million
//! sessions subscribing to one filter quadratic.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries at which the key index is built.
const INDEX_FROM: usize = 16;
/// Entries below which it is dropped again (lower than [`INDEX_FROM`] so that a filter
/// hovering around the threshold does not rebuild it on every call).
const INDEX_UNTIL: usize = 8;

pub(crate) struct Subs<K, V> {
    entries: Vec<(K, V)>,
    /// Position of each key in `entries`; only while `entries` is long. Boxed so that the
    /// many short lists pay 8 bytes for it rather than a whole empty map.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize>>>,
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Subs {
            entries: Vec::new(),
            index: None,
        }
    }
}

impl<K, V> Subs<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn entries(&self) -> &[(K, V)] {
        &self.entries
    }
}

impl<K: Eq + Hash + Clone, V> Subs<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    /// Adds or replaces `key`'s entry; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        if self.entries.capacity() == 0 {
            // Vec would start at four; one is what most filters ever hold.
            self.entries.reserve_exact(1);
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() >= INDEX_FROM {
            let index = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i));
            self.index = Some(Box::new(index.collect()));
        }
        None
    }

    /// Removes `key`'s entry. The last entry takes its place, so order is not kept.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        let (_, value) = self.entries.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(key);
            if let Some((moved, _)) = self.entries.get(i) {
                index.insert(moved.clone(), i);
            }
            if self.entries.len() < INDEX_UNTIL {
                self.index = None;
            }
        }
        if self.entries.len() * 4 <= self.entries.capacity() {
            // Keep memory proportional to the subscribers left after a crowd leaves.
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(value)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// The entries with mutable values; keys stay shared so the index cannot go stale.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_remove_swaps() {
        let mut subs = Subs::default();
        assert_eq!(subs.insert(1, 'a'), None);
        assert_eq!(subs.insert(2, 'b'), None);
        assert_eq!(subs.insert(1, 'c'), Some('a'));
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.get(&1), Some(&'c'));
        assert_eq!(subs.remove(&1), Some('c'));
        assert_eq!(subs.remove(&1), None);
        assert_eq!(subs.entries(), &[(2, 'b')]);
    }

    #[test]
    fn the_index_follows_the_entries_through_growth_and_shrinking() {
        let mut subs = Subs::default();
        for k in 0..100u32 {
            assert_eq!(subs.insert(k, k), None);
        }
        assert!(subs.index.is_some());
        for k in (0..100u32).step_by(3) {
            assert_eq!(subs.remove(&k), Some(k));
        }
        for k in 0..100u32 {
            assert_eq!(subs.get(&k).copied(), (k % 3 != 0).then_some(k), "key {k}");
        }
        for k in 0..100u32 {
            subs.remove(&k);
        }
        assert!(subs.is_empty());
        assert!(subs.index.is_none());
        assert!(subs.entries.capacity() <= 2);
    }
}
