//! Shared subscriptions held by one core: each matching message goes to one member of
//! each share group (MQTT 5.0 section 4.8.2).
//!
//! Choice: shared subscriptions are kept apart from the plain ones, in a
//! [`SubscriptionTree`] keyed by [`ShareName`] whose value is the whole [`ShareGroup`]. A
//! publish then visits each matching group once, and picking a member is a cursor step in
//! that group, with no per-message grouping, sorting or allocation. A shared subscription is
//! identified by ShareName *and* filter: `$share/g/a/+` and `$share/g/a/b` are two groups,
//! and a message on `a/b` goes to one member of each.
//!
//! A group spans cores (its members are sessions, and sessions live on any core); this
//! type holds the members on one core. Choosing between cores, and what to do when the
//! chosen member cannot take the message, is the router's; [`ShareGroup::next_member_where`]
//! lets it skip members (offline, queue full) without losing fairness, and
//! [`GroupPlacement`] is the per-group table of members per core that it picks a core from.

use super::subs::Subs;
use super::tree::{Inserted, Removed, SubscriptionTree};
use super::{ShareName, SharedFilter, TopicName};
use std::fmt;
use std::hash::Hash;

/// The members of one shared subscription (`$share/{ShareName}/{filter}`) on this core,
/// with the round-robin cursor that spreads messages among them.
pub struct ShareGroup<K, V> {
    members: Subs<K, V>,
    /// Position in `members` that the next pick tries first.
    cursor: usize,
}

impl<K, V> fmt::Debug for ShareGroup<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareGroup")
            .field("members", &self.members.entries().len())
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V> ShareGroup<K, V> {
    fn with_member(key: K, value: V) -> Self {
        let mut members = Subs::default();
        let _ = members.insert(key, value);
        ShareGroup { members, cursor: 0 }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.members.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.members.get_mut(key)
    }

    pub fn members(&self) -> impl Iterator<Item = (&K, &V)> {
        self.members.entries().iter().map(|(k, v)| (k, v))
    }

    /// The next member in round-robin order. While membership is stable, `n` picks reach
    /// each of `n` members once; a member leaving only shifts whose turn is next.
    pub fn next_member(&mut self) -> Option<(&K, &V)> {
        self.next_member_where(|_, _| true)
    }

    /// The next member in round-robin order for which `eligible` holds, trying each member
    /// at most once; `None` if none is eligible. Skipped members keep their turn order.
    pub fn next_member_where(
        &mut self,
        mut eligible: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&K, &V)> {
        let entries = self.members.entries();
        let n = entries.len();
        let chosen = (0..n).map(|step| (self.cursor + step) % n).find(|&i| {
            let (key, value) = &entries[i];
            eligible(key, value)
        })?;
        self.cursor = (chosen + 1) % n;
        let (key, value) = &self.members.entries()[chosen];
        Some((key, value))
    }
}

/// The shared subscriptions of one core, matched by Topic Name with one pick per group.
pub struct SharedSubscriptions<K, V> {
    groups: SubscriptionTree<ShareName, ShareGroup<K, V>>,
    /// Memberships across all groups.
    members: usize,
}

