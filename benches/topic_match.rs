//! Match throughput and subscribe rate of the per-core subscription tree.
//!
//! The filter mix is a device fleet: for device `i`, `device/{i}/cmd` (90%), or
//! `device/{i}/+` (5%), or `device/{i}/#` (5%), plus a few fleet-wide filters
//! (`device/+/alarm` twice, `fleet/#`, `$SYS/#`). Publishes go 80% to `device/{r}/cmd`,
//! 10% to `device/{r}/alarm` and 10% to `device/{r}/telemetry`, for a fan-out of zero to
//! three subscriptions, about one on average (printed).
//!
//! Memory per filter is the growth of the resident set while the tree is built (read from
//! `/proc/self/statm`): it includes the allocator's overhead and the arena's slack, and
//! excludes the `TopicFilter`s handed to `insert`, which were made beforehand.
//!
//! Run: `cargo bench --bench topic_match -- --warm-up-time 1 --measurement-time 3`

use berth::topic::{SubscriptionTree, TopicFilter, TopicName};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Instant;

type Tree = SubscriptionTree<u32, u8>;

const SIZES: [usize; 2] = [10_000, 1_000_000];
const TOPICS: usize = 4096;

fn filter(raw: String) -> TopicFilter {
    TopicFilter::try_from(raw).expect("bench filters are valid")
}

/// The device fleet's filters, keyed by subscriber; `n` device filters plus four shared.
fn fleet_filters(n: usize) -> Vec<(TopicFilter, u32)> {
    let mut filters: Vec<(TopicFilter, u32)> = (0..n)
        .map(|i| {
            let raw = match i % 20 {
                0 => format!("device/{i}/+"),
                10 => format!("device/{i}/#"),
                _ => format!("device/{i}/cmd"),
            };
            (filter(raw), i as u32)
        })
        .collect();
    for (raw, key) in [
        ("device/+/alarm", 0),
        ("device/+/alarm", 1),
        ("fleet/#", 2),
        ("$SYS/#", 3),
    ] {
        filters.push((filter(raw.to_owned()), u32::MAX - key));
    }
    filters
}

/// A small xorshift: reproducible topics without another dependency.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn fleet_topics(n: usize) -> Vec<TopicName> {
    let mut state = 0x9e37_79b9_7f4a_7c15;
    (0..TOPICS)
        .map(|_| {
            let device = xorshift(&mut state) as usize % n;
            let raw = match xorshift(&mut state) % 10 {
                0 => format!("device/{device}/alarm"),
                1 => format!("device/{device}/telemetry"),
                _ => format!("device/{device}/cmd"),
            };
            TopicName::try_from(raw).expect("bench topics are valid")
        })
        .collect()
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Builds the tree for `n` devices and prints how long that took and what it costs.
fn build(n: usize) -> Tree {
    let filters = fleet_filters(n);
    let before = resident_bytes();
    let start = Instant::now();
    let mut tree = Tree::new();
    for (f, key) in &filters {
        let _ = tree.insert(f, *key, 1);
    }
    let took = start.elapsed();
    let after = resident_bytes();
    let count = filters.len();
    let per_insert = took.as_nanos() as f64 / count as f64;
    print!(
        "tree of {count} filters: built in {took:.2?} ({per_insert:.0} ns/insert), {} nodes",
        tree.node_count()
    );
    if let (Some(before), Some(after)) = (before, after) {
        let per_filter = after.saturating_sub(before) as f64 / count as f64;
        print!(
            ", resident +{:.1} MiB = {per_filter:.0} B/filter",
            (after - before) as f64 / 1048576.0
        );
    }
    println!();
    tree
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in SIZES {
        let tree = build(n);
        let topics = fleet_topics(n);
        let mut total = 0usize;
        for topic in &topics {
            tree.matches(topic, |_, _| total += 1);
        }
        println!(
            "fan-out over {} topics: {:.2} subscriptions per publish",
            topics.len(),
            total as f64 / topics.len() as f64
        );
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &topics, |b, topics| {
            let mut i = 0;
            b.iter(|| {
                let topic = &topics[i % TOPICS];
                i += 1;
                let mut hits = 0u32;
                tree.matches(black_box(topic), |key, qos| {
                    hits = hits.wrapping_add(key ^ u32::from(*qos))
                });
                hits
            });
        });
    }
    group.finish();
}

fn bench_subscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe");
    // Filling an empty tree: the rate a core takes a burst of new sessions.
    let batch = 10_000;
    let filters = fleet_filters(batch);
    group.throughput(Throughput::Elements(filters.len() as u64));
    group.bench_function("insert_10k_into_empty", |b| {
        b.iter_batched(
            Tree::new,
            |mut tree| {
                for (f, key) in &filters {
                    let _ = tree.insert(f, *key, 1);
                }
                tree
            },
            BatchSize::LargeInput,
        );
    });
    // Steady state at a million: one session subscribing and unsubscribing.
    let n = 1_000_000;
    let mut tree = build(n);
    let extra: Vec<TopicFilter> = (0..TOPICS)
        .map(|i| filter(format!("device/{}/cmd", n + i)))
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_remove_at_1m", |b| {
        let mut i = 0;
        b.iter(|| {
            let f = &extra[i % TOPICS];
            i += 1;
            let added = tree.insert(f, 7, 1).filter_added;
            let removed = tree.remove(f, &7).filter_removed;
            added && removed
        });
    });
    assert_eq!(tree.len(), n + 4);
    group.finish();
}

criterion_group!(benches, bench_match, bench_subscribe);
criterion_main!(benches);
