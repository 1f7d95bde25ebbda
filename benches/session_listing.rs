//! What a page of the admin API's session listing (`GET /api/v1/clients`) costs the core
//! that answers it: `Broker::list_sessions` over `BERTH_BENCH_SESSIONS` (default 100,000)
//! offline persistent sessions on one core, the worst case (the server spreads sessions
//! over its cores, and a page asks the cores in turn, each for what is left of it).
//!
//! - `first_page` and `middle_page`: a page of 100 (the API's default limit), from the
//!   start and from a cursor half-way;
//! - `large_page`: a page of 10,000 (the API's largest);
//! - `filtered`: a `like_clientid` filter that takes one session in a thousand;
//! - then a walk of every session in pages of 100, as a client following the cursor does,
//!   timed once and printed (pages, total, slowest page), with a check that it saw every
//!   session exactly once.
//!
//! ```sh
//! cargo bench --bench session_listing -- --warm-up-time 1 --measurement-time 3
//! BERTH_BENCH_SESSIONS=1000000 cargo bench --bench session_listing
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion};

use berth::broker::{Broker, SessionPolicy, SessionQuery, WallClock};
use berth::ownership::CoreId;

fn sessions() -> usize {
    std::env::var("BERTH_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn id(i: usize) -> String {
    format!("device-{i:07}")
}

fn broker(sessions: usize, now: Instant) -> Broker {
    let mut broker = Broker::new(
        CoreId(0),
        1,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    for i in 0..sessions {
        let id = ByteString::from(id(i));
        broker
            .connect(&id, false, Duration::from_secs(3600), 100, now)
            .expect("no session limit");
        broker.disconnect(&id, None, now);
    }
    broker
}

/// Every session in pages of `limit`, following the cursor; (pages, slowest page).
fn walk(broker: &Broker, limit: usize, now: Instant) -> (usize, Duration) {
    let query = SessionQuery::default();
    let (mut after, mut pages, mut slowest, mut seen) = (None::<String>, 0, Duration::ZERO, 0);
    let mut last = String::new();
    loop {
        let started = Instant::now();
        let (page, more) = broker.list_sessions(&query, after.as_deref(), limit, now);
        slowest = slowest.max(started.elapsed());
        pages += 1;
        for view in &page {
            assert!(
                *view.client_id > *last,
                "pages are in client id order, each id once"
            );
            last = view.client_id.to_string();
        }
        seen += page.len();
        if !more {
            break;
        }
        after = Some(last.clone());
    }
    assert_eq!(seen, broker.session_count(), "the walk saw every session");
    (pages, slowest)
}

fn listing(c: &mut Criterion) {
    let now = Instant::now();
    let n = sessions();
    let built = Instant::now();
    let broker = broker(n, now);
    eprintln!("{n} offline sessions made in {:?}", built.elapsed());
    let all = SessionQuery::default();
    let middle = id(n / 2);
    let mut group = c.benchmark_group(format!("list_sessions/{n}"));
    group.sample_size(20);
    group.bench_function("first_page", |b| {
        b.iter(|| black_box(broker.list_sessions(&all, None, 100, now)))
    });
    group.bench_function("middle_page", |b| {
        b.iter(|| black_box(broker.list_sessions(&all, Some(&middle), 100, now)))
    });
    group.bench_function("large_page", |b| {
        b.iter(|| black_box(broker.list_sessions(&all, None, 10_000, now)))
    });
    let filtered = SessionQuery {
        like_client_id: Some("999".into()),
        ..SessionQuery::default()
    };
    group.bench_function("filtered", |b| {
        b.iter(|| black_box(broker.list_sessions(&filtered, None, 100, now)))
    });
    group.finish();
    let started = Instant::now();
    let (pages, slowest) = walk(&broker, 100, now);
    let total = started.elapsed();
    eprintln!(
        "walk of {n} sessions in pages of 100: {pages} pages in {total:?}, {:?} a page on average, slowest {slowest:?}",
        total / pages as u32
    );
}

criterion_group!(benches, listing);
criterion_main!(benches);
