//! The `throughput` scenario: publishers and subscribers in one of four patterns, QoS 0/1/2,
//! a fixed total rate or as fast as the broker takes it, for a duration. Reports messages/s
//! in (acknowledged by the broker, or written for QoS 0) and out (received by subscribers),
//! deliveries missing against what the pattern should deliver, and end-to-end latency from
//! the send time each payload carries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth::protocol::{Packet, QoS};
use bytestring::ByteString;
use clap::ValueEnum;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::conn::{ack, now_ns, parse_payload, payload, Conn, Target};
use crate::publisher::{self, PublishPlan};
use crate::report::{hist, record_ns, Errors, Hist, Report};
use crate::template::{template_arg, Template};
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishers and subscribers in this process.
    Both,
    /// Only the publishers (another process runs the subscribers).
    Pub,
    /// Only the subscribers (another process runs the publishers).
    Sub,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Who publishes to whom.
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
    /// QoS of the subscriptions and the publishes (0, 1 or 2).
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
    /// Publisher i's topic: %i publisher index, %c its client id, %p client prefix.
    /// Default: %p/t/%i for pairs, %p/t for the other patterns.
    #[arg(long, value_parser = template_arg)]
    pub topic: Option<Template>,
    /// Subscriber i's filter: %i subscriber index, %c its client id, %p client prefix.
    /// Default: the --topic template for index i ($share/lg/ before it for pattern shared).
    #[arg(long, value_parser = template_arg)]
    pub filter: Option<Template>,
    /// Which side runs in this process. For loads above one process, start the subscribers
    /// (`--role sub --ready-file F`), then one publisher process (`--role pub --ready-file
    /// F`) with the same --client-prefix, pattern and counts; run several such pairs with
    /// different prefixes. Latency across processes uses the machine's monotonic clock, so
    /// both run on one machine.
    #[arg(long, value_enum, default_value = "both")]
    pub role: Role,
    /// --role sub writes this file once every subscriber is subscribed; --role pub waits
    /// for it (at most --timeout seconds) before its publishers connect.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// --role sub stops this many seconds after the last delivery (or after --duration plus
    /// --timeout seconds with none).
    #[arg(long, default_value_t = 2.0)]
    pub idle: f64,
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

    /// (publisher i's topic, subscriber i's filter), checked.
    fn names(&self) -> anyhow::Result<(Template, Option<Template>)> {
        let default = match self.pattern {
            Pattern::Pairs => "%p/t/%i",
            _ => "%p/t",
        };
        let topic = match &self.topic {
            Some(t) => t.clone(),
            None => Template::parse(default).map_err(anyhow::Error::msg)?,
        };
        anyhow::ensure!(
            self.filter.is_some() || !topic.uses_client_id(),
            "--topic names %c, the publisher's client id, which a subscriber does not know: \
             give --filter too"
        );
        Ok((topic, self.filter.clone()))
    }
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    out_of_order: AtomicU64,
    last_receive_ns: AtomicU64,
    /// The earliest send time a delivery carried (u64::MAX before the first): where a
    /// subscriber process without its publishers starts its receive rate.
    first_sent_ns: AtomicU64,
}

/// Shared by the publishers and subscribers of a run.
struct Plan {
    target: Arc<Target>,
    prefix: String,
    topic: Template,
    filter: Option<Template>,
    errors: Arc<Errors>,
}

