//! Traffic between two pinned glommio executors (cores 0 and 1).
//!
//! * `route`: the publish routing path across cores. Core 0's engine (`Broker`) takes a
//!   QoS 0 PUBLISH (64-byte payload), matches it against its interest table and batches the
//!   resulting `CoreMsg`s, which cross a `shared_channel` to core 1, whose engine matches
//!   them against `subs` local subscriptions (`bench/+/t`) and produces one PUBLISH packet
//!   per subscriber (dropped here: encoding and sockets are not measured). `batch` is how
//!   many publishes share one channel message, as one socket read's worth does in the
//!   server. `shared=100`: one share group of 100 members on core 1 instead (core 0 picks
//!   the core, core 1 the member: one delivery per publish). Throughput is publishes per
//!   second, one way.
//! * `channel`: the channel alone, `u64` messages. glommio's `shared_channel` against
//!   crossbeam-channel woken through an `AtomicWaker` (the producer wakes the consumer only
//!   when it parked, and the other way round when the bounded queue was full), both bounded
//!   at 4096 like the server's mesh; each with the executors parking at once (`park`) or
//!   spinning 50 us first (`spin50us`, `LocalExecutorBuilder::spin_before_park`).
//!   `one_way`: messages per second from core 0 to core 1; `round_trip`: time for a
//!   message to go to core 1 and back.
//!
//! Each configuration starts its two executors once; criterion's main thread asks core 0
//! for `iters` messages (std mpsc) and times until the finishing core reports back.
//!
//! Run: `cargo bench --bench cross_core -- --warm-up-time 1 --measurement-time 3`

use std::future::{poll_fn, Future};
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::TrySendError;
use futures_util::task::AtomicWaker;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use berth::broker::{Broker, CoreMsg, SessionPolicy};
use berth::ownership::CoreId;
use berth::protocol::{PacketId, Properties, Publish, QoS, Subscribe, SubscriptionOptions};

const CAPACITY: usize = 4096;
/// The consumer's signal that a one-way run is complete.
const END: u64 = u64::MAX;
/// Tells both sides to stop.
const STOP: u64 = u64::MAX - 1;

enum Cmd {
    Run(u64),
    Stop,
}

/// Two executors running a producer (core 0) and a consumer (core 1).
struct Pair {
    cmd: mpsc::Sender<Cmd>,
    done: mpsc::Receiver<()>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl Pair {
    fn run(&self, n: u64) -> Duration {
        let started = Instant::now();
        self.cmd.send(Cmd::Run(n)).expect("producer alive");
        self.done.recv().expect("run completes");
        started.elapsed()
    }

    fn stop(self) {
        let _ = self.cmd.send(Cmd::Stop);
        for executor in self.executors {
            executor.join().expect("executor ends cleanly");
        }
    }
}

fn executor<F, Fut>(core: usize, spin: Option<Duration>, body: F) -> ExecutorJoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(core))
        .name(&format!("bench-core-{core}"))
        .io_memory(512 << 10)
        .ring_depth(1024);
    if let Some(spin) = spin {
        builder = builder.spin_before_park(spin);
    }
    builder.spawn(body).expect("executor starts")
}

// --- the two channels -----------------------------------------------------------------------

trait SendEnd {
    async fn send(&self, v: u64);
}

trait RecvEnd {
    async fn recv(&self) -> u64;
}

impl SendEnd for ConnectedSender<u64> {
    async fn send(&self, v: u64) {
        ConnectedSender::send(self, v)
            .await
            .expect("receiver alive");
    }
}

impl RecvEnd for ConnectedReceiver<u64> {
    async fn recv(&self) -> u64 {
        ConnectedReceiver::recv(self).await.expect("sender alive")
    }
}

/// The wake-up state both ends of a crossbeam channel share.
#[derive(Default)]
struct Wakeups {
    consumer: AtomicWaker,
    consumer_parked: AtomicBool,
    producer: AtomicWaker,
    producer_parked: AtomicBool,
}

struct CrossbeamTx {
    tx: crossbeam_channel::Sender<u64>,
    wake: Arc<Wakeups>,
}

struct CrossbeamRx {
    rx: crossbeam_channel::Receiver<u64>,
    wake: Arc<Wakeups>,
}

fn crossbeam_bounded() -> (CrossbeamTx, CrossbeamRx) {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let wake = Arc::new(Wakeups::default());
    (
        CrossbeamTx {
            tx,
            wake: wake.clone(),
        },
        CrossbeamRx { rx, wake },
    )
}

