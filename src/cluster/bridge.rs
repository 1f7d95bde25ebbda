//! The bridge's tasks on its tokio runtime: the connection, the interest bucket (this
//! node's entries written, every other node's watched), forwarding the cores' messages,
//! and taking in what other nodes sent here (core NATS for QoS 0, the node's stream for
//! QoS 1/2).
//!
//! Invariants: the bridge never blocks a core (it only sends to their inboxes); the node's
//! KV entries are written in the order the cores announced them, each retried until it
//! succeeds, and made to match the cores' filters whenever the bridge (re)starts; a stream
//! message is acknowledged only after the core it went to answered that it is stored, and
//! in the order of the stream; a message that does not decode is logged and terminated,
//! never routed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{ConnectOptions, Event, HeaderMap, ServerAddr};
use bytestring::ByteString;
use futures_lite::StreamExt;

use super::keys::{self, LocalInterest, NodeNames};
use super::{wire, FromCore, ToCore};
use crate::ownership::owner_of;
use crate::protocol::QoS;

/// How long a failed setup step or KV write waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Stream messages delivered to this node and not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 1024;

pub(super) struct Setup {
    pub node: String,
    pub servers: Vec<String>,
    pub from_cores: flume::Receiver<FromCore>,
    pub to_cores: Vec<flume::Sender<ToCore>>,
    pub ready: std::sync::mpsc::Sender<()>,
}

