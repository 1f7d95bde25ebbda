//! The `resume` scenario: N persistent sessions, each subscribed to its own topic, go
//! offline; K messages per session are published into their queues; then every session
//! reconnects (at most C at a time, or R per second) and we measure connect -> CONNACK
//! (Session Present must be 1), connect -> first and connect -> last queued message, and
//! check that every message arrived once, in order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::protocol::{Packet, QoS};
use bytestring::ByteString;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::conn::{ack, parse_payload, payload, Failure, Target};
use crate::publisher::{self, PublishPlan};
use crate::report::{hist, record, Errors, Hist, Progress, Report};
use crate::template::{template_arg, Template};
use crate::{check_fds, qos_arg, Common};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Persistent sessions to create and resume.
    #[arg(long, default_value_t = 1000)]
    pub sessions: u64,
    /// Messages queued per session while it is offline, per cycle.
    #[arg(long, default_value_t = 10)]
    pub messages: u32,
    /// Subscription and publish QoS (1 or 2).
    #[arg(long, default_value = "1", value_parser = qos_arg)]
    pub qos: QoS,
    /// Payload bytes (at least 16: session, sequence, send time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Most connections being opened or resumed at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// Reconnects started per second in the storm; 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publish-then-storm cycles.
    #[arg(long, default_value_t = 1)]
    pub cycles: u32,
    /// Publisher connections for the offline phase.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Unacknowledged messages per publisher.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// Pause between the last PUBACK and the storm, in milliseconds, for brokers that queue
    /// asynchronously.
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// Session i's topic (subscribed and published to): %i session index, %c client id,
    /// %p client prefix.
    #[arg(long, default_value = "%p/s/%i", value_parser = template_arg)]
    pub topic: Template,
}

/// Totals of one storm, summed over sessions.
#[derive(Default)]
struct Tally {
    resumed: AtomicU64,
    received: AtomicU64,
    /// Messages that did not arrive on a session that did reconnect.
    lost: AtomicU64,
    /// Sessions whose reconnect failed (refused, timed out), and their messages.
    unreached: AtomicU64,
    unreached_messages: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    no_session: AtomicU64,
}

struct Hists {
    /// The TCP connect alone (SYN retries under a full listen backlog show here).
    tcp: Hist,
    connack: Hist,
    first: Hist,
    last: Hist,
}

struct Run {
    target: Target,
    prefix: String,
    args: Args,
    errors: Arc<Errors>,
    /// Which sessions the create phase made; the others are left out of the storm.
    created: Vec<AtomicBool>,
}

