//! The bridge on its tokio runtime: the connection, the setup of the node's bucket,
//! stream and consumer, and forwarding the cores' work (their interest to `interest`, their
//! messages to other nodes); `interest` and `inbound` hold the other tasks.
//!
//! Invariants: the bridge never blocks a core (it only sends to their inboxes); a node's
//! interest is announced once whatever the number of its cores wanting it (`LocalInterest`),
//! and only after every core has announced its recovered filters; one core's QoS 1/2
//! forwards are published in the order the core made them, each answered to it once
//! JetStream stored it or refused it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{ConnectOptions, Event, HeaderMap, ServerAddr};

use super::inbound::{take_qos0, take_stream};
use super::interest::{self, KvOp};
use super::keys::{self, LocalInterest, NodeNames};
use super::members;
use super::replicas;
use super::retained::{self, Put};
use super::{wire, FromCore, ToCore};
use crate::protocol::QoS;

/// How long a failed setup step or KV write waits before it is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// The longest one message may take to be handed to the NATS client (it buffers).
pub(super) const SEND_WAIT: Duration = Duration::from_secs(1);
/// The longest a SUBACK waits for the cluster to route its new filter here.
const INTEREST_WAIT: Duration = Duration::from_secs(3);
/// Stream messages delivered to this node and not yet acknowledged, at most.
pub(super) const MAX_ACK_PENDING: i64 = 1024;

pub(super) struct Setup {
    pub node: String,
    pub servers: Vec<String>,
    pub from_cores: flume::Receiver<FromCore>,
    pub to_cores: Vec<flume::Sender<ToCore>>,
    pub ready: std::sync::mpsc::Sender<()>,
    pub joined: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `[cluster] nats_replicas`; `None`: by the server (`replicas::resolve`).
    pub replicas: Option<usize>,
    /// The slot map file's map (the bucket's seed) and how to put a map in force.
    pub slots: Option<(std::sync::Arc<crate::cluster::SlotMap>, super::ApplyMap)>,
}

pub(super) async fn run(setup: Setup) {
    tokio::task::LocalSet::new().run_until(bridge(setup)).await
}

