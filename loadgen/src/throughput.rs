//! The `throughput` scenario: publishers and subscribers in one of four patterns, QoS 0/1/2,
//! a fixed total rate or as fast as the broker takes it, for a duration. Reports messages/s
//! in (acknowledged by the broker, or written for QoS 0) and out (received by subscribers),
//! deliveries missing against what the pattern should deliver, and end-to-end latency from
//! the send time each payload carries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::protocol::{Packet, QoS};
use bytestring::ByteString;
use clap::ValueEnum;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::conn::{ack, now_ns, parse_payload, payload, Conn};
use crate::publisher::{self, PublishPlan};
use crate::report::{hist, record_ns, Errors, Hist, Report};
use crate::{check_fds, qos_arg, Common};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Publisher i -> topic i -> subscriber i.
    Pairs,
    /// Every publisher -> one topic -> every subscriber (default one).
    FanIn,
    /// Publishers (default one) -> one topic -> every subscriber.
    FanOut,
    /// Every publisher -> one topic -> a shared subscription ($share/lg/...) of the subscribers.
    Shared,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "pairs")]
    pub pattern: Pattern,
    /// Publisher/subscriber pairs (pattern pairs).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Publishers (fan-in default 100, fan-out 1, shared 10).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers (fan-in default 1, fan-out 100, shared 10).
    #[arg(long)]
    pub subscribers: Option<usize>,
    #[arg(long, default_value = "1", value_parser = qos_arg)]
    pub qos: QoS,
    /// Payload bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Total messages per second over all publishers; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Most connections being opened at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
}