impl<K: Eq + Hash + Clone, V> Default for SharedSubscriptions<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SharedSubscriptions<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSubscriptions")
            .field("members", &self.members)
            .field("groups", &self.groups)
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V> SharedSubscriptions<K, V> {
    pub fn new() -> Self {
        SharedSubscriptions {
            groups: SubscriptionTree::new(),
            members: 0,
        }
    }

    /// Memberships held, counting each (shared filter, key) pair once.
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Share groups (distinct ShareName and filter pairs) with a member on this core.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Live tree nodes, as [`SubscriptionTree::node_count`].
    pub fn node_count(&self) -> usize {
        self.groups.node_count()
    }

    /// Adds `key` to the group of `shared`, or replaces its value there.
    /// `filter_added` reports the group's first member on this core.
    pub fn insert(&mut self, shared: &SharedFilter, key: K, value: V) -> Inserted<V> {
        if let Some(group) = self.groups.get_mut(&shared.filter, &shared.group) {
            let replaced = group.members.insert(key, value);
            self.members += usize::from(replaced.is_none());
            return Inserted {
                replaced,
                filter_added: false,
            };
        }
        let group = ShareGroup::with_member(key, value);
        let inserted = self
            .groups
            .insert(&shared.filter, shared.group.clone(), group);
        debug_assert!(inserted.replaced.is_none());
        self.members += 1;
        Inserted {
            replaced: None,
            filter_added: true,
        }
    }

    /// Takes `key` out of the group of `shared`. `filter_removed` reports that the group
    /// lost its last member on this core (and is gone from the tree).
    pub fn remove(&mut self, shared: &SharedFilter, key: &K) -> Removed<V> {
        let Some(group) = self.groups.get_mut(&shared.filter, &shared.group) else {
            return Removed {
                removed: None,
                filter_removed: false,
            };
        };
        let Some(removed) = group.members.remove(key) else {
            return Removed {
                removed: None,
                filter_removed: false,
            };
        };
        self.members -= 1;
        if !group.is_empty() {
            return Removed {
                removed: Some(removed),
                filter_removed: false,
            };
        }
        let emptied = self.groups.remove(&shared.filter, &shared.group);
        debug_assert!(emptied.removed.is_some());
        Removed {
            removed: Some(removed),
            filter_removed: true,
        }
    }

    pub fn group(&self, shared: &SharedFilter) -> Option<&ShareGroup<K, V>> {
        self.groups.get(&shared.filter, &shared.group)
    }

    pub fn group_mut(&mut self, shared: &SharedFilter) -> Option<&mut ShareGroup<K, V>> {
        self.groups.get_mut(&shared.filter, &shared.group)
    }

    pub fn get(&self, shared: &SharedFilter, key: &K) -> Option<&V> {
        self.group(shared)?.get(key)
    }

    pub fn get_mut(&mut self, shared: &SharedFilter, key: &K) -> Option<&mut V> {
        self.group_mut(shared)?.get_mut(key)
    }

    /// Calls `visit` with every group whose filter matches `topic`, once per group.
    pub fn matches(&self, topic: &TopicName, visit: impl FnMut(&ShareName, &ShareGroup<K, V>)) {
        self.groups.matches(topic, visit);
    }

    /// Calls `visit` with one member, chosen round-robin, of every group whose filter
    /// matches `topic`.
    pub fn pick_members(&mut self, topic: &TopicName, visit: impl FnMut(&ShareName, &K, &V)) {
        self.pick_members_where(topic, |_, _| true, visit);
    }

    /// Like [`pick_members`](Self::pick_members), passing over members for which
    /// `eligible` is false; a group with no eligible member is not visited.
    pub fn pick_members_where(
        &mut self,
        topic: &TopicName,
        mut eligible: impl FnMut(&K, &V) -> bool,
        mut visit: impl FnMut(&ShareName, &K, &V),
    ) {
        self.groups.matches_mut(topic, |name, group| {
            if let Some((key, value)) = group.next_member_where(&mut eligible) {
                visit(name, key, value);
            }
        });
    }
}

/// Where the members of one share group are, as every core sees it: for each core, how
/// many members it holds and how many of those are connected.
///
/// The core that routes a message picks one core per matching group with
/// [`pick`](Self::pick), and that core picks one of its own members. Choice: a weighted
/// round robin (the "smooth" variant nginx uses for upstreams) over the cores, weighted by
/// their connected members, or by all their members when none is connected anywhere
/// (offline members queue; MQTT 5.0 4.8.2 lets the server pick any member). Combined with
/// the round robin inside each core, every connected member gets an equal share, and the
/// picks are deterministic and interleaved (`A B A C A B ...`, never `A A A B B C`),
/// without a clock or a random number. Least-loaded would need every core's queue depths
/// on every publishing core, which is more cross-core traffic than the choice is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlacement {
    members: Vec<u32>,
    online: Vec<u32>,
    /// Each core's running credit in the weighted round robin: every pick adds each
    /// candidate's weight to its credit, takes the highest and charges it the total.
    credit: Vec<i64>,
}

impl GroupPlacement {
    /// No members yet on any of `cores` cores.
    pub fn new(cores: usize) -> Self {
        GroupPlacement {
            members: vec![0; cores],
            online: vec![0; cores],
            credit: vec![0; cores],
        }
    }

    /// Records that `core` now holds `members` members of the group, `online` of them
    /// connected. A core outside the table is ignored.
    pub fn set(&mut self, core: usize, members: u32, online: u32) {
        if core >= self.members.len() {
            return;
        }
        self.members[core] = members;
        self.online[core] = online.min(members);
        if members == 0 {
            // A core that comes back starts level with the others.
            self.credit[core] = 0;
        }
    }

    /// (members, connected members) on `core`.
    pub fn counts(&self, core: usize) -> (u32, u32) {
        (
            self.members.get(core).copied().unwrap_or(0),
            self.online.get(core).copied().unwrap_or(0),
        )
    }

    /// Whether no core holds a member any more.
    pub fn is_empty(&self) -> bool {
        self.members.iter().all(|&m| m == 0)
    }

    /// Whether a core other than `except` holds a connected member.
    pub fn online_elsewhere(&self, except: usize) -> bool {
        self.online
            .iter()
            .enumerate()
            .any(|(core, &n)| core != except && n > 0)
    }

