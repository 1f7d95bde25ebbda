//! A session's subscriptions: its filters and their options, in the order they came.
//!
//! Most sessions hold a handful, so a short list is all they pay for (no map per idle
//! session). A session may hold very many (one v5 SUBSCRIBE can carry tens of thousands of
//! filters, and a restart replays them one by one): past [`INDEX_FROM`] entries a
//! filter -> position map keeps insert, remove and lookup O(1), so that subscribing and
//! replaying stay linear in the number of filters instead of scanning the list per filter.
//!
//! Guarantees: one entry per filter (subscribing again replaces it [MQTT-3.8.4-3]); the
//! index, when present, names exactly the position of every entry; a small list's capacity
//! is its length (a large one grows by doubling, so a push stays amortised O(1)).

use bytestring::ByteString;

use crate::hash::FastMap;
use crate::protocol::SubscriptionOptions;

/// A subscription as the session keeps it: its options and Subscription Identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// Entries at which the index is built.
const INDEX_FROM: usize = 16;
/// Entries below which it is dropped again (lower than [`INDEX_FROM`] so that a session
/// hovering around the threshold does not rebuild it on every call).
const INDEX_UNTIL: usize = 8;

type Entry = (ByteString, Subscription);

/// A session's subscriptions; as small as a `Vec` while they are few.
#[derive(Debug, Default)]
pub struct Subscriptions(Inner);

#[derive(Debug)]
enum Inner {
    Few(Vec<Entry>),
    Many(Box<Indexed>),
}

#[derive(Debug)]
struct Indexed {
    entries: Vec<Entry>,
    /// Position of each filter in `entries`. The filters come from peers: the map's hash
    /// is keyed per map (`hash.rs`), so colliding filters cannot be crafted.
    index: FastMap<ByteString, usize>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Few(Vec::new())
    }
}

impl Subscriptions {
    fn entries(&self) -> &[Entry] {
        match &self.0 {
            Inner::Few(entries) => entries,
            Inner::Many(many) => &many.entries,
        }
    }

    fn position(&self, filter: &str) -> Option<usize> {
        match &self.0 {
            Inner::Few(entries) => entries.iter().position(|(f, _)| f == filter),
            Inner::Many(many) => many.index.get(filter).copied(),
        }
    }

    /// Adds or replaces the subscription to `filter`; returns the one it replaced.
    pub fn insert(
        &mut self,
        filter: ByteString,
        subscription: Subscription,
    ) -> Option<Subscription> {
        if let Some(i) = self.position(&filter) {
            let entries = match &mut self.0 {
                Inner::Few(entries) => entries,
                Inner::Many(many) => &mut many.entries,
            };
            return Some(std::mem::replace(&mut entries[i].1, subscription));
        }
        match &mut self.0 {
            Inner::Few(entries) => {
                // Exact capacity while small: most sessions never grow past a few.
                entries.reserve_exact(1);
                entries.push((filter, subscription));
                if entries.len() >= INDEX_FROM {
                    let entries = std::mem::take(entries);
                    let mut index = FastMap::with_capacity_and_hasher(
                        entries.len(),
                        crate::hash::HashState::random(),
                    );
                    for (i, (f, _)) in entries.iter().enumerate() {
                        index.insert(f.clone(), i);
                    }
                    self.0 = Inner::Many(Box::new(Indexed { entries, index }));
                }
            }
            Inner::Many(many) => {
                many.index.insert(filter.clone(), many.entries.len());
                many.entries.push((filter, subscription));
            }
        }
        None
    }