impl Args {
    fn shape(&self) -> (usize, usize, &'static str) {
        let (p, s) = match self.pattern {
            Pattern::Pairs => (self.pairs, self.pairs),
            Pattern::FanIn => (
                self.publishers.unwrap_or(100),
                self.subscribers.unwrap_or(1),
            ),
            Pattern::FanOut => (
                self.publishers.unwrap_or(1),
                self.subscribers.unwrap_or(100),
            ),
            Pattern::Shared => (
                self.publishers.unwrap_or(10),
                self.subscribers.unwrap_or(10),
            ),
        };
        let name = match self.pattern {
            Pattern::Pairs => "pairs",
            Pattern::FanIn => "fan-in",
            Pattern::FanOut => "fan-out",
            Pattern::Shared => "shared",
        };
        (p.max(1), s.max(1), name)
    }
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    out_of_order: AtomicU64,
    last_receive_ns: AtomicU64,
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<u64> {
    let (pubs, subs, pattern) = args.shape();
    check_fds(pubs + subs, nofile)?;
    let target = Arc::new(args.common.target()?);
    let prefix = args.common.prefix();
    let mut report = Report::new(
        "throughput",
        json!(std::env::args().collect::<Vec<_>>()),
        args.common.broker_pid,
    );
    let errors = report.errors.clone();
    let topic = |i: usize| match args.pattern {
        Pattern::Pairs => format!("{prefix}/t/{i}"),
        _ => format!("{prefix}/t"),
    };
    let filter = |i: usize| match args.pattern {
        Pattern::Shared => format!("$share/lg/{prefix}/t"),
        _ => topic(i),
    };

    // Subscribers first, all subscribed before anything is published.
    let counts = Arc::new(Counts::default());
    let latency = Arc::new(Mutex::new(hist()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut sub_tasks = Vec::new();
    let mut ready = Vec::new();
    for i in 0..subs {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (target, errors, counts, latency) = (
            target.clone(),
            errors.clone(),
            counts.clone(),
            latency.clone(),
        );
        let (filter, qos, stop) = (filter(i), args.qos, stop_rx.clone());
        let id = format!("{prefix}-sub-{i}");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        sub_tasks.push(tokio::spawn(async move {
            let conn = async {
                let (mut conn, _) = target.connect(i as u64, &id, true, false).await?;
                conn.subscribe(&[(filter, qos)]).await?;
                Ok(conn)
            }
            .await;
            drop(permit);
            match conn {
                Ok(conn) => {
                    let _ = ready_tx.send(());
                    subscribe_loop(conn, pubs, stop, &counts, &latency, &errors).await;
                }
                Err(f) => errors.failure(&f),
            }
        }));
    }
    for r in ready {
        let _ = r.await;
    }

    let mut pub_conns = Vec::new();
    for i in 0..pubs {
        let id = format!("{prefix}-pub-{i}");
        match target.connect((subs + i) as u64, &id, true, false).await {
            Ok((c, _)) => pub_conns.push((i, c)),
            Err(f) => errors.failure(&f),
        }
    }
    let started = Instant::now();
    let started_ns = now_ns();
    let until = started + Duration::from_secs_f64(args.duration);
    let mut pub_tasks = Vec::new();
    for (i, conn) in pub_conns {
        let plan = PublishPlan {
            qos: args.qos,
            window: args.inflight,
            rate: args.rate / pubs as f64,
            until: Some(until),
            drain: target.timeout,
        };
        let topic = ByteString::from(topic(i));
        let size = args.payload;
        let errors = errors.clone();
        pub_tasks.push(tokio::spawn(async move {
            let next = |n: u64| Some((topic.clone(), payload(i as u32, n as u32, size)));
            match publisher::run(conn, plan, next).await {
                Ok(done) => Some(done),
                Err(f) => {
                    errors.failure(&f);
                    None
                }
            }
        }));
    }
    let (mut sent, mut acked) = (0u64, 0u64);
    for t in pub_tasks {
        if let Ok(Some(done)) = t.await {
            sent += done.sent;
            acked += done.acked;
        }
    }
    let publish_wall = started.elapsed().as_secs_f64();
    let expected = match args.pattern {
        Pattern::Pairs | Pattern::Shared => sent,
        Pattern::FanIn | Pattern::FanOut => sent * subs as u64,
    };
    // Let the last deliveries arrive: until all are in, or nothing new for two seconds.
    let mut last_seen = (counts.received.load(Ordering::Relaxed), Instant::now());
    loop {
        let got = counts.received.load(Ordering::Relaxed);
        if got >= expected || last_seen.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        if got != last_seen.0 {
            last_seen = (got, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for t in sub_tasks {
        let _ = t.await;
    }
    let received = counts.received.load(Ordering::Relaxed);
    let last_receive_ns = counts.last_receive_ns.load(Ordering::Relaxed);
    let receive_wall = (last_receive_ns.saturating_sub(started_ns) as f64 / 1e9).max(1e-9);
    let missing = expected.saturating_sub(received);
    if missing > 0 && args.qos != QoS::AtMostOnce {
        errors.add(
            "lost_messages",
            missing,
            &format!("{received} of {expected} deliveries arrived"),
        );
    }
    report.set(
        "throughput",
        json!({
            "pattern": pattern, "publishers": pubs, "subscribers": subs, "qos": args.qos as u8,
            "payload_bytes": args.payload, "rate_asked": args.rate, "duration_s": args.duration,
            "sent": sent, "acked": acked, "expected_deliveries": expected, "received": received,
            "missing": missing,
            "out_of_order_or_duplicate": counts.out_of_order.load(Ordering::Relaxed),
            "publish_wall_s": publish_wall,
            "msgs_in_per_s": sent as f64 / publish_wall,
            "msgs_out_per_s": received as f64 / receive_wall,
        }),
    );
    let h = latency.lock().expect("lock").clone();
    report.hist("end_to_end", h);
    args.common.finish(report)
}

/// Reads deliveries until told to stop: acknowledges them, records latency, checks that each
/// publisher's sequence numbers only rise.
async fn subscribe_loop(
    mut conn: Conn,
    publishers: usize,
    mut stop: watch::Receiver<bool>,
    counts: &Counts,
    latency: &Mutex<Hist>,
    errors: &Errors,
) {
    let mut local = hist();
    let mut last_seq = vec![None::<u32>; publishers];
    let mut ooo = 0u64;
    conn.set_timeout(Duration::from_secs(24 * 3600));
    'reading: loop {
        let mut packet = tokio::select! {
            p = conn.next() => p,
            _ = stop.changed() => break,
        };
        // Everything that one read brought arrived at the same moment: one clock reading
        // and one update of the shared counters per read, not per message (1,000
        // subscriber tasks bumping the same atomics per message cost the load generator
        // more CPU than the decoding).
        let now = now_ns();
        let mut received = 0u64;
        loop {
            let publish = match packet {
                Ok(Packet::Publish(p)) => Some(p),
                Ok(Packet::PubRel(a)) => {
                    conn.queue(&Packet::PubComp(ack(a.packet_id)));
                    None
                }
                Ok(_) => None,
                Err(f) => {
                    errors.failure(&f);
                    break 'reading;
                }
            };
            if let Some(publish) = publish {
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => conn.queue(&Packet::PubAck(ack(id))),
                    (QoS::ExactlyOnce, Some(id)) => conn.queue(&Packet::PubRec(ack(id))),
                    _ => {}
                }
                if let Some((p, seq, sent)) = parse_payload(&publish.payload) {
                    record_ns(&mut local, now.saturating_sub(sent));
                    if let Some(last) = last_seq.get_mut(p as usize) {
                        if last.is_some_and(|l| seq <= l) {
                            ooo += 1;
                        }
                        *last = Some(seq);
                    }
                }
                received += 1;
            }
            packet = match conn.buffered().transpose() {
                Some(next) => next,
                None => break,
            };
        }
        counts.received.fetch_add(received, Ordering::Relaxed);
        counts.last_receive_ns.fetch_max(now, Ordering::Relaxed);
    }
    counts.out_of_order.fetch_add(ooo, Ordering::Relaxed);
    latency
        .lock()
        .expect("lock")
        .add(&local)
        .expect("same bounds");
    conn.disconnect().await;
}