impl Run {
    fn client_id(&self, i: u64) -> String {
        format!("{}-{i}", self.prefix)
    }
    fn topic(&self, i: u64) -> String {
        self.args
            .topic
            .expand(i as usize, &self.client_id(i), &self.prefix)
    }
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<u64> {
    check_fds(args.concurrency + args.publishers, nofile)?;
    anyhow::ensure!(
        args.qos != QoS::AtMostOnce,
        "resume needs --qos 1 or 2: QoS 0 is not queued"
    );
    anyhow::ensure!(
        args.sessions <= u32::MAX as u64,
        "--sessions must fit in 32 bits"
    );
    let target = args.common.target()?;
    target.probe().await?;
    let prefix = args.common.prefix();
    let mut report = Report::new(
        "resume",
        json!(std::env::args().collect::<Vec<_>>()),
        args.common.broker_pid,
    );
    report.describe(format!("{} sessions", args.sessions), Some(args.qos as u8));
    report.set("open_file_limit", json!(nofile));
    let run = Arc::new(Run {
        target,
        prefix,
        errors: report.errors.clone(),
        created: (0..args.sessions).map(|_| AtomicBool::new(false)).collect(),
        args,
    });
    let a = &run.args;

    let (create_hist, create_wall) = create(&run).await;
    let created = create_hist.len();
    if created == 0 {
        run.args.common.finish(report)?;
        anyhow::bail!("no session could be created: see the errors above");
    }
    report.set(
        "create",
        json!({"sessions": created, "wall_s": create_wall, "sessions_per_s": created as f64 / create_wall}),
    );
    report.hist("create_connack", create_hist);

    let mut all = Hists {
        tcp: hist(),
        connack: hist(),
        first: hist(),
        last: hist(),
    };
    let mut cycles = Vec::new();
    let tally = Tally::default();
    for cycle in 0..a.cycles {
        let (sent, acked, pub_wall) = publish(&run, cycle).await;
        tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
        let cycle_tally = Arc::new(Tally::default());
        let (h, storm_wall) = storm(&run, cycle, &cycle_tally).await;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        cycles.push(json!({
            "cycle": cycle,
            "published": sent, "publish_acked": acked, "publish_wall_s": pub_wall,
            "publish_msgs_per_s": sent as f64 / pub_wall,
            "storm_wall_s": storm_wall,
            "reconnects_per_s": created as f64 / storm_wall,
            "delivered_msgs_per_s": get(&cycle_tally.received) as f64 / storm_wall,
            "resumed_sessions": get(&cycle_tally.resumed),
            "received": get(&cycle_tally.received), "lost": get(&cycle_tally.lost),
            "unreached_sessions": get(&cycle_tally.unreached),
            "unreached_messages": get(&cycle_tally.unreached_messages),
            "duplicates": get(&cycle_tally.duplicates), "out_of_order": get(&cycle_tally.out_of_order),
            "session_present_0": get(&cycle_tally.no_session),
            "resume_p99_us": h.last.value_at_quantile(0.99),
            "tcp_connect_p99_us": h.tcp.value_at_quantile(0.99),
        }));
        for (from, to) in [
            (&cycle_tally.resumed, &tally.resumed),
            (&cycle_tally.received, &tally.received),
            (&cycle_tally.lost, &tally.lost),
            (&cycle_tally.unreached, &tally.unreached),
            (&cycle_tally.unreached_messages, &tally.unreached_messages),
            (&cycle_tally.duplicates, &tally.duplicates),
            (&cycle_tally.out_of_order, &tally.out_of_order),
            (&cycle_tally.no_session, &tally.no_session),
        ] {
            to.fetch_add(get(from), Ordering::Relaxed);
        }
        all.tcp.add(&h.tcp).expect("same bounds");
        all.connack.add(&h.connack).expect("same bounds");
        all.first.add(&h.first).expect("same bounds");
        all.last.add(&h.last).expect("same bounds");
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let expected = created * a.messages as u64 * a.cycles as u64;
    report.set("cycles", json!(&cycles));
    report.set(
        "totals",
        json!({
            "sessions": a.sessions, "messages_per_session": a.messages, "cycles": a.cycles,
            "qos": a.qos as u8, "payload_bytes": a.payload, "concurrency": a.concurrency,
            "created_sessions": created, "not_created": a.sessions - created,
            "expected": expected, "received": get(&tally.received), "lost": get(&tally.lost),
            "unreached_sessions": get(&tally.unreached),
            "unreached_messages": get(&tally.unreached_messages),
            "duplicates": get(&tally.duplicates), "out_of_order": get(&tally.out_of_order),
            "session_present_0": get(&tally.no_session), "resumed_sessions": get(&tally.resumed),
        }),
    );
    report.hist("storm_tcp_connect", all.tcp);
    report.hist("storm_connack", all.connack);
    report.hist("first_message", all.first);
    report.hist("resume", all.last);
    let p = |name: &str, q: f64| {
        report
            .p_ms(name, q)
            .map_or("-".into(), |v| format!("{v:.1}"))
    };
    let headline = [
        format!(
            "resume p99 {} ms (p50 {} ms)",
            p("resume", 0.99),
            p("resume", 0.5)
        ),
        format!("storm TCP connect p99 {} ms", p("storm_tcp_connect", 0.99)),
        format!("created {:.0} sessions/s", created as f64 / create_wall),
        format!(
            "publish {:.0} msgs/s",
            cycles
                .iter()
                .filter_map(|c| c["publish_msgs_per_s"].as_f64())
                .sum::<f64>()
                / cycles.len().max(1) as f64
        ),
        format!("lost {}", get(&tally.lost)),
        format!("not reconnected {}", get(&tally.unreached)),
    ];
    for h in headline {
        report.headline(h);
    }
    run.args.common.finish(report)
}

/// Creates every session: connect, subscribe to its own topic, disconnect.
async fn create(run: &Arc<Run>) -> (Hist, f64) {
    let a = &run.args;
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let latencies = Arc::new(Mutex::new(hist()));
    let progress = Arc::new(Progress::new("create", a.sessions));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.sessions as usize);
    for i in 0..a.sessions {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (run, latencies, progress) = (run.clone(), latencies.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            // 5.0: Clean Start 1 with a Session Expiry starts a fresh persistent session.
            // 3.1.1 has no such thing: Clean Session 0, and the run's unique prefix keeps
            // the ids fresh.
            let clean = run.target.version.is_v5();
            let result = async {
                let (mut conn, _) = run
                    .target
                    .connect(i, &run.client_id(i), clean, true)
                    .await?;
                let connack = t0.elapsed();
                conn.subscribe(&[(run.topic(i), run.args.qos)]).await?;
                conn.disconnect().await;
                Ok::<_, Failure>(connack)
            }
            .await;
            match result {
                Ok(d) => {
                    record(&mut latencies.lock().expect("lock"), d);
                    run.created[i as usize].store(true, Ordering::Relaxed);
                }
                Err(f) => run.errors.failure(&f),
            }
            progress.tick();
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed().as_secs_f64();
    let h = latencies.lock().expect("lock").clone();
    (h, wall)
}

/// Publishes K messages per session into the offline queues; returns (sent, acked, wall s).
async fn publish(run: &Arc<Run>, cycle: u32) -> (u64, u64, f64) {
    let a = &run.args;
    let publishers = a.publishers.max(1).min(a.sessions.max(1) as usize) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let a = &run.args;
            let id = format!("{}-pub-{p}", run.prefix);
            let (conn, _) = match run.target.connect(p, &id, true, false).await {
                Ok(c) => c,
                Err(f) => {
                    run.errors.failure(&f);
                    return (0, 0);
                }
            };
            // Sessions p, p + P, p + 2P, ...; one message to each in turn, so every queue
            // fills at the same pace.
            let mine = (a.sessions - p).div_ceil(publishers);
            let total = mine * a.messages as u64;
            let base = cycle as u64 * a.messages as u64;
            let plan = PublishPlan {
                qos: a.qos,
                window: a.inflight,
                rate: 0.0,
                until: None,
                drain: run.target.timeout,
            };
            let next = |n: u64| {
                if n >= total {
                    return None;
                }
                let session = p + (n % mine) * publishers;
                let seq = base + n / mine;
                let topic = ByteString::from(run.topic(session));
                Some((topic, payload(session as u32, seq as u32, a.payload)))
            };
            match publisher::run(conn, plan, next).await {
                Ok(done) => {
                    if done.acked < done.sent {
                        run.errors.add(
                            "publish_unacknowledged",
                            done.sent - done.acked,
                            &format!(
                                "{id}: {} of {} never acknowledged",
                                done.sent - done.acked,
                                done.sent
                            ),
                        );
                    }
                    (done.sent, done.acked)
                }
                Err(f) => {
                    run.errors.failure(&f);
                    (0, 0)
                }
            }
        }));
    }
    let (mut sent, mut acked) = (0, 0);
    for t in tasks {
        if let Ok((s, k)) = t.await {
            sent += s;
            acked += k;
        }
    }
    (sent, acked, started.elapsed().as_secs_f64())
}

