//! The cluster's retained messages: KV bucket `berth_retained`, one entry per topic (key
//! `sha256(topic)`, value the message as `wire` encodes it, a clear being the message with
//! an empty payload). Each node puts its retained PUBLISHes in it, in the order its cores
//! made them, and watches the whole bucket, with its history, into every core's store.
//!
//! Why a bucket and not a forward to every node: the bucket is one order for every
//! topic's changes (the last put wins on every node, whichever node made it), and it
//! outlives the nodes, so a node that was down, or new, reads what it missed from it when
//! it starts, with no replay protocol of ours.
//!
//! Invariants: a core is told every entry, its own node's included (only the bucket's
//! order is the cluster's); start-up is told "caught up" only after every core has applied
//! what the bucket held when the watch began (a `Barrier` round); a watch begun again after
//! a break tells the cores everything again (they skip what changes nothing); a retained
//! message's expiry counts from the time its entry was written.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream::{self, kv};
use futures_lite::StreamExt;

use super::bridge::{watch_bucket, RETRY, SEND_WAIT};
use super::{keys, wire, ToCore};
use crate::ownership::CoreId;
use crate::session::Message;

/// A retained message of a core, for the bucket.
pub(super) struct Put {
    pub core: CoreId,
    pub message: Arc<Message>,
    pub ticket: Option<u64>,
}

/// Puts this node's retained messages in the bucket, in order, each answered (QoS 1/2)
/// once the bucket has it or could not take it (NATS away, or it took longer than
/// `SEND_WAIT`): the publisher is refused then, as for a forward. It runs from the start
/// and opens the bucket itself, so that while JetStream is not ready its answers do not
/// wait for it.
pub(super) async fn write_retained(
    js: jetstream::Context,
    client: async_nats::Client,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    mut puts: tokio::sync::mpsc::UnboundedReceiver<Put>,
) {
    let mut bucket: Option<kv::Store> = None;
    while let Some(Put {
        core,
        message,
        ticket,
    }) = puts.recv().await
    {
        if bucket.is_none() {
            if let Ok(Ok(opened)) =
                tokio::time::timeout(SEND_WAIT, js.get_key_value(keys::RETAINED_BUCKET)).await
            {
                bucket = Some(opened);
            }
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let ok = match (wire::encode(&message, Instant::now()), &bucket) {
            // Expired on the way: as if stored and expired there.
            (None, _) => true,
            (Some(_), None) => {
                tracing::warn!(topic = %message.topic, "cluster: no retained bucket yet; a retained message was not stored");
                false
            }
            (Some(_), Some(_)) if !connected => false,
            (Some(body), Some(bucket)) => {
                let key = keys::retained_key(&message.topic);
                match tokio::time::timeout(SEND_WAIT, bucket.put(&key, body)).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, topic = %message.topic, "cluster: a retained message was not stored");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(topic = %message.topic, "cluster: a retained message was not stored in time");
                        false
                    }
                }
            }
        };
        if let (Some(ticket), Some(to_core)) = (ticket, to_cores.get(core.0)) {
            let _ = to_core.send_async(ToCore::Acked { ticket, ok }).await;
        }
    }
}

/// Every entry of the bucket, into every core's store; again after a broken watch.
pub(super) async fn watch_retained(
    bucket: kv::Store,
    js: jetstream::Context,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    caught_up: tokio::sync::oneshot::Sender<()>,
) {
    let mut caught_up = Some(caught_up);
    loop {
        let (empty, mut entries) = watch_bucket(&js, &bucket, keys::RETAINED_BUCKET).await;
        if empty {
            finish_catch_up(&to_cores, &mut caught_up).await;
        }
        while let Some(entry) = entries.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "cluster: retained watch error");
                    continue;
                }
            };
            apply_entry(&entry, &to_cores).await;
            if entry.delta == 0 {
                finish_catch_up(&to_cores, &mut caught_up).await;
            }
        }
        tracing::warn!("cluster: retained watch ended, watching again");
        tokio::time::sleep(RETRY).await;
    }
}

async fn apply_entry(entry: &kv::Entry, to_cores: &[flume::Sender<ToCore>]) {
    if entry.operation != kv::Operation::Put {
        return; // berth never deletes an entry: a clear is a put of an empty message
    }
    let (publisher, mut publish) = match wire::decode(&entry.value) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(%error, key = %entry.key, "cluster: a retained entry left out");
            return;
        }
    };
    if let Some(interval) = publish.properties.message_expiry_interval {
        // The interval was the time left when the entry was written.
        let age = SystemTime::now()
            .duration_since(SystemTime::from(entry.created))
            .map_or(0, |age| age.as_secs());
        match u64::from(interval)
            .checked_sub(age)
            .filter(|left| *left > 0)
        {
            Some(left) => {
                publish.properties.message_expiry_interval =
                    Some(u32::try_from(left).unwrap_or(u32::MAX));
            }
            // Expired: it clears whatever this node held for the topic.
            None => publish.payload = bytes::Bytes::new(),
        }
    }
    for core in to_cores {
        let _ = core
            .send_async(ToCore::Retained {
                publisher: publisher.clone(),
                publish: publish.clone(),
            })
            .await;
    }
}

/// The watch has delivered what the bucket held when it began: the first time, once every
/// core has applied it, the node may say it is ready.
async fn finish_catch_up(
    to_cores: &[flume::Sender<ToCore>],
    caught_up: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    if let Some(caught_up) = caught_up.take() {
        super::members::every_core_applied(to_cores).await;
        let _ = caught_up.send(());
        tracing::info!("cluster: the cluster's retained messages applied");
    }
}