async fn bridge(setup: Setup) {
    let Setup {
        node,
        servers,
        from_cores,
        to_cores,
        ready,
        joined,
        replicas: configured,
        slots,
    } = setup;
    let addrs: Vec<ServerAddr> = servers
        .iter()
        .filter_map(|url| match url.parse() {
            Ok(addr) => Some(addr),
            Err(error) => {
                tracing::error!(%url, %error, "cluster: not a NATS server URL, left out");
                None
            }
        })
        .collect();
    // Each (re)connection: the node's entries are written again, in case the bucket lost
    // them while this node was away from it (a NATS server restarted without its store).
    let (connected_tx, connected) = tokio::sync::mpsc::unbounded_channel();
    let options = ConnectOptions::new()
        .name(format!("berth node {node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let connected_tx = connected_tx.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("cluster: connected to NATS");
                        let _ = connected_tx.send(());
                    }
                    Event::Disconnected => {
                        tracing::warn!("cluster: disconnected from NATS, reconnecting")
                    }
                    Event::Closed => tracing::warn!("cluster: NATS connection closed"),
                    other => tracing::warn!(event = %other, "cluster: NATS"),
                }
            }
        });
    let client = match options.connect(addrs).await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cluster: cannot connect to NATS; this node runs alone");
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let names = Rc::new(RefCell::new(NodeNames::default()));
    let to_cores = Rc::new(to_cores);
    let (kv_ops, kv_rx) = tokio::sync::mpsc::unbounded_channel();
    let (retained_puts, retained_rx) = tokio::sync::mpsc::unbounded_channel();
    // The cores' work is taken from the start, so that while JetStream is not ready their
    // SUBACKs wait only for `INTEREST_WAIT` (their KV writes queue until it is).
    let links = Links {
        client: client.clone(),
        js: js.clone(),
        node: node.clone(),
        names: names.clone(),
        to_cores: to_cores.clone(),
        kv_ops,
        retained_puts,
    };
    let forwarding = tokio::task::spawn_local(forward(from_cores, connected, links));
    tokio::task::spawn_local(retained::write_retained(
        js.clone(),
        client.clone(),
        to_cores.clone(),
        retained_rx,
    ));
    let (replicas, (bucket, beats, retained_bucket, inbound)) = loop {
        let prepared = match replicas::resolve(&client, configured) {
            Ok(replicas) => prepare(&js, &node, true, replicas)
                .await
                .map(|prepared| (replicas, prepared)),
            Err(error) => Err(error),
        };
        match prepared {
            Ok(prepared) => break prepared,
            Err(error) => {
                tracing::warn!(%error, "cluster: JetStream not ready, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tracing::info!(%node, stream = %keys::in_stream(&node), replicas, "cluster: joined");
    let (published_tx, published) = tokio::sync::oneshot::channel();
    let (caught_up_tx, caught_up) = tokio::sync::oneshot::channel();
    let (retained_tx, retained_caught_up) = tokio::sync::oneshot::channel();
    let (slots_tx, slots_caught_up) = tokio::sync::oneshot::channel();
    match slots {
        Some((seed, apply)) => {
            tokio::task::spawn_local(super::slots::watch_slots(
                js.clone(),
                replicas,
                seed,
                apply,
                slots_tx,
            ));
        }
        None => drop(slots_tx.send(())),
    }
    tokio::task::spawn_local(retained::watch_retained(
        retained_bucket,
        js.clone(),
        to_cores.clone(),
        retained_tx,
    ));
    let members = Rc::new(members::Members::default());
    let applied = Rc::new(members::Applied::default());
    tokio::task::spawn_local(members::heartbeat(beats.clone(), node.clone()));
    tokio::task::spawn_local(members::watch_members(beats, node.clone(), members.clone()));
    tokio::task::spawn_local(members::answer_barriers(
        client.clone(),
        node.clone(),
        applied.clone(),
        to_cores.clone(),
    ));
    let writer = interest::Writer {
        bucket: bucket.clone(),
        node: node.clone(),
        client: client.clone(),
        members,
    };
    tokio::task::spawn_local(interest::write_interest(writer, kv_rx, published_tx));
    tokio::task::spawn_local(interest::watch_interest(
        bucket,
        js.clone(),
        node.clone(),
        (names.clone(), applied),
        to_cores.clone(),
        caught_up_tx,
    ));
    tokio::task::spawn_local(take_qos0(client.clone(), node.clone(), to_cores.clone()));
    tokio::task::spawn_local(take_stream(inbound, (js, replicas), node, to_cores));
    tokio::task::spawn_local(async move {
        if published.await.is_ok()
            && caught_up.await.is_ok()
            && retained_caught_up.await.is_ok()
            && slots_caught_up.await.is_ok()
        {
            tracing::info!(
                "cluster: interest published, the other nodes' and the slot map applied"
            );
            joined.store(true, std::sync::atomic::Ordering::Release);
            let _ = ready.send(());
        }
    });
    let _ = forwarding.await;
}

/// What [`forward`] sends through.
struct Links {
    client: async_nats::Client,
    js: jetstream::Context,
    node: String,
    names: Rc<RefCell<NodeNames>>,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    kv_ops: tokio::sync::mpsc::UnboundedSender<KvOp>,
    retained_puts: tokio::sync::mpsc::UnboundedSender<Put>,
}

/// The buckets (interest, heartbeats, retained messages) and this node's stream and
/// consumer, made where missing. `fresh` (at start): the consumer is made anew, so that the
/// messages an earlier run of this node was handed and never acknowledged (killed) come
/// again at once and in stream order, before the later ones, rather than after the ack
/// wait and behind them (a WorkQueue stream keeps every message until it is acknowledged,
/// whatever happens to its consumer). Each with `replicas` replicas, an existing one
/// changed to that count (`replicas::ensure`).
pub(super) async fn prepare(
    js: &jetstream::Context,
    node: &str,
    fresh: bool,
    replicas: usize,
) -> Result<
    (
        kv::Store,
        kv::Store,
        kv::Store,
        consumer::Consumer<consumer::pull::Config>,
    ),
    String,
> {
    let bucket = match js.get_key_value(keys::INTEREST_BUCKET).await {
        Ok(bucket) => bucket,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: keys::INTEREST_BUCKET.to_string(),
                num_replicas: replicas,
                description: "berth: which node subscribes to which filter".to_string(),
                history: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::INTEREST_BUCKET))?,
    };
    let beats = match js.get_key_value(keys::NODES_BUCKET).await {
        Ok(beats) => beats,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: keys::NODES_BUCKET.to_string(),
                num_replicas: replicas,
                description: "berth: the nodes' heartbeats".to_string(),
                history: 1,
                max_age: members::HEARTBEAT_AGE,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::NODES_BUCKET))?,
    };
    let retained = match js.get_key_value(keys::RETAINED_BUCKET).await {
        Ok(retained) => retained,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: keys::RETAINED_BUCKET.to_string(),
                num_replicas: replicas,
                description: "berth: the cluster's retained messages, by topic".to_string(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::RETAINED_BUCKET))?,
    };
    let inbound = js
        .get_or_create_stream(stream::Config {
            name: keys::in_stream(node),
            description: Some(format!("berth: QoS 1/2 messages for node {node}")),
            subjects: vec![keys::in_subject(node)],
            // A message is gone once this node acknowledged it; while the node is away its
            // stream fills, and once full (the server's limits) publishers are refused.
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", keys::in_stream(node)))?;
    for bucket in [
        keys::INTEREST_BUCKET,
        keys::NODES_BUCKET,
        keys::RETAINED_BUCKET,
    ] {
        replicas::ensure(js, &format!("KV_{bucket}"), replicas).await?;
    }
    replicas::ensure(js, &keys::in_stream(node), replicas).await?;
    if fresh
        && inbound
            .get_consumer::<consumer::pull::Config>(keys::CONSUMER)
            .await
            .is_ok()
    {
        inbound
            .delete_consumer(keys::CONSUMER)
            .await
            .map_err(|e| format!("consumer {}: {e}", keys::CONSUMER))?;
    }
    let consumer = inbound
        .get_or_create_consumer(
            keys::CONSUMER,
            consumer::pull::Config {
                durable_name: Some(keys::CONSUMER.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {}: {e}", keys::CONSUMER))?;
    Ok((bucket, beats, retained, consumer))
}

/// The cores' work: their interest into the bucket, their messages to other nodes.
async fn forward(
    from_cores: flume::Receiver<FromCore>,
    mut connected: tokio::sync::mpsc::UnboundedReceiver<()>,
    links: Links,
) {
    let Links {
        client,
        js,
        node,
        names,
        to_cores,
        kv_ops,
        retained_puts,
    } = links;
    let mut local = LocalInterest::default();
    let mut recovered = HashSet::new();
    // Message ids must differ from those of this node's earlier runs: JetStream drops a
    // message whose id it saw within its duplicate window.
    let run: u64 = rand::random();
    // Tests only: QoS 1/2 forwards are neither sent nor answered, so that the publisher's
    // acknowledgement never leaves and a test can kill the node before it does.
    let drop_forwards = std::env::var_os("BERTH_TEST_DROP_NODE_FORWARDS").is_some();
    loop {
        let work = tokio::select! {
            work = from_cores.recv_async() => match work {
                Ok(work) => work,
                Err(_) => break,
            },
            Some(()) = connected.recv() => {
                if recovered.len() == to_cores.len() {
                    let _ = kv_ops.send(KvOp::Reconcile(local.filters().cloned().collect()));
                }
                continue;
            }
        };
        match work {
            FromCore::Interest {
                core,
                filter,
                present,
                ticket,
            } => {
                let changed = local.announced(core, &filter, present);
                if let (Some(present), true) = (changed, recovered.len() == to_cores.len()) {
                    let _ = kv_ops.send(KvOp::Set { filter, present });
                }
                if let (Some(ticket), Some(to_core)) = (ticket, to_cores.get(core.0).cloned()) {
                    // Answered once the writes before it are done (barrier included), or
                    // after INTEREST_WAIT: a SUBACK never waits on NATS for long.
                    let (done, written) = tokio::sync::oneshot::channel();
                    let _ = kv_ops.send(KvOp::Answer(done));
                    tokio::task::spawn_local(async move {
                        let _ = tokio::time::timeout(INTEREST_WAIT, written).await;
                        let _ = to_core.send_async(ToCore::Acked { ticket, ok: true }).await;
                    });
                }
            }
            FromCore::Recovered { core } => {
                recovered.insert(core);
                if recovered.len() == to_cores.len() {
                    let _ = kv_ops.send(KvOp::Reconcile(local.filters().cloned().collect()));
                }
            }
            FromCore::Retain {
                core,
                message,
                ticket,
            } => {
                if client.connection_state() != async_nats::connection::State::Connected {
                    // Refused at once, as a forward is (below).
                    if let (Some(ticket), Some(to_core)) = (ticket, to_cores.get(core.0)) {
                        let _ = to_core
                            .send_async(ToCore::Acked { ticket, ok: false })
                            .await;
                    }
                    continue;
                }
                let _ = retained_puts.send(Put {
                    core,
                    message,
                    ticket,
                });
            }
            FromCore::Forward {
                core,
                node: target,
                message,
                groups,
                ticket,
            } => {
                let Some(target) = names.borrow().name(target).map(str::to_string) else {
                    continue;
                };
                let acked = |ok: bool| {
                    let to_core = to_cores.get(core.0).cloned();
                    async move {
                        if let (Some(to_core), Some(ticket)) = (to_core, ticket) {
                            let _ = to_core.send_async(ToCore::Acked { ticket, ok }).await;
                        }
                    }
                };
                let Some(body) = wire::encode_for(&message, &groups, Instant::now()) else {
                    acked(true).await; // expired on the way: as if delivered and expired there
                    continue;
                };
                if client.connection_state() != async_nats::connection::State::Connected {
                    // Refused (QoS 0: dropped) at once rather than queued behind a
                    // reconnection: publishers learn now, and this loop never stalls.
                    acked(false).await;
                    continue;
                }
                if message.qos == QoS::AtMostOnce {
                    let sent = tokio::time::timeout(
                        SEND_WAIT,
                        client.publish(keys::q0_subject(&target), body),
                    );
                    if !matches!(sent.await, Ok(Ok(()))) {
                        tracing::debug!(node = %target, "cluster: QoS 0 message not sent");
                    }
                    continue;
                }
                if drop_forwards {
                    tracing::info!("cluster: test hook: a forward neither sent nor answered");
                    continue;
                }
                let mut headers = HeaderMap::new();
                let id = match message.origin {
                    // A persistent publisher's QoS 2 message: its origin is journaled and
                    // never reused, so a recovery that routes it again sends the same id and
                    // JetStream's duplicate window drops the second copy.
                    Some(origin) => format!("{node}-o{}-{}", origin.core, origin.seq),
                    None => format!("{node}-{run:016x}-{}-{}", core.0, ticket.unwrap_or(0)),
                };
                headers.insert("Nats-Msg-Id", id.as_str());
                let sent = tokio::time::timeout(
                    SEND_WAIT,
                    js.publish_with_headers(keys::in_subject(&target), headers, body),
                );
                match sent
                    .await
                    .map_err(|_| "timed out".to_string())
                    .and_then(|sent| sent.map_err(|e| e.to_string()))
                {
                    Ok(ack) => {
                        let done = acked(true);
                        let failed = acked(false);
                        tokio::task::spawn_local(async move {
                            match ack.await {
                                Ok(_) => done.await,
                                Err(error) => {
                                    tracing::warn!(%error, node = %target, "cluster: a QoS 1/2 message was not stored");
                                    failed.await
                                }
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, node = %target, "cluster: a QoS 1/2 message was not sent");
                        acked(false).await;
                    }
                }
            }
        }
    }
    tracing::info!("cluster: the cores have stopped; bridge stopped");
}

/// Watches `bucket` (named `name`) from its first entry, trying again every `RETRY` until
/// both the watch and a look at its stream succeed; also says whether the bucket held
/// nothing when the watch began (a watch of an empty bucket yields no first entry to tell
/// it has caught up).
pub(super) async fn watch_bucket(
    js: &jetstream::Context,
    bucket: &kv::Store,
    name: &str,
) -> (bool, kv::Watch) {
    loop {
        let empty = match js.get_stream(format!("KV_{name}")).await {
            Ok(stream) => stream.cached_info().state.messages == 0,
            Err(error) => {
                tracing::warn!(%error, bucket = name, "cluster: bucket not readable, trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        match bucket.watch_with_history(">").await {
            Ok(entries) => return (empty, entries),
            Err(error) => {
                tracing::warn!(%error, bucket = name, "cluster: cannot watch the bucket, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