/// A change of this node's entries in the interest bucket.
enum KvOp {
    /// Make the node's entries exactly these filters (after recovery).
    Reconcile(Vec<ByteString>),
    Set {
        filter: ByteString,
        present: bool,
    },
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
    let (bucket, inbound) = loop {
        match prepare(&js, &node).await {
            Ok(prepared) => break prepared,
            Err(error) => {
                tracing::warn!(%error, "cluster: JetStream not ready, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tracing::info!(%node, stream = %keys::in_stream(&node), "cluster: joined");
    let names = Rc::new(RefCell::new(NodeNames::default()));
    let to_cores = Rc::new(to_cores);
    let (kv_ops, kv_rx) = tokio::sync::mpsc::unbounded_channel();
    let (published_tx, published) = tokio::sync::oneshot::channel();
    let (caught_up_tx, caught_up) = tokio::sync::oneshot::channel();
    tokio::task::spawn_local(write_interest(
        bucket.clone(),
        node.clone(),
        kv_rx,
        published_tx,
    ));
    tokio::task::spawn_local(watch_interest(
        bucket,
        js.clone(),
        node.clone(),
        names.clone(),
        to_cores.clone(),
        caught_up_tx,
    ));
    tokio::task::spawn_local(take_qos0(client.clone(), node.clone(), to_cores.clone()));
    tokio::task::spawn_local(take_stream(
        inbound,
        js.clone(),
        node.clone(),
        to_cores.clone(),
    ));
    tokio::task::spawn_local(async move {
        if published.await.is_ok() && caught_up.await.is_ok() {
            tracing::info!("cluster: interest published and the other nodes' applied");
            let _ = ready.send(());
        }
    });
    let links = Links {
        client,
        js,
        node,
        names,
        to_cores,
        kv_ops,
    };
    forward(from_cores, connected, links).await;
}

/// What [`forward`] sends through.
struct Links {
    client: async_nats::Client,
    js: jetstream::Context,
    node: String,
    names: Rc<RefCell<NodeNames>>,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    kv_ops: tokio::sync::mpsc::UnboundedSender<KvOp>,
}

/// The bucket and this node's stream and consumer, made where missing.
async fn prepare(
    js: &jetstream::Context,
    node: &str,
) -> Result<(kv::Store, consumer::Consumer<consumer::pull::Config>), String> {
    let bucket = match js.get_key_value(keys::INTEREST_BUCKET).await {
        Ok(bucket) => bucket,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: keys::INTEREST_BUCKET.to_string(),
                description: "berth: which node subscribes to which filter".to_string(),
                history: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::INTEREST_BUCKET))?,
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
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", keys::in_stream(node)))?;
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
    Ok((bucket, consumer))
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
    } = links;
    let mut local = LocalInterest::default();
    let mut recovered = HashSet::new();
    // Message ids must differ from those of this node's earlier runs: JetStream drops a
    // message whose id it saw within its duplicate window.
    let run: u64 = rand::random();
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
            } => {
                let changed = local.announced(core, &filter, present);
                if let (Some(present), true) = (changed, recovered.len() == to_cores.len()) {
                    let _ = kv_ops.send(KvOp::Set { filter, present });
                }
            }
            FromCore::Recovered { core } => {
                recovered.insert(core);
                if recovered.len() == to_cores.len() {
                    let _ = kv_ops.send(KvOp::Reconcile(local.filters().cloned().collect()));
                }
            }
            FromCore::Forward {
                core,
                node: target,
                message,
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
                let Some(body) = wire::encode(&message, Instant::now()) else {
                    acked(true).await; // expired on the way: as if delivered and expired there
                    continue;
                };
                if message.qos == QoS::AtMostOnce {
                    if let Err(error) = client.publish(keys::q0_subject(&target), body).await {
                        tracing::debug!(%error, node = %target, "cluster: QoS 0 message not sent");
                    }
                    continue;
                }
                let mut headers = HeaderMap::new();
                let id = format!("{node}-{run:016x}-{}-{}", core.0, ticket.unwrap_or(0));
                headers.insert("Nats-Msg-Id", id.as_str());
                match js
                    .publish_with_headers(keys::in_subject(&target), headers, body)
                    .await
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

/// Writes this node's interest entries, in order, each until it succeeds.
async fn write_interest(
    bucket: kv::Store,
    node: String,
    mut ops: tokio::sync::mpsc::UnboundedReceiver<KvOp>,
    published: tokio::sync::oneshot::Sender<()>,
) {
    let mut published = Some(published);
    while let Some(op) = ops.recv().await {
        match op {
            KvOp::Reconcile(filters) => {
                while let Err(error) = reconcile(&bucket, &node, &filters).await {
                    tracing::warn!(%error, "cluster: interest not published, trying again");
                    tokio::time::sleep(RETRY).await;
                }
                tracing::info!(filters = filters.len(), "cluster: interest published");
                if let Some(published) = published.take() {
                    let _ = published.send(());
                }
            }
            KvOp::Set { filter, present } => {
                let key = keys::interest_key(&node, &filter);
                loop {
                    let written = if present {
                        bucket
                            .put(&key, filter.as_bytes().clone())
                            .await
                            .map(drop)
                            .map_err(async_nats::Error::from)
                    } else {
                        bucket.delete(&key).await.map_err(async_nats::Error::from)
                    };
                    match written {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(%error, %filter, "cluster: interest not written, trying again");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            }
        }
    }
}

/// Deletes this node's entries for filters it no longer has, and puts the others.
async fn reconcile(
    bucket: &kv::Store,
    node: &str,
    filters: &[ByteString],
) -> Result<(), async_nats::Error> {
    let wanted: HashMap<String, &ByteString> = filters
        .iter()
        .map(|f| (keys::interest_key(node, f), f))
        .collect();
    let mut present = bucket.keys().await?;
    let mut stale = Vec::new();
    while let Some(key) = present.next().await {
        let key = key?;
        if keys::key_node(&key) == Some(node) && !wanted.contains_key(&key) {
            stale.push(key);
        }
    }
    for key in stale {
        bucket.delete(&key).await?;
    }
    for (key, filter) in wanted {
        bucket.put(&key, filter.as_bytes().clone()).await?;
    }
    Ok(())
}

/// Every other node's entries, into every core's replica; again after a broken watch.
async fn watch_interest(
    bucket: kv::Store,
    js: jetstream::Context,
    node: String,
    names: Rc<RefCell<NodeNames>>,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    caught_up: tokio::sync::oneshot::Sender<()>,
) {
    let mut caught_up = Some(caught_up);
    // key -> (node, filter), as the cores were told.
    let mut known: HashMap<String, (crate::broker::NodeId, ByteString)> = HashMap::new();
    loop {
        let stream_name = format!("KV_{}", keys::INTEREST_BUCKET);
        let empty = match js.get_stream(&stream_name).await {
            Ok(stream) => stream.cached_info().state.messages == 0,
            Err(error) => {
                tracing::warn!(%error, "cluster: interest bucket not readable, trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut entries = match bucket.watch_with_history(">").await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot watch the interest bucket, trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Keys seen since this watch began: once it has caught up, the rest are gone.
        let mut seen: Option<HashSet<String>> = Some(HashSet::new());
        if empty {
            finish_catch_up(&mut seen, &mut known, &to_cores, &mut caught_up).await;
        }
        while let Some(entry) = entries.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "cluster: interest watch error");
                    continue;
                }
            };
            if let Some(seen) = seen.as_mut() {
                seen.insert(entry.key.clone());
            }
            apply_entry(&entry, &node, &names, &mut known, &to_cores).await;
            if entry.delta == 0 && seen.is_some() {
                finish_catch_up(&mut seen, &mut known, &to_cores, &mut caught_up).await;
            }
        }
        tracing::warn!("cluster: interest watch ended, watching again");
        tokio::time::sleep(RETRY).await;
    }
}

async fn apply_entry(
    entry: &kv::Entry,
    own: &str,
    names: &Rc<RefCell<NodeNames>>,
    known: &mut HashMap<String, (crate::broker::NodeId, ByteString)>,
    to_cores: &[flume::Sender<ToCore>],
) {
    let Some(node) = keys::key_node(&entry.key) else {
        return;
    };
    if node == own {
        return;
    }
    let put = entry.operation == kv::Operation::Put;
    let filter = ByteString::try_from(entry.value.clone())
        .ok()
        .filter(|_| put);
    if known.get(&entry.key).map(|(_, f)| Some(f)) == Some(filter.as_ref()) {
        return; // told already (a watch again after a break)
    }
    if let Some((id, old)) = known.remove(&entry.key) {
        tell_cores(to_cores, id, &old, false).await;
    }
    if let Some(filter) = filter {
        let id = names.borrow_mut().id(node);
        tell_cores(to_cores, id, &filter, true).await;
        known.insert(entry.key.clone(), (id, filter));
    }
}

/// The watch has delivered what the bucket held when it began: entries not among them
/// were deleted while no watch ran; the first time, the node may now say it is ready.
async fn finish_catch_up(
    seen: &mut Option<HashSet<String>>,
    known: &mut HashMap<String, (crate::broker::NodeId, ByteString)>,
    to_cores: &[flume::Sender<ToCore>],
    caught_up: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    let Some(seen) = seen.take() else {
        return;
    };
    let gone: Vec<String> = known
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some((id, filter)) = known.remove(&key) {
            tell_cores(to_cores, id, &filter, false).await;
        }
    }
    if let Some(caught_up) = caught_up.take() {
        for core in to_cores {
            let (done, applied) = flume::bounded(1);
            if core.send_async(ToCore::Barrier(done)).await.is_ok() {
                let _ = applied.recv_async().await;
            }
        }
        let _ = caught_up.send(());
    }
}

async fn tell_cores(
    to_cores: &[flume::Sender<ToCore>],
    node: crate::broker::NodeId,
    filter: &ByteString,
    present: bool,
) {
    for core in to_cores {
        let _ = core
            .send_async(ToCore::Interest {
                node,
                filter: filter.clone(),
                present,
            })
            .await;
    }
}

/// QoS 0 messages other nodes send here, to the core that owns their publisher's id (so
/// that one publisher's messages keep their order).
async fn take_qos0(
    client: async_nats::Client,
    node: String,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
) {
    let subject = keys::q0_subject(&node);
    let mut messages = loop {
        match client.subscribe(subject.clone()).await {
            Ok(messages) => break messages,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot subscribe to {subject}, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    while let Some(message) = messages.next().await {
        match wire::decode(&message.payload) {
            Ok((publisher, publish)) => {
                let core = owner_of(&publisher, to_cores.len()).0;
                let inject = ToCore::Inject {
                    publisher,
                    publish,
                    done: None,
                };
                let _ = to_cores[core].send_async(inject).await;
            }
            Err(error) => tracing::warn!(%error, "cluster: a QoS 0 message from NATS dropped"),
        }
    }
}

/// The node's stream: each message routed here, acknowledged once stored, in order.
async fn take_stream(
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    js: jetstream::Context,
    node: String,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
) {
    let (pending, mut answers) = tokio::sync::mpsc::channel(MAX_ACK_PENDING as usize);
    tokio::task::spawn_local(async move {
        while let Some((message, done)) = answers.recv().await {
            let done: flume::Receiver<bool> = done;
            let message: jetstream::Message = message;
            let acked = match done.recv_async().await {
                Ok(true) => message.ack().await,
                // Refused (a full disk) or the core stopped: JetStream delivers it again.
                _ => message.ack_with(jetstream::AckKind::Nak(Some(RETRY))).await,
            };
            if let Err(error) = acked {
                tracing::warn!(%error, "cluster: a stream acknowledgement was not sent");
            }
        }
    });
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                // The stream or its consumer may be gone (deleted by hand): made again.
                tracing::warn!(%error, "cluster: cannot read this node's stream, trying again");
                tokio::time::sleep(RETRY).await;
                if let Ok((_, again)) = prepare(&js, &node).await {
                    consumer = again;
                }
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "cluster: reading this node's stream again");
                    break;
                }
            };
            let (publisher, publish) = match wire::decode(&message.payload) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::warn!(%error, "cluster: a stream message dropped");
                    let _ = message.ack_with(jetstream::AckKind::Term).await;
                    continue;
                }
            };
            let core = owner_of(&publisher, to_cores.len()).0;
            let (done, answer) = flume::bounded(1);
            let inject = ToCore::Inject {
                publisher,
                publish,
                done: Some(done),
            };
            if to_cores[core].send_async(inject).await.is_err() {
                return; // the cores have stopped
            }
            if pending.send((message, answer)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