impl SendEnd for CrossbeamTx {
    async fn send(&self, mut v: u64) {
        loop {
            match self.tx.try_send(v) {
                Ok(()) => {
                    // Pairs with the consumer's fence: either it sees the message on its
                    // second look, or we see that it parked.
                    fence(SeqCst);
                    if self.wake.consumer_parked.swap(false, SeqCst) {
                        self.wake.consumer.wake();
                    }
                    return;
                }
                Err(TrySendError::Full(back)) => {
                    v = back;
                    poll_fn(|cx| {
                        self.wake.producer.register(cx.waker());
                        self.wake.producer_parked.store(true, SeqCst);
                        fence(SeqCst);
                        if self.tx.is_full() {
                            Poll::Pending
                        } else {
                            self.wake.producer_parked.store(false, SeqCst);
                            Poll::Ready(())
                        }
                    })
                    .await;
                }
                Err(TrySendError::Disconnected(_)) => panic!("receiver gone"),
            }
        }
    }
}

impl CrossbeamRx {
    fn took_one(&self) {
        fence(SeqCst);
        if self.wake.producer_parked.swap(false, SeqCst) {
            self.wake.producer.wake();
        }
    }
}

impl RecvEnd for CrossbeamRx {
    async fn recv(&self) -> u64 {
        poll_fn(|cx| {
            if let Ok(v) = self.rx.try_recv() {
                self.took_one();
                return Poll::Ready(v);
            }
            self.wake.consumer.register(cx.waker());
            self.wake.consumer_parked.store(true, SeqCst);
            fence(SeqCst);
            match self.rx.try_recv() {
                Ok(v) => {
                    self.wake.consumer_parked.store(false, SeqCst);
                    self.took_one();
                    Poll::Ready(v)
                }
                Err(_) => Poll::Pending,
            }
        })
        .await
    }
}

// --- one way and round trip over either channel ---------------------------------------------

/// Core 0: on each command, sends `n` messages (one way: then `END`; round trip: waiting
/// for each to come back, then reporting).
async fn producer(
    tx: impl SendEnd,
    back: Option<impl RecvEnd>,
    cmds: mpsc::Receiver<Cmd>,
    done: mpsc::Sender<()>,
) {
    // Blocking between runs is fine: nothing else runs on this executor.
    while let Ok(Cmd::Run(n)) = cmds.recv() {
        match &back {
            Some(back) => {
                for i in 0..n {
                    tx.send(i).await;
                    back.recv().await;
                }
                done.send(()).expect("main waits");
            }
            None => {
                for i in 0..n {
                    tx.send(i).await;
                }
                tx.send(END).await;
            }
        }
    }
    tx.send(STOP).await;
}