    /// Removes the subscription to `filter`. The last entry takes its place.
    pub fn remove(&mut self, filter: &str) -> Option<Subscription> {
        let i = self.position(filter)?;
        match &mut self.0 {
            Inner::Few(entries) => {
                let (_, removed) = entries.swap_remove(i);
                entries.shrink_to_fit();
                Some(removed)
            }
            Inner::Many(many) => {
                many.index.remove(filter);
                let (_, removed) = many.entries.swap_remove(i);
                if let Some((moved, _)) = many.entries.get(i) {
                    many.index.insert(moved.clone(), i);
                }
                if many.entries.len() < INDEX_UNTIL {
                    let mut entries = std::mem::take(&mut many.entries);
                    entries.shrink_to_fit();
                    self.0 = Inner::Few(entries);
                } else if many.entries.len() * 4 <= many.entries.capacity() {
                    // Keep memory proportional to the filters left after many go.
                    many.entries.shrink_to(many.entries.len() * 2);
                    many.index.shrink_to(many.entries.len() * 2);
                }
                Some(removed)
            }
        }
    }

    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        self.position(filter).map(|i| &self.entries()[i].1)
    }

    pub fn contains(&self, filter: &str) -> bool {
        self.position(filter).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ByteString> {
        self.entries().iter().map(|(f, _)| f)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ByteString, &Subscription)> {
        self.entries().iter().map(|(f, s)| (f, s))
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn sub(qos: QoS, identifier: u32) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            identifier: Some(identifier),
        }
    }

    fn indexed(subs: &Subscriptions) -> bool {
        matches!(subs.0, Inner::Many(_))
    }

    #[test]
    fn as_small_as_a_vec() {
        assert_eq!(
            std::mem::size_of::<Subscriptions>(),
            std::mem::size_of::<Vec<Entry>>()
        );
    }

    #[test]
    fn insert_replaces_and_remove_swaps_in_a_short_list() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.insert("a".into(), sub(QoS::AtMostOnce, 1)), None);
        assert_eq!(subs.insert("b".into(), sub(QoS::AtMostOnce, 2)), None);
        let old = subs.insert("a".into(), sub(QoS::ExactlyOnce, 3));
        assert_eq!(old, Some(sub(QoS::AtMostOnce, 1)));
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.get("a"), Some(&sub(QoS::ExactlyOnce, 3)));
        assert_eq!(subs.remove("a"), Some(sub(QoS::ExactlyOnce, 3)));
        assert_eq!(subs.remove("a"), None);
        assert_eq!(subs.keys().collect::<Vec<_>>(), ["b"]);
        assert!(!indexed(&subs));
    }

    /// The index follows every swap through growth past the threshold and shrinking
    /// below it, checked against a plain model after each step.
    #[test]
    fn the_index_follows_the_entries_through_growth_and_shrinking() {
        let mut subs = Subscriptions::default();
        let mut model = std::collections::BTreeMap::new();
        let check = |subs: &Subscriptions, model: &std::collections::BTreeMap<String, u32>| {
            assert_eq!(subs.len(), model.len());
            for (f, id) in model {
                assert_eq!(subs.get(f).and_then(|s| s.identifier), Some(*id), "{f}");
            }
            let mut keys: Vec<String> = subs.keys().map(|k| k.to_string()).collect();
            keys.sort();
            assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
        };
        for i in 0..100u32 {
            let f = format!("f/{i}");
            assert_eq!(
                subs.insert(f.as_str().into(), sub(QoS::AtMostOnce, i)),
                None
            );
            model.insert(f, i);
        }
        assert!(indexed(&subs));
        check(&subs, &model);
        for i in (0..100u32).step_by(3) {
            let f = format!("f/{i}");
            subs.insert(f.as_str().into(), sub(QoS::AtLeastOnce, i + 1000));
            model.insert(f, i + 1000);
        }
        check(&subs, &model);
        for i in (0..100u32).filter(|i| i % 2 == 0) {
            let f = format!("f/{i}");
            assert_eq!(subs.remove(&f).is_some(), model.remove(&f).is_some());
            check(&subs, &model);
        }
        for i in 0..95u32 {
            let f = format!("f/{i}");
            subs.remove(&f);
            model.remove(&f);
        }
        check(&subs, &model);
        assert!(!indexed(&subs), "dropped again below the threshold");
        assert!(subs.contains("f/97") && !subs.contains("f/96"));
    }
}