impl Plan {
    fn topic(&self, i: usize) -> String {
        self.topic
            .expand(i, &format!("{}-pub-{i}", self.prefix), &self.prefix)
    }
    fn filter(&self, i: usize, shared: bool) -> String {
        match &self.filter {
            Some(f) => f.expand(i, &format!("{}-sub-{i}", self.prefix), &self.prefix),
            None if shared => format!("$share/lg/{}", self.topic(i)),
            None => self.topic(i),
        }
    }
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<u64> {
    let (pubs, subs, pattern) = args.shape();
    let (run_pubs, run_subs) = match args.role {
        Role::Both => (true, true),
        Role::Pub => (true, false),
        Role::Sub => (false, true),
    };
    anyhow::ensure!(
        args.ready_file.is_none() || args.role != Role::Both,
        "--ready-file joins a --role pub process to a --role sub one"
    );
    check_fds(
        if run_pubs { pubs } else { 0 } + if run_subs { subs } else { 0 },
        nofile,
    )?;
    let (topic, filter) = args.names()?;
    anyhow::ensure!(
        args.role == Role::Both
            || args.common.client_prefix.is_some()
            || !(topic.uses_prefix() || filter.as_ref().is_some_and(Template::uses_prefix)),
        "--role {} needs --client-prefix, the same in the pub and the sub process (the \
         topics name it with %p, and the default prefix is unique per process)",
        if args.role == Role::Pub { "pub" } else { "sub" }
    );
    let target = Arc::new(args.common.target()?);
    target.probe().await?;
    let mut report = Report::new(
        "throughput",
        json!(std::env::args().collect::<Vec<_>>()),
        args.common.broker_pid,
    );
    report.describe(
        match args.pattern {
            Pattern::Pairs => format!("{pubs} pairs"),
            _ => format!("{pattern} {pubs} -> {subs}"),
        },
        Some(args.qos as u8),
    );
    let plan = Arc::new(Plan {
        target,
        prefix: args.common.prefix(),
        topic,
        filter,
        errors: report.errors.clone(),
    });
    let errors = plan.errors.clone();

    // Subscribers first, all subscribed before anything is published.
    let counts = Arc::new(Counts {
        first_sent_ns: AtomicU64::new(u64::MAX),
        ..Default::default()
    });
    let latency = Arc::new(Mutex::new(hist()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sub_tasks = Vec::new();
    if run_subs {
        sub_tasks = subscribe_all(&args, &plan, subs, pubs, &counts, &latency, stop_rx).await;
    }
    match (&args.ready_file, args.role) {
        (Some(path), Role::Sub) => write_ready(path, subs)?,
        (Some(path), Role::Pub) => wait_ready(path, plan.target.timeout).await?,
        _ => {}
    }
    let ready_at = Instant::now();

    let (sent, acked, publish_wall, started_ns) = if run_pubs {
        publish_all(&args, &plan, subs, pubs).await
    } else {
        (0, 0, 0.0, 0)
    };
    let expected = match args.pattern {
        Pattern::Pairs | Pattern::Shared => sent,
        Pattern::FanIn | Pattern::FanOut => sent * subs as u64,
    };
    if run_subs {
        // Let the last deliveries arrive: until all are in, or nothing new for --idle
        // seconds (a subscriber process also waits --duration + --timeout for the first).
        let idle = Duration::from_secs_f64(args.idle);
        let first_by = Duration::from_secs_f64(args.duration) + plan.target.timeout;
        let mut last_seen = (counts.received.load(Ordering::Relaxed), Instant::now());
        loop {
            let got = counts.received.load(Ordering::Relaxed);
            if run_pubs && (got >= expected || last_seen.1.elapsed() > idle) {
                break;
            }
            if !run_pubs && got > 0 && last_seen.1.elapsed() > idle {
                break;
            }
            if !run_pubs && got == 0 && ready_at.elapsed() > first_by {
                errors.add("no_messages", 1, "no delivery arrived");
                break;
            }
            if got != last_seen.0 {
                last_seen = (got, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop_tx.send(true);
    for t in sub_tasks {
        let _ = t.await;
    }
    let received = counts.received.load(Ordering::Relaxed);
    let last_receive_ns = counts.last_receive_ns.load(Ordering::Relaxed);
    let from_ns = if run_pubs {
        started_ns
    } else {
        counts
            .first_sent_ns
            .load(Ordering::Relaxed)
            .min(last_receive_ns)
    };
    let receive_wall = (last_receive_ns.saturating_sub(from_ns) as f64 / 1e9).max(1e-9);
    let missing = (run_pubs && run_subs).then(|| expected.saturating_sub(received));
    if let Some(missing) = missing.filter(|m| *m > 0 && args.qos != QoS::AtMostOnce) {
        errors.add(
            "lost_messages",
            missing,
            &format!("{received} of {expected} deliveries arrived"),
        );
    }
    let msgs_in = sent as f64 / publish_wall.max(1e-9);
    let msgs_out = received as f64 / receive_wall;
    let role = format!("{:?}", args.role).to_lowercase();
    report.set(
        "throughput",
        json!({
            "pattern": pattern, "publishers": pubs, "subscribers": subs, "qos": args.qos as u8,
            "role": role,
            "payload_bytes": args.payload, "rate_asked": args.rate, "duration_s": args.duration,
            "sent": sent, "acked": acked, "expected_deliveries": run_subs.then_some(expected),
            "received": received, "missing": missing,
            "out_of_order_or_duplicate": counts.out_of_order.load(Ordering::Relaxed),
            "publish_wall_s": publish_wall,
            "msgs_in_per_s": msgs_in,
            "msgs_out_per_s": msgs_out,
        }),
    );
    if run_pubs {
        report.headline(format!("{msgs_in:.0} msgs/s in"));
    }
    if run_subs {
        report.headline(format!("{msgs_out:.0} msgs/s out"));
    }
    let h = latency.lock().expect("lock").clone();
    report.hist("end_to_end", h);
    if run_subs {
        let p = |q: f64| {
            report
                .p_ms("end_to_end", q)
                .map_or("-".into(), |v| format!("{v:.1}"))
        };
        let line = format!("end-to-end p99 {} ms (p50 {} ms)", p(0.99), p(0.5));
        report.headline(line);
    }
    if let Some(m) = missing {
        report.headline(format!("missing {m}"));
    }
    args.common.finish(report)
}

/// Connects and subscribes every subscriber (at most --concurrency at once); returns once
/// all are subscribed (or failed), their reading tasks running until `stop`.
async fn subscribe_all(
    args: &Args,
    plan: &Arc<Plan>,
    subs: usize,
    pubs: usize,
    counts: &Arc<Counts>,
    latency: &Arc<Mutex<Hist>>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for i in 0..subs {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (plan, counts, latency) = (plan.clone(), counts.clone(), latency.clone());
        let filter = plan.filter(i, args.pattern == Pattern::Shared);
        let (qos, stop) = (args.qos, stop.clone());
        let id = format!("{}-sub-{i}", plan.prefix);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        tasks.push(tokio::spawn(async move {
            let conn = async {
                let (mut conn, _) = plan.target.connect(i as u64, &id, true, false).await?;
                conn.subscribe(&[(filter, qos)]).await?;
                Ok(conn)
            }
            .await;
            drop(permit);
            match conn {
                Ok(conn) => {
                    let _ = ready_tx.send(());
                    subscribe_loop(conn, pubs, stop, &counts, &latency, &plan.errors).await;
                }
                Err(f) => plan.errors.failure(&f),
            }
        }));
    }
    for r in ready {
        let _ = r.await;
    }
    tasks
}

/// Connects every publisher and publishes for --duration; returns (sent, acknowledged,
/// publishing wall seconds, the clock at the start in `now_ns`).
async fn publish_all(
    args: &Args,
    plan: &Arc<Plan>,
    subs: usize,
    pubs: usize,
) -> (u64, u64, f64, u64) {
    let mut pub_conns = Vec::new();
    for i in 0..pubs {
        let id = format!("{}-pub-{i}", plan.prefix);
        match plan
            .target
            .connect((subs + i) as u64, &id, true, false)
            .await
        {
            Ok((c, _)) => pub_conns.push((i, c)),
            Err(f) => plan.errors.failure(&f),
        }
    }
    let started = Instant::now();
    let started_ns = now_ns();
    let until = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for (i, conn) in pub_conns {
        let publish_plan = PublishPlan {
            qos: args.qos,
            window: args.inflight,
            rate: args.rate / pubs as f64,
            until: Some(until),
            drain: plan.target.timeout,
        };
        let topic = ByteString::from(plan.topic(i));
        let size = args.payload;
        let errors = plan.errors.clone();
        tasks.push(tokio::spawn(async move {
            let next = |n: u64| Some((topic.clone(), payload(i as u32, n as u32, size)));
            match publisher::run(conn, publish_plan, next).await {
                Ok(done) => Some(done),
                Err(f) => {
                    errors.failure(&f);
                    None
                }
            }
        }));
    }
    let (mut sent, mut acked) = (0u64, 0u64);
    for t in tasks {
        if let Ok(Some(done)) = t.await {
            sent += done.sent;
            acked += done.acked;
        }
    }
    (sent, acked, started.elapsed().as_secs_f64(), started_ns)
}

/// Tells a publisher process that every subscriber is subscribed: the file appears whole
/// (written beside it, then renamed).
fn write_ready(path: &Path, subscribers: usize) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{subscribers} subscribed\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

async fn wait_ready(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}: is a --role sub process running?",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
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
    let mut earliest = u64::MAX;
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
        let mut first_sent = u64::MAX;
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
                    first_sent = first_sent.min(sent);
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
        // Send times rise, so this shared update happens about once per subscriber.
        if first_sent < earliest {
            earliest = first_sent;
            counts
                .first_sent_ns
                .fetch_min(first_sent, Ordering::Relaxed);
        }
    }
    counts.out_of_order.fetch_add(ooo, Ordering::Relaxed);
    latency
        .lock()
        .expect("lock")
        .add(&local)
        .expect("same bounds");
    conn.disconnect().await;
}