/// Core 1: echoes every message (round trip) or reports each `END` (one way).
async fn consumer(rx: impl RecvEnd, back: Option<impl SendEnd>, done: mpsc::Sender<()>) {
    loop {
        match rx.recv().await {
            STOP => return,
            END => done.send(()).expect("main waits"),
            v => {
                if let Some(back) = &back {
                    back.send(v).await;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Glommio,
    Crossbeam,
}

fn channel_pair(kind: Kind, round_trip: bool, spin: Option<Duration>) -> Pair {
    let (cmd, cmds) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let done_rx = done_tx.clone();
    let executors = match kind {
        Kind::Glommio => {
            let (tx, rx) = shared_channel::new_bounded::<u64>(CAPACITY);
            let (back_tx, back_rx) = shared_channel::new_bounded::<u64>(CAPACITY);
            vec![
                executor(0, spin, move || async move {
                    let tx = tx.connect().await;
                    let back = back_rx.connect().await;
                    producer(tx, round_trip.then_some(back), cmds, done_tx).await;
                }),
                executor(1, spin, move || async move {
                    let rx = rx.connect().await;
                    let back = back_tx.connect().await;
                    consumer(rx, round_trip.then_some(back), done_rx).await;
                }),
            ]
        }
        Kind::Crossbeam => {
            let (tx, rx) = crossbeam_bounded();
            let (back_tx, back_rx) = crossbeam_bounded();
            vec![
                executor(0, spin, move || async move {
                    producer(tx, round_trip.then_some(back_rx), cmds, done_tx).await;
                }),
                executor(1, spin, move || async move {
                    consumer(rx, round_trip.then_some(back_tx), done_rx).await;
                }),
            ]
        }
    };
    Pair {
        cmd,
        done,
        executors,
    }
}

fn channels(c: &mut Criterion) {
    for round_trip in [false, true] {
        let name = if round_trip {
            "channel/round_trip"
        } else {
            "channel/one_way"
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for kind in [Kind::Glommio, Kind::Crossbeam] {
            for spin in [None, Some(Duration::from_micros(50))] {
                let label = format!(
                    "{}/{}",
                    format!("{kind:?}").to_lowercase(),
                    if spin.is_some() { "spin50us" } else { "park" }
                );
                let pair = channel_pair(kind, round_trip, spin);
                group.bench_function(label, |b| b.iter_custom(|iters| pair.run(iters)));
                pair.stop();
            }
        }
        group.finish();
    }
}

// --- the routing path -----------------------------------------------------------------------

const PLAIN: &str = "bench/+/t";
/// One share group whose members all live on core 1: one delivery per publish.
const SHARED: &str = "$share/g/bench/+/t";

enum Wire {
    Batch(Vec<CoreMsg>),
    End,
    Stop,
}

fn broker(core: usize) -> Broker {
    let policy = SessionPolicy {
        max_session_expiry: Duration::from_secs(60),
        ..SessionPolicy::default()
    };
    Broker::new(
        CoreId(core),
        2,
        policy,
        berth::broker::WallClock::now_from_system(),
    )
}

/// Connects `clients` sessions to `engine` and subscribes each to `filter`; returns what
/// the engine announces to the other cores.
fn subscribe_all(engine: &mut Broker, clients: usize, filter: &'static str) -> Vec<CoreMsg> {
    let now = Instant::now();
    let mut announced = Vec::new();
    for n in 0..clients {
        let client = ByteString::from(format!("sub-{n}"));
        let _ = engine.connect(&client, true, Duration::ZERO, u16::MAX, now);
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).expect("nonzero"),
            properties: Properties::default(),
            filters: vec![(filter.into(), SubscriptionOptions::default())],
        };
        let outcome = engine.subscribe(&client, subscribe, now);
        announced.extend(outcome.effects.to_cores.into_iter().map(|(_, msg)| msg));
    }
    announced
}

fn route_pair(subs: usize, filter: &'static str, batch: u64) -> Pair {
    let (cmd, cmds) = mpsc::channel::<Cmd>();
    let (done_tx, done) = mpsc::channel();
    let (tx, rx) = shared_channel::new_bounded::<Wire>(CAPACITY);
    let executors = vec![
        executor(0, None, move || async move {
            let mut publisher = broker(0);
            // Core 1's interest, as its SUBSCRIBEs announced it.
            let now = Instant::now();
            for msg in subscribe_all(&mut broker(1), subs, filter) {
                let _ = publisher.on_core_msg(msg, now);
            }
            let tx = tx.connect().await;
            let who = ByteString::from_static("publisher");
            let publish = Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "bench/x/t".into(),
                packet_id: None,
                properties: Properties::default(),
                payload: Bytes::from(vec![b'x'; 64]),
            };
            while let Ok(Cmd::Run(n)) = cmds.recv() {
                let mut left = n;
                while left > 0 {
                    let now = Instant::now();
                    let mut out = Vec::with_capacity(batch as usize);
                    for _ in 0..batch.min(left) {
                        let effects = publisher.publish(&who, publish.clone(), now);
                        out.extend(effects.to_cores.into_iter().map(|(_, msg)| msg));
                    }
                    left -= batch.min(left);
                    let _ = tx.send(Wire::Batch(out)).await;
                }
                let _ = tx.send(Wire::End).await;
            }
            let _ = tx.send(Wire::Stop).await;
        }),
        executor(1, None, move || async move {
            let mut subscriber = broker(1);
            let _ = subscribe_all(&mut subscriber, subs, filter);
            let rx = rx.connect().await;
            let mut delivered = 0u64;
            while let Some(wire) = rx.recv().await {
                match wire {
                    Wire::Batch(msgs) => {
                        let now = Instant::now();
                        for msg in msgs {
                            delivered += subscriber.on_core_msg(msg, now).to_clients.len() as u64;
                        }
                    }
                    Wire::End => {
                        assert!(delivered > 0, "the publishes reached core 1's subscribers");
                        done_tx.send(()).expect("main waits");
                    }
                    Wire::Stop => break,
                }
            }
        }),
    ];
    Pair {
        cmd,
        done,
        executors,
    }
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    for (subs, filter, batch) in [
        (1, PLAIN, 1),
        (1, PLAIN, 64),
        (100, PLAIN, 64),
        (100, SHARED, 64),
    ] {
        let pair = route_pair(subs, filter, batch);
        let kind = if filter == SHARED { "shared" } else { "subs" };
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kind}={subs}/batch={batch}")),
            &batch,
            |b, _| b.iter_custom(|iters| pair.run(iters)),
        );
        pair.stop();
    }
    group.finish();
}

criterion_group!(benches, route, channels);
criterion_main!(benches);
