//! Tests of [`SubscriptionTree`]: the examples of section 4.7, pruning, and a property test
//! against a matcher simple enough to check by reading.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn filter(raw: &str) -> TopicFilter {
    TopicFilter::try_from(raw).unwrap()
}

fn name(raw: &str) -> TopicName {
    TopicName::try_from(raw).unwrap()
}

/// The reference: walks filter and name level by level, as section 4.7 words it.
fn naive_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false; // [MQTT-4.7.2-1]
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match (level, names.next()) {
            ("#", _) => return true, // the parent level and any number of children
            (_, None) => return false,
            ("+", Some(_)) => {}
            (level, Some(n)) if level == n => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

/// Whether a tree holding only `f` matches `n`, checked against the reference too.
fn tree_matches(f: &str, n: &str) -> bool {
    let mut tree = SubscriptionTree::new();
    let _ = tree.insert(&filter(f), 1u8, ());
    let mut hits = 0;
    tree.matches(&name(n), |_, ()| hits += 1);
    assert!(hits <= 1);
    assert_eq!(
        hits == 1,
        naive_matches(f, n),
        "tree and reference disagree on {f:?} / {n:?}"
    );
    hits == 1
}

#[test]
fn section_4_7_1_2_multi_level_wildcard_examples() {
    for n in [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    ] {
        assert!(tree_matches("sport/tennis/player1/#", n), "{n}");
    }
    assert!(
        tree_matches("sport/#", "sport"),
        "`#` matches its parent level"
    );
    assert!(tree_matches("sport/#", "sport/"));
    assert!(tree_matches("#", "sport/tennis"));
    assert!(tree_matches("#", "/"));
    assert!(!tree_matches("sport/tennis/player1/#", "sport/tennis"));
    assert!(!tree_matches("sport/#", "sports"));
}

#[test]
fn section_4_7_1_3_single_level_wildcard_examples() {
    assert!(tree_matches("sport/tennis/+", "sport/tennis/player1"));
    assert!(tree_matches("sport/tennis/+", "sport/tennis/player2"));
    assert!(!tree_matches(
        "sport/tennis/+",
        "sport/tennis/player1/ranking"
    ));
    assert!(!tree_matches("sport/+", "sport"));
    assert!(
        tree_matches("sport/+", "sport/"),
        "`+` matches an empty level"
    );
    assert!(!tree_matches("sport/+", "sport/tennis/player1"));
    assert!(tree_matches("+/+", "/finance"));
    assert!(tree_matches("/+", "/finance"));
    assert!(!tree_matches("+", "/finance"));
    assert!(tree_matches("+", "finance"));
    assert!(tree_matches("+/tennis/#", "sport/tennis/player1"));
    assert!(tree_matches("sport/+/player1", "sport/tennis/player1"));
}

#[test]
fn mqtt_4_7_2_1_wildcards_at_the_root_do_not_match_dollar_topics() {
    assert!(!tree_matches("#", "$SYS/x"));
    assert!(!tree_matches("#", "$SYS"));
    assert!(!tree_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(tree_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(tree_matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(tree_matches("$SYS/#", "$SYS"));
    assert!(
        tree_matches("a/+", "a/$b"),
        "only the first level is special"
    );
    assert!(tree_matches("#", "a$/b"));
}

#[test]
fn levels_are_compared_exactly_mqtt_4_7_3_4() {
    assert!(!tree_matches("Sport", "sport"), "case sensitive");
    assert!(
        !tree_matches("sport", "sport/"),
        "a trailing `/` is a distinct name"
    );
    assert!(!tree_matches("a/b", "a//b"));
    assert!(tree_matches("a//b", "a//b"));
    assert!(tree_matches("a/+/b", "a//b"));
    assert!(tree_matches("/", "/"));
    assert!(
        !tree_matches("e\u{301}", "\u{e9}"),
        "no Unicode normalisation"
    );
}

#[test]
fn every_matching_subscription_is_visited_once() {
    let mut tree = SubscriptionTree::new();
    let subs = [
        ("sport/#", 1),
        ("sport/+/player1", 2),
        ("+/tennis/#", 3),
        ("#", 4),
        ("sport/tennis/player1", 5),
    ];
    for (f, key) in subs {
        let _ = tree.insert(&filter(f), key, f);
    }
    let _ = tree.insert(&filter("sport/+/player1"), 6, "second key");
    let _ = tree.insert(&filter("news/#"), 7, "no");
    let mut got = Vec::new();
    tree.matches(&name("sport/tennis/player1"), |key, _| got.push(*key));
    got.sort();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn insert_and_remove_report_the_first_and_last_subscriber() {
    let mut tree = SubscriptionTree::new();
    let f = filter("a/+/c");
    assert_eq!(
        tree.insert(&f, 1, 'x'),
        Inserted {
            replaced: None,
            filter_added: true
        }
    );
    assert_eq!(
        tree.insert(&f, 2, 'y'),
        Inserted {
            replaced: None,
            filter_added: false
        }
    );
    assert_eq!(
        tree.insert(&f, 1, 'z'),
        Inserted {
            replaced: Some('x'),
            filter_added: false
        }
    );
    assert_eq!(
        (tree.len(), tree.filter_count(), tree.subscriber_count(&f)),
        (2, 1, 2)
    );
    assert!(tree.contains_filter(&f));
    assert!(!tree.contains_filter(&filter("a/+")));
    assert_eq!(tree.get(&f, &1), Some(&'z'));
    *tree.get_mut(&f, &2).unwrap() = 'w';
    assert_eq!(
        tree.remove(&f, &3),
        Removed {
            removed: None,
            filter_removed: false
        }
    );
    assert_eq!(
        tree.remove(&filter("a/b/c"), &1),
        Removed {
            removed: None,
            filter_removed: false
        }
    );
    assert_eq!(
        tree.remove(&f, &1),
        Removed {
            removed: Some('z'),
            filter_removed: false
        }
    );
    assert_eq!(
        tree.remove(&f, &2),
        Removed {
            removed: Some('w'),
            filter_removed: true
        }
    );
    assert!(tree.is_empty() && !tree.contains_filter(&f));
}

#[test]
fn remove_prunes_nodes_back_to_zero() {
    let mut tree = SubscriptionTree::new();
    let filters = [
        "a/b/c",
        "a/b",
        "a/#",
        "a/+/c/#",
        "#",
        "+",
        "/",
        "//#",
        "a/b/c/d/e/f",
        "x/+/+/y",
        "x/+/z",
    ];
    for (key, f) in filters.iter().enumerate() {
        let _ = tree.insert(&filter(f), key, ());
        let _ = tree.insert(&filter(f), key + 100, ());
    }
    assert!(tree.node_count() > 10);
    // Remove in an order unlike insertion, so that pruning meets shared prefixes.
    for (key, f) in filters
        .iter()
        .enumerate()
        .rev()
        .chain(filters.iter().enumerate())
    {
        let key = if tree.get(&filter(f), &key).is_some() {
            key
        } else {
            key + 100
        };
        assert!(tree.remove(&filter(f), &key).removed.is_some(), "{f}");
    }
    assert!(tree.is_empty());
    assert_eq!(tree.filter_count(), 0);
    assert_eq!(tree.node_count(), 0);
    // A branch pruned from the middle of the tree leaves its siblings working.
    let _ = tree.insert(&filter("p/q/r"), 1, ());
    let _ = tree.insert(&filter("p/q/s/t/u"), 2, ());
    let before = tree.node_count();
    let _ = tree.remove(&filter("p/q/s/t/u"), &2);
    assert_eq!(tree.node_count(), before - 3);
    assert!(tree_has(&tree, "p/q/r", 1));
}

fn tree_has(tree: &SubscriptionTree<usize, ()>, n: &str, key: usize) -> bool {
    let mut found = false;
    tree.matches(&name(n), |k, ()| found |= *k == key);
    found
}

#[test]
fn matches_mut_updates_values_in_place() {
    let mut tree = SubscriptionTree::new();
    let _ = tree.insert(&filter("a/#"), 1, 0u32);
    let _ = tree.insert(&filter("a/+"), 2, 0u32);
    for _ in 0..3 {
        tree.matches_mut(&name("a/b"), |_, hits| *hits += 1);
    }
    assert_eq!(tree.get(&filter("a/#"), &1), Some(&3));
    assert_eq!(tree.get(&filter("a/+"), &2), Some(&3));
}

#[test]
fn for_each_filter_lists_what_was_inserted() {
    let mut tree = SubscriptionTree::new();
    let filters = ["#", "+", "/", "a", "a/#", "a/+/b", "+/+", "//#", "$SYS/#"];
    for f in filters {
        let _ = tree.insert(&filter(f), 1, ());
    }
    let _ = tree.insert(&filter("a/+/b"), 2, ());
    let mut listed = BTreeMap::new();
    tree.for_each_filter(|f, n| assert!(listed.insert(f.to_owned(), n).is_none()));
    let mut want: BTreeMap<String, usize> = filters.iter().map(|f| (f.to_string(), 1)).collect();
    want.insert("a/+/b".into(), 2);
    assert_eq!(listed, want);
}

#[test]
fn very_deep_filters_neither_overflow_the_stack_nor_miss() {
    let levels = 30_000;
    let deep_filter = vec!["+"; levels].join("/");
    let deep_name = vec!["a"; levels].join("/");
    let mut tree = SubscriptionTree::new();
    let _ = tree.insert(&filter(&deep_filter), 1, ());
    let _ = tree.insert(
        &filter(&format!("{}/#", vec!["a"; levels - 1].join("/"))),
        2,
        (),
    );
    let mut got = Vec::new();
    tree.matches(&name(&deep_name), |k, ()| got.push(*k));
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(tree.node_count(), 2 * levels - 1);
    let _ = tree.remove(&filter(&deep_filter), &1);
    assert_eq!(tree.node_count(), levels - 1);
    // Dropping what is left must not recurse either.
}

#[test]
fn many_subscribers_of_one_filter_and_many_children_of_one_node() {
    let mut tree = SubscriptionTree::new();
    for id in 0..2_000u32 {
        let _ = tree.insert(&filter("broadcast"), id, id);
        let _ = tree.insert(&filter(&format!("device/{id}/cmd")), id, id);
    }
    let mut hits = 0;
    tree.matches(&name("broadcast"), |_, _| hits += 1);
    assert_eq!(hits, 2_000);
    let mut got = Vec::new();
    tree.matches(&name("device/1234/cmd"), |k, v| got.push((*k, *v)));
    assert_eq!(got, vec![(1234, 1234)]);
    for id in 0..2_000u32 {
        assert!(tree.remove(&filter("broadcast"), &id).removed.is_some());
        assert!(tree
            .remove(&filter(&format!("device/{id}/cmd")), &id)
            .removed
            .is_some());
    }
    assert_eq!((tree.len(), tree.node_count()), (0, 0));
}

/// Levels from a small alphabet, so that random filters and names often overlap;
/// `$a` exercises [MQTT-4.7.2-1] and the empty level `a//b`.
fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$a"])
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let levels = prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+")], 1..4);
    let built = (levels, any::<bool>()).prop_map(|(levels, multi)| {
        let mut f = levels.join("/");
        if multi {
            f.push_str("/#");
        }
        f
    });
    // A single empty level is the empty string, which no filter may be [MQTT-4.7.3-1].
    let built = built.prop_filter("non-empty", |f| !f.is_empty());
    prop_oneof![9 => built, 1 => Just("#".to_string())]
}

fn name_strategy() -> impl Strategy<Value = String> {
    let names = prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"));
    names.prop_filter("non-empty", |n| !n.is_empty())
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u8),
    Remove(String, u8),
    Match(String),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (filter_strategy(), 0..4u8).prop_map(|(f, k)| Op::Insert(f, k)),
        3 => (filter_strategy(), 0..4u8).prop_map(|(f, k)| Op::Remove(f, k)),
        3 => name_strategy().prop_map(Op::Match),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tree_agrees_with_the_naive_matcher(ops in prop::collection::vec(op_strategy(), 1..80)) {
        let mut tree = SubscriptionTree::new();
        // (filter, key) -> value: the model.
        let mut model: BTreeMap<(String, u8), usize> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(f, key) => {
                    let had_filter = model.keys().any(|(mf, _)| *mf == f);
                    let previous = model.insert((f.clone(), key), step);
                    let got = tree.insert(&filter(&f), key, step);
                    prop_assert_eq!(got, Inserted { replaced: previous, filter_added: !had_filter });
                }
                Op::Remove(f, key) => {
                    let previous = model.remove(&(f.clone(), key));
                    let has_filter = model.keys().any(|(mf, _)| *mf == f);
                    let got = tree.remove(&filter(&f), &key);
                    let filter_removed = previous.is_some() && !has_filter;
                    prop_assert_eq!(got, Removed { removed: previous, filter_removed });
                }
                Op::Match(n) => {
                    let want: BTreeSet<(u8, usize)> = model
                        .iter()
                        .filter(|((f, _), _)| naive_matches(f, &n))
                        .map(|((_, key), value)| (*key, *value))
                        .collect();
                    let mut got = Vec::new();
                    tree.matches(&name(&n), |key, value| got.push((*key, *value)));
                    let got_set: BTreeSet<_> = got.iter().copied().collect();
                    prop_assert_eq!(got.len(), got_set.len(), "visited twice");
                    prop_assert_eq!(got_set, want, "name {:?}", n);
                }
            }
            prop_assert_eq!(tree.len(), model.len());
            let filters: BTreeSet<&String> = model.keys().map(|(f, _)| f).collect();
            prop_assert_eq!(tree.filter_count(), filters.len());
        }
        for (f, key) in model.keys() {
            prop_assert!(tree.remove(&filter(f), key).removed.is_some());
        }
        prop_assert_eq!(tree.node_count(), 0);
        prop_assert!(tree.is_empty());
    }
}
