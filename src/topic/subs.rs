//! The subscriptions of one filter, keyed by subscriber.
//!
//! Most filters have one subscriber (`device/{id}/cmd`), so one entry is held inline: no
//! allocation, and no pointer to follow when a publish reaches it. Two or more go to a
//! list on the heap. A few filters have very many (`#` for a monitoring fleet, a busy
//! share group); past [`INDEX_FROM`] entries a key -> position map keeps subscribe and
//! unsubscribe O(1) instead of a scan per call, which would make a million sessions
//! subscribing to one filter quadratic.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries at which the key index is built.
const INDEX_FROM: usize = 16;
/// Entries below which it is dropped again (lower than [`INDEX_FROM`] so that a filter
/// hovering around the threshold does not rebuild it on every call).
const INDEX_UNTIL: usize = 8;

#[derive(Default)]
pub(crate) enum Subs<K, V> {
    #[default]
    Empty,
    One((K, V)),
    Many(Box<Many<K, V>>),
}

pub(crate) struct Many<K, V> {
    entries: Vec<(K, V)>,
    /// Position of each key in `entries`; only while `entries` is long.
    index: Option<HashMap<K, usize>>,
}

impl<K, V> Subs<K, V> {
    pub(crate) fn entries(&self) -> &[(K, V)] {
        match self {
            Subs::Empty => &[],
            Subs::One(entry) => std::slice::from_ref(entry),
            Subs::Many(many) => &many.entries,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Subs::Empty)
    }

    /// Private: a caller changing a key would leave the index stale.
    fn entries_mut(&mut self) -> &mut [(K, V)] {
        match self {
            Subs::Empty => &mut [],
            Subs::One(entry) => std::slice::from_mut(entry),
            Subs::Many(many) => &mut many.entries,
        }
    }

    /// The entries with mutable values; keys stay shared so the index cannot go stale.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries_mut().iter_mut().map(|(k, v)| (&*k, v))
    }
}

impl<K: Eq + Hash + Clone, V> Subs<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        match self {
            Subs::Many(many) if many.index.is_some() => many.index.as_ref()?.get(key).copied(),
            _ => self.entries().iter().position(|(k, _)| k == key),
        }
    }

    /// Adds or replaces `key`'s entry; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.entries_mut()[i].1, value));
        }
        *self = match std::mem::take(self) {
            Subs::Empty => Subs::One((key, value)),
            Subs::One(first) => {
                let mut entries = Vec::with_capacity(2);
                entries.extend([first, (key, value)]);
                Subs::Many(Box::new(Many {
                    entries,
                    index: None,
                }))
            }
            Subs::Many(mut many) => {
                if let Some(index) = &mut many.index {
                    index.insert(key.clone(), many.entries.len());
                }
                many.entries.push((key, value));
                if many.index.is_none() && many.entries.len() >= INDEX_FROM {
                    let positions = many
                        .entries
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.clone(), i));
                    many.index = Some(positions.collect());
                }
                Subs::Many(many)
            }
        };
        None
    }

    /// Removes `key`'s entry. The last entry takes its place, so order is not kept.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        let many = match std::mem::take(self) {
            Subs::Empty => return None,
            Subs::One((_, value)) => return Some(value),
            Subs::Many(many) => many,
        };
        let value = self.remove_from(many, i, key);
        Some(value)
    }

    fn remove_from(&mut self, mut many: Box<Many<K, V>>, i: usize, key: &K) -> V {
        let (_, value) = many.entries.swap_remove(i);
        if many.entries.len() == 1 {
            *self = many.entries.pop().map_or(Subs::Empty, Subs::One);
            return value;
        }
        if let Some(index) = &mut many.index {
            index.remove(key);
            if let Some((moved, _)) = many.entries.get(i) {
                index.insert(moved.clone(), i);
            }
            if many.entries.len() < INDEX_UNTIL {
                many.index = None;
            }
        }
        if many.entries.len() * 4 <= many.entries.capacity() {
            // Keep memory proportional to the subscribers left after a crowd leaves.
            many.entries.shrink_to(many.entries.len() * 2);
        }
        *self = Subs::Many(many);
        value
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|i| &self.entries()[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.position(key)?;
        Some(&mut self.entries_mut()[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_built(subs: &Subs<u32, u32>) -> bool {
        matches!(subs, Subs::Many(many) if many.index.is_some())
    }

    #[test]
    fn insert_replaces_and_remove_swaps() {
        let mut subs = Subs::default();
        assert_eq!(subs.insert(1, 'a'), None);
        assert!(matches!(subs, Subs::One(_)));
        assert_eq!(subs.insert(2, 'b'), None);
        assert_eq!(subs.insert(1, 'c'), Some('a'));
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.get(&1), Some(&'c'));
        *subs.get_mut(&2).unwrap() = 'd';
        assert_eq!(subs.remove(&1), Some('c'));
        assert_eq!(subs.remove(&1), None);
        assert_eq!(subs.entries(), &[(2, 'd')]);
        assert!(matches!(subs, Subs::One(_)), "back inline");
        assert_eq!(subs.remove(&2), Some('d'));
        assert!(subs.is_empty());
    }

    #[test]
    fn the_index_follows_the_entries_through_growth_and_shrinking() {
        let mut subs = Subs::default();
        for k in 0..100u32 {
            assert_eq!(subs.insert(k, k), None);
        }
        assert!(index_built(&subs));
        for k in (0..100u32).step_by(3) {
            assert_eq!(subs.remove(&k), Some(k));
        }
        for k in 0..100u32 {
            assert_eq!(subs.get(&k).copied(), (k % 3 != 0).then_some(k), "key {k}");
        }
        for k in 0..98u32 {
            subs.remove(&k);
        }
        assert!(!index_built(&subs));
        assert_eq!(subs.entries(), &[(98, 98)]);
        assert_eq!(subs.remove(&98), Some(98));
        assert!(subs.is_empty());
    }
}