    /// The core that gets the next message of this group, leaving `except` out (a core
    /// that found no member to take a message passes it on once, to another core). Cores
    /// with connected members are weighted by how many they have; only when no candidate
    /// has one are all members counted. `None` when no candidate holds a member.
    pub fn pick(&mut self, except: Option<usize>) -> Option<usize> {
        let candidate = |core: usize| Some(core) != except;
        let by_online = (0..self.online.len()).any(|c| candidate(c) && self.online[c] > 0);
        let weights = if by_online {
            &self.online
        } else {
            &self.members
        };
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for core in (0..weights.len()).filter(|&c| candidate(c) && weights[c] > 0) {
            let weight = i64::from(weights[core]);
            total += weight;
            self.credit[core] += weight;
            best = match best {
                Some(b) if self.credit[b] >= self.credit[core] => Some(b),
                _ => Some(core),
            };
        }
        let chosen = best?;
        self.credit[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::ParsedFilter;
    use std::collections::HashMap;

    fn shared(raw: &str) -> SharedFilter {
        match ParsedFilter::try_from(raw).unwrap() {
            ParsedFilter::Shared(shared) => shared,
            ParsedFilter::Plain(_) => panic!("{raw} is not shared"),
        }
    }

    fn name(raw: &str) -> TopicName {
        TopicName::try_from(raw).unwrap()
    }

    fn picks(subs: &mut SharedSubscriptions<u32, ()>, topic: &str) -> Vec<(String, u32)> {
        let mut got = Vec::new();
        subs.pick_members(&name(topic), |group, key, ()| {
            got.push((group.to_string(), *key))
        });
        got.sort();
        got
    }

    #[test]
    fn round_robin_reaches_every_member_in_turn() {
        let mut subs = SharedSubscriptions::new();
        let f = shared("$share/workers/jobs/+");
        for key in [1u32, 2, 3] {
            let inserted = subs.insert(&f, key, ());
            assert_eq!(inserted.filter_added, key == 1);
        }
        let mut counts = HashMap::new();
        for _ in 0..30 {
            let got = picks(&mut subs, "jobs/x");
            assert_eq!(got.len(), 1, "one member per group per message");
            *counts.entry(got[0].1).or_insert(0) += 1;
        }
        assert_eq!(counts, HashMap::from([(1, 10), (2, 10), (3, 10)]));
    }

    #[test]
    fn each_group_and_each_filter_gets_its_own_pick() {
        let mut subs = SharedSubscriptions::new();
        let _ = subs.insert(&shared("$share/a/sport/#"), 1, ());
        let _ = subs.insert(&shared("$share/a/sport/#"), 2, ());
        let _ = subs.insert(&shared("$share/b/sport/#"), 3, ());
        let _ = subs.insert(&shared("$share/a/sport/tennis"), 4, ());
        assert_eq!(subs.group_count(), 3);
        assert_eq!(subs.len(), 4);
        let got = picks(&mut subs, "sport/tennis");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&("b".into(), 3)) && got.contains(&("a".into(), 4)));
        assert_eq!(picks(&mut subs, "sport").len(), 2);
        assert!(picks(&mut subs, "news").is_empty());
    }

    #[test]
    fn mqtt_4_7_2_1_shared_wildcards_do_not_match_dollar_topics() {
        let mut subs = SharedSubscriptions::new();
        let _ = subs.insert(&shared("$share/g/#"), 1, ());
        let _ = subs.insert(&shared("$share/g/+/x"), 2, ());
        assert!(picks(&mut subs, "$SYS/x").is_empty());
        let _ = subs.insert(&shared("$share/g/$SYS/#"), 3, ());
        assert_eq!(picks(&mut subs, "$SYS/x"), vec![("g".to_string(), 3)]);
    }

    #[test]
    fn remove_reports_the_last_member_and_prunes() {
        let mut subs = SharedSubscriptions::new();
        let f = shared("$share/g/a/b/c");
        let _ = subs.insert(&f, 1, 'x');
        let again = subs.insert(&f, 1, 'y');
        assert_eq!(
            again,
            Inserted {
                replaced: Some('x'),
                filter_added: false
            }
        );
        let _ = subs.insert(&f, 2, 'z');
        assert_eq!(subs.get(&f, &1), Some(&'y'));
        assert_eq!(
            subs.remove(&f, &1),
            Removed {
                removed: Some('y'),
                filter_removed: false
            }
        );
        assert_eq!(
            subs.remove(&f, &1),
            Removed {
                removed: None,
                filter_removed: false
            }
        );
        assert_eq!(
            subs.remove(&f, &2),
            Removed {
                removed: Some('z'),
                filter_removed: true
            }
        );
        assert!(subs.is_empty());
        assert_eq!(subs.group_count(), 0);
        assert_eq!(subs.node_count(), 0);
        assert!(subs.group(&f).is_none());
    }

