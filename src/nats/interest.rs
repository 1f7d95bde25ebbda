//! The interest bucket: this node's entries written (in the order its cores announced
//! them, each retried until it is written, made to match the cores' filters after
//! recovery and after every reconnection) and every other node's entries watched into each
//! core's replica (`broker::nodes`).
//!
//! Invariants: a node's own entries never reach its cores; a core is told of a filter of
//! a node once per change (a watch begun again after a break tells nothing twice, and
//! withdraws what it no longer finds); start-up is told "caught up" only after every core
//! has applied what the bucket held (a `Barrier` round).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use async_nats::jetstream::{self, kv};
use bytestring::ByteString;
use futures_lite::StreamExt;

use super::bridge::{watch_bucket, RETRY};
use super::keys::{self, NodeNames};
use super::members::{barrier, every_core_applied, Applied, Members};
use super::ToCore;

/// A change of this node's entries in the interest bucket.
pub(super) enum KvOp {
    /// Make the node's entries exactly these filters (after recovery).
    Reconcile(Vec<ByteString>),
    Set {
        filter: ByteString,
        present: bool,
    },
    /// Said once every op before it is done.
    Answer(tokio::sync::oneshot::Sender<()>),
}

/// What [`write_interest`] writes with.
pub(super) struct Writer {
    pub bucket: kv::Store,
    pub node: String,
    pub client: async_nats::Client,
    pub members: Rc<Members>,
}

/// Writes this node's interest entries, in order, each until it succeeds.
pub(super) async fn write_interest(
    writer: Writer,
    mut ops: tokio::sync::mpsc::UnboundedReceiver<KvOp>,
    published: tokio::sync::oneshot::Sender<()>,
) {
    let Writer {
        bucket,
        node,
        client,
        members,
    } = writer;
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
            KvOp::Answer(done) => {
                let _ = done.send(());
            }
            KvOp::Set { filter, present } => {
                let key = keys::interest_key(&node, &filter);
                loop {
                    let written = if present {
                        bucket
                            .put(&key, filter.as_bytes().clone())
                            .await
                            .map(Some)
                            .map_err(async_nats::Error::from)
                    } else {
                        delete(&client, &bucket, &key).await.map(Some)
                    };
                    match written {
                        Ok(revision) => {
                            // The other nodes route new interest before the SUBACK, and
                            // no longer route a gone filter before the UNSUBACK.
                            if let Some(revision) = revision {
                                barrier(&client, &members, revision).await;
                            }
                            break;
                        }
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

/// Deletes `key` as `kv::Store::delete` does (a `KV-Operation: DEL` message on the key's
/// subject), returning the delete's revision, which that call does not: the barrier waits
/// for it.
async fn delete(
    client: &async_nats::Client,
    bucket: &kv::Store,
    key: &str,
) -> Result<u64, async_nats::Error> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    let subject = format!(
        "{}{key}",
        bucket.put_prefix.as_ref().unwrap_or(&bucket.prefix)
    );
    let ack = jetstream::new(client.clone())
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await?
        .await?;
    Ok(ack.sequence)
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
pub(super) async fn watch_interest(
    bucket: kv::Store,
    js: jetstream::Context,
    node: String,
    (names, applied): (Rc<RefCell<NodeNames>>, Rc<Applied>),
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
    caught_up: tokio::sync::oneshot::Sender<()>,
) {
    let mut caught_up = Some(caught_up);
    // key -> (node, filter), as the cores were told.
    let mut known: HashMap<String, (crate::broker::NodeId, ByteString)> = HashMap::new();
    loop {
        let (empty, mut entries) = watch_bucket(&js, &bucket, keys::INTEREST_BUCKET).await;
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
            applied.told(entry.revision);
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
        every_core_applied(to_cores).await;
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