/// Every session reconnects and takes its queued messages.
async fn storm(run: &Arc<Run>, cycle: u32, tally: &Arc<Tally>) -> (Hists, f64) {
    let a = &run.args;
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let hists = Arc::new(Mutex::new(Hists {
        tcp: hist(),
        connack: hist(),
        first: hist(),
        last: hist(),
    }));
    let progress = Arc::new(Progress::new("storm", a.sessions));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.sessions as usize);
    let mut started_n = 0u64;
    for i in 0..a.sessions {
        if !run.created[i as usize].load(Ordering::Relaxed) {
            progress.tick();
            continue;
        }
        started_n += 1;
        if a.rate > 0.0 {
            let due = started + Duration::from_secs_f64(started_n as f64 / a.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (run, hists, progress, tally) =
            (run.clone(), hists.clone(), progress.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            resume_one(&run, i, cycle, &hists, &tally).await;
            progress.tick();
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed().as_secs_f64();
    let h = Arc::try_unwrap(hists)
        .ok()
        .map(|m| m.into_inner().expect("lock"))
        .expect("every task has finished");
    (h, wall)
}

async fn resume_one(run: &Run, i: u64, cycle: u32, hists: &Mutex<Hists>, tally: &Tally) {
    let k = run.args.messages as u64;
    let base = cycle as u64 * k;
    let t0 = Instant::now();
    let id = run.client_id(i);
    let (mut conn, connack) = match run.target.connect(i, &id, false, true).await {
        Ok(c) => c,
        Err(f) => {
            run.errors.failure(&f);
            tally.unreached.fetch_add(1, Ordering::Relaxed);
            tally.unreached_messages.fetch_add(k, Ordering::Relaxed);
            return;
        }
    };
    let connack_at = t0.elapsed();
    let tcp_connect = conn.tcp_connect;
    if !connack.session_present {
        tally.no_session.fetch_add(1, Ordering::Relaxed);
        run.errors.add(
            "session_present_0",
            1,
            &format!("{id}: CONNACK Session Present 0"),
        );
    }
    let mut seen = vec![false; k as usize];
    let (mut got, mut next_expected, mut pending_rel) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let (mut dups, mut ooo) = (0u64, 0u64);
    while got < k || pending_rel > 0 {
        let packet = match conn.next().await {
            Ok(p) => p,
            Err(f) => {
                if f.kind != "timeout" || got == k {
                    run.errors.failure(&f);
                }
                break;
            }
        };
        let publish = match packet {
            Packet::Publish(p) => p,
            Packet::PubRel(a) => {
                conn.queue(&Packet::PubComp(ack(a.packet_id)));
                pending_rel = pending_rel.saturating_sub(1);
                continue;
            }
            _ => continue,
        };
        if let Some(pid) = publish.packet_id {
            if publish.qos == QoS::ExactlyOnce {
                conn.queue(&Packet::PubRec(ack(pid)));
                pending_rel += 1;
            } else {
                conn.queue(&Packet::PubAck(ack(pid)));
            }
        }
        let Some((session, seq, _sent)) = parse_payload(&publish.payload) else {
            run.errors
                .add("foreign_message", 1, &format!("{id}: payload too short"));
            continue;
        };
        let seq = seq as u64;
        if session as u64 != i {
            run.errors.add(
                "wrong_session",
                1,
                &format!("{id}: got session {session}'s message"),
            );
            continue;
        }
        if seq < base {
            dups += 1; // redelivery from an earlier cycle
            continue;
        }
        let idx = seq - base;
        if idx >= k {
            run.errors
                .add("unexpected_sequence", 1, &format!("{id}: sequence {seq}"));
            continue;
        }
        if seen[idx as usize] {
            dups += 1;
            continue;
        }
        seen[idx as usize] = true;
        if idx != next_expected {
            ooo += 1;
        }
        next_expected = idx + 1;
        got += 1;
        if first.is_none() {
            first = Some(t0.elapsed());
        }
        if got == k {
            last = Some(t0.elapsed());
        }
    }
    conn.disconnect().await;
    let lost = k - got;
    if lost > 0 {
        run.errors.add(
            "lost_messages",
            lost,
            &format!("{id}: {got} of {k} queued messages arrived"),
        );
    }
    if ooo > 0 {
        run.errors.add(
            "out_of_order",
            ooo,
            &format!("{id}: {ooo} messages out of order"),
        );
    }
    tally.received.fetch_add(got, Ordering::Relaxed);
    tally.lost.fetch_add(lost, Ordering::Relaxed);
    tally.duplicates.fetch_add(dups, Ordering::Relaxed);
    tally.out_of_order.fetch_add(ooo, Ordering::Relaxed);
    if lost == 0 && connack.session_present {
        tally.resumed.fetch_add(1, Ordering::Relaxed);
    }
    let mut h = hists.lock().expect("lock");
    record(&mut h.tcp, tcp_connect);
    record(&mut h.connack, connack_at);
    if let Some(d) = first {
        record(&mut h.first, d);
    }
    if let Some(d) = last {
        record(&mut h.last, d);
    }
}
