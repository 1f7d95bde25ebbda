//! The `connect` scenario: open N connections (at most C handshakes at once, or R per
//! second) and measure connect -> CONNACK and the connection rate; then either hold them all
//! open with keep-alive PINGREQs for `--hold` seconds, or (`--hold 0`) leave them as
//! persistent sessions offline. With `--broker-pid`, the broker's memory per connection or
//! per session is reported.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::protocol::{Packet, QoS};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::conn::Failure;
use crate::report::{broker_sample, hist, record, Progress, Report};
use crate::template::{template_arg, Template};
use crate::{check_fds, Common};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections (sessions) to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Most handshakes in progress at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// Connections started per second; 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to hold every connection open (keep-alive PINGREQs at half the keep-alive).
    /// 0: disconnect right after CONNACK (and SUBSCRIBE), leaving offline sessions.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Persistent sessions (Clean Session 0 / Clean Start 0 + Session Expiry).
    #[arg(long)]
    pub persistent: bool,
    /// Each session subscribes to its own topic (--topic) at QoS 1, as an idle device would.
    #[arg(long)]
    pub subscribe: bool,
    /// Connection i's topic for --subscribe: %i index, %c client id, %p client prefix.
    #[arg(long, default_value = "%p/c/%i", value_parser = template_arg)]
    pub topic: Template,
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<u64> {
    let holding = args.hold > 0.0;
    check_fds(
        if holding {
            args.connections as usize
        } else {
            args.concurrency
        },
        nofile,
    )?;
    let target = Arc::new(args.common.target()?);
    target.probe().await?;
    let prefix = args.common.prefix();
    let mut report = Report::new(
        "connect",
        json!(std::env::args().collect::<Vec<_>>()),
        args.common.broker_pid,
    );
    report.describe(
        format!(
            "{} {}",
            args.connections,
            if args.persistent {
                "sessions"
            } else {
                "connections"
            }
        ),
        args.subscribe.then_some(1),
    );
    let errors = report.errors.clone();
    let broker_before = args.common.broker_pid.and_then(broker_sample);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let latency = Arc::new(Mutex::new(hist()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let progress = Arc::new(Progress::new("connect", args.connections));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections as usize);
    for i in 0..args.connections {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (target, errors, latency, progress) = (
            target.clone(),
            errors.clone(),
            latency.clone(),
            progress.clone(),
        );
        let (mut stop, held_tx) = (stop_rx.clone(), held_tx.clone());
        let id = format!("{prefix}-{i}");
        let topic = args.topic.expand(i as usize, &id, &prefix);
        let (persistent, subscribe) = (args.persistent, args.subscribe);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let opened = async {
                let (mut conn, _) = target.connect(i, &id, !persistent, persistent).await?;
                let connack = t0.elapsed();
                if subscribe {
                    conn.subscribe(&[(topic, QoS::AtLeastOnce)]).await?;
                }
                Ok::<_, Failure>((conn, connack))
            }
            .await;
            progress.tick();
            drop(progress);
            let mut conn = match opened {
                Ok((conn, connack)) => {
                    record(&mut latency.lock().expect("lock"), connack);
                    conn
                }
                Err(f) => {
                    errors.failure(&f);
                    drop(permit);
                    let _ = held_tx.send(false);
                    return;
                }
            };
            if !holding {
                conn.disconnect().await;
                drop(permit);
                let _ = held_tx.send(true);
                return;
            }
            drop(permit);
            let _ = held_tx.send(true);
            let ping_every = Duration::from_secs_f64((target.keep_alive.max(2) as f64) / 2.0);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(ping_every) => {
                        conn.queue(&Packet::PingReq);
                        match conn.next().await {
                            Ok(Packet::PingResp) => {}
                            Ok(other) => {
                                errors.add("protocol", 1, &format!("{id}: expected PINGRESP, got {other:?}"));
                            }
                            Err(f) => {
                                errors.failure(&f);
                                return;
                            }
                        }
                    }
                }
            }
            conn.disconnect().await;
        }));
    }
    let mut ok = 0u64;
    for _ in 0..args.connections {
        if held_rx.recv().await == Some(true) {
            ok += 1;
        }
    }
    let connect_wall = started.elapsed().as_secs_f64();
    drop(progress);
    // Let the broker settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker_loaded = args.common.broker_pid.and_then(broker_sample);
    if holding {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    let broker_held_end = args.common.broker_pid.and_then(broker_sample);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let mut summary = json!({
        "connections": args.connections, "established": ok, "held_s": args.hold,
        "persistent": args.persistent, "subscribe": args.subscribe,
        "connect_wall_s": connect_wall, "connections_per_s": ok as f64 / connect_wall,
    });
    if let (Some(before), Some(loaded)) = (broker_before, broker_loaded) {
        let grown = loaded.rss_kib.saturating_sub(before.rss_kib);
        summary["broker_rss_kib_before"] = json!(before.rss_kib);
        summary["broker_rss_kib_loaded"] = json!(loaded.rss_kib);
        summary["broker_bytes_per_connection"] = json!(grown as f64 * 1024.0 / ok.max(1) as f64);
        let anon = loaded.anon_kib.saturating_sub(before.anon_kib);
        summary["broker_anon_rss_kib_loaded"] = json!(loaded.anon_kib);
        summary["broker_anon_bytes_per_connection"] =
            json!(anon as f64 * 1024.0 / ok.max(1) as f64);
        summary["broker_file_rss_kib_loaded"] = json!(loaded.file_kib);
        if let Some(end) = broker_held_end {
            summary["broker_rss_kib_end_of_hold"] = json!(end.rss_kib);
        }
    }
    report.headline(format!("{:.0} connections/s", ok as f64 / connect_wall));
    let h = latency.lock().expect("lock").clone();
    report.hist("connack", h);
    let p99 = report.p_ms("connack", 0.99);
    report.headline(format!(
        "CONNACK p99 {} ms",
        p99.map_or("-".into(), |v| format!("{v:.1}"))
    ));
    if let Some(b) = summary["broker_anon_bytes_per_connection"].as_f64() {
        report.headline(format!("broker RssAnon {b:.0} B per connection"));
    }
    report.headline(format!("established {ok} of {}", args.connections));
    report.set("connect", summary);
    args.common.finish(report)
}