    #[test]
    fn ineligible_members_are_passed_over_without_losing_turns() {
        let mut subs = SharedSubscriptions::new();
        let f = shared("$share/g/t");
        for key in [1u32, 2, 3] {
            let _ = subs.insert(&f, key, ());
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            subs.pick_members_where(&name("t"), |k, ()| *k != 2, |_, k, ()| got.push(*k));
        }
        assert_eq!(got, vec![1, 3, 1, 3]);
        let mut none = 0;
        subs.pick_members_where(&name("t"), |_, ()| false, |_, _, ()| none += 1);
        assert_eq!(none, 0);
    }
    fn spread(placement: &mut GroupPlacement, picks: usize, except: Option<usize>) -> Vec<usize> {
        let mut counts = vec![0; placement.members.len()];
        for _ in 0..picks {
            counts[placement.pick(except).expect("a core")] += 1;
        }
        counts
    }

    #[test]
    fn placement_weights_cores_by_their_connected_members() {
        let mut placement = GroupPlacement::new(3);
        assert_eq!(placement.pick(None), None, "no member anywhere");
        placement.set(0, 1, 1);
        placement.set(1, 3, 3);
        placement.set(2, 5, 0);
        // Offline members on core 2 take nothing while others are connected.
        assert_eq!(spread(&mut placement, 400, None), vec![100, 300, 0]);
        // Over every window of `total weight` picks the spread is exact, and interleaved.
        let window: Vec<usize> = (0..4).map(|_| placement.pick(None).unwrap()).collect();
        assert_eq!(window.iter().filter(|&&c| c == 0).count(), 1, "{window:?}");
        assert_ne!(
            window[..3],
            [1, 1, 1],
            "a core's picks are spread out: {window:?}"
        );
    }

    #[test]
    fn placement_falls_back_to_offline_members_when_none_is_connected() {
        let mut placement = GroupPlacement::new(2);
        placement.set(0, 2, 0);
        placement.set(1, 6, 0);
        assert_eq!(spread(&mut placement, 80, None), vec![20, 60]);
        placement.set(0, 2, 1);
        assert_eq!(spread(&mut placement, 10, None), vec![10, 0]);
        placement.set(0, 0, 0);
        placement.set(1, 0, 0);
        assert!(placement.is_empty());
        assert_eq!(placement.pick(None), None);
    }

    #[test]
    fn placement_pick_can_leave_a_core_out() {
        let mut placement = GroupPlacement::new(3);
        placement.set(0, 4, 4);
        placement.set(1, 1, 0);
        placement.set(2, 2, 0);
        assert!(placement.online_elsewhere(1));
        assert!(!placement.online_elsewhere(0));
        // Without core 0 nobody is connected: the offline members share by count.
        assert_eq!(spread(&mut placement, 30, Some(0)), vec![0, 10, 20]);
        placement.set(2, 2, 2);
        assert_eq!(spread(&mut placement, 12, Some(0)), vec![0, 0, 12]);
        assert_eq!(
            placement.pick(Some(5)),
            Some(0),
            "an unknown core leaves nothing out"
        );
    }

    #[test]
    fn placement_ignores_unknown_cores_and_caps_online() {
        let mut placement = GroupPlacement::new(2);
        placement.set(7, 1, 1);
        assert!(placement.is_empty());
        placement.set(1, 2, 5);
        assert_eq!(placement.counts(1), (2, 2));
        assert_eq!(placement.counts(9), (0, 0));
    }

    #[test]
    fn cores_then_members_give_every_connected_member_an_equal_share() {
        // Two cores: three members on core 0, one on core 1, all connected.
        let mut placement = GroupPlacement::new(2);
        placement.set(0, 3, 3);
        placement.set(1, 1, 1);
        let mut core0 = SharedSubscriptions::new();
        let mut core1 = SharedSubscriptions::new();
        let f = shared("$share/g/t");
        for key in [1u32, 2, 3] {
            let _ = core0.insert(&f, key, ());
        }
        let _ = core1.insert(&f, 4u32, ());
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let core = placement.pick(None).unwrap();
            let subs = if core == 0 { &mut core0 } else { &mut core1 };
            let got = picks(subs, "t");
            *counts.entry(got[0].1).or_insert(0) += 1;
        }
        assert_eq!(
            counts,
            HashMap::from([(1, 100), (2, 100), (3, 100), (4, 100)])
        );
    }
}
