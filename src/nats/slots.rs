//! The cluster's slot map in NATS: the KV bucket `berth_slots`, one entry `map` holding the
//! whole map in its text form (`cluster::slots`). With `nats` configured the bucket is the
//! authority; a node's slot map file only seeds it.
//!
//! One entry for the whole map rather than one per slot: moving a range of slots is then one
//! compare-and-swap (the range flips at once, never half), seeding is one `create` (of two
//! nodes starting together on an empty bucket exactly one wins, and both then read the
//! winner's map), and a watcher applies one value, never a map made of two revisions. The
//! text stays small (one line per run of slots with the same owner and epoch; 4,096 lines,
//! about 60 KB, at the very worst, under NATS's 1 MB payload limit).
//!
//! **Invariants:** the entry changes only by [`swap`], a compare-and-swap on the revision the
//! writer read, and only to a map that [`SlotMap::may_become`] allows (epochs only grow); a
//! node applies every map the bucket holds, in the bucket's order, and nothing else while it
//! runs with NATS (SIGHUP does not re-read the file then).

use std::sync::Arc;

use async_nats::jetstream::{self, kv, stream};
use futures_lite::StreamExt;

use super::bridge::RETRY;
use crate::cluster::{Slot, SlotMap};

pub const SLOTS_BUCKET: &str = "berth_slots";
/// The one key of [`SLOTS_BUCKET`].
pub const MAP_KEY: &str = "map";

/// Why [`swap`] did not write.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(
        "the slot map changed since revision {read} (someone else moved slots): read it again"
    )]
    Stale { read: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("NATS: {0}")]
    Nats(String),
}

/// The bucket, made when missing with `replicas` replicas.
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, String> {
    if let Ok(bucket) = js.get_key_value(SLOTS_BUCKET).await {
        return Ok(bucket);
    }
    let made = js
        .create_key_value(kv::Config {
            bucket: SLOTS_BUCKET.to_string(),
            description: "berth: the slot map (slot -> node, epoch; node -> address)".to_string(),
            // A few past maps, for an operator to see what moved.
            history: 16,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match made {
        Ok(bucket) => Ok(bucket),
        // Another node made it at the same moment.
        Err(error) => js
            .get_key_value(SLOTS_BUCKET)
            .await
            .map_err(|_| format!("bucket {SLOTS_BUCKET}: {error}")),
    }
}

/// The map in the bucket and its revision, `None` while the bucket holds none.
pub async fn read(bucket: &kv::Store) -> Result<Option<(SlotMap, u64)>, String> {
    let entry = bucket
        .entry(MAP_KEY)
        .await
        .map_err(|e| format!("bucket {SLOTS_BUCKET}: {e}"))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    let map = parse_value(&entry.value)?;
    Ok(Some((map, entry.revision)))
}

fn parse_value(value: &[u8]) -> Result<SlotMap, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| format!("bucket {SLOTS_BUCKET}: the map is not UTF-8"))?;
    SlotMap::parse(text).map_err(|e| format!("bucket {SLOTS_BUCKET}: the map: {e}"))
}

/// Puts `seed` in the bucket when it holds no map (`create`: the first writer wins).
pub async fn seed(bucket: &kv::Store, seed: &SlotMap) -> Result<(), String> {
    match bucket.create(MAP_KEY, seed.render().into()).await {
        Ok(_) => {
            tracing::info!("cluster: slot map bucket seeded from this node's slot map file");
            Ok(())
        }
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(format!("bucket {SLOTS_BUCKET}: {error}")),
    }
}

/// Replaces the map read at `revision` (`before`) with `next`: refused when `next` may not
/// follow `before`, or when the entry is no longer at `revision`. The new revision.
pub async fn swap(
    bucket: &kv::Store,
    before: &SlotMap,
    revision: u64,
    next: &SlotMap,
) -> Result<u64, SwapError> {
    before.may_become(next).map_err(SwapError::Refused)?;
    match bucket.update(MAP_KEY, next.render().into(), revision).await {
        Ok(revision) => Ok(revision),
        Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            Err(SwapError::Stale { read: revision })
        }
        Err(error) => Err(SwapError::Nats(error.to_string())),
    }
}

/// Seeds the bucket with `seed`, then applies every map it holds with `apply`, for as long
/// as the node runs; `caught_up` is said once the bucket's map is applied.
pub(super) async fn watch_slots(
    js: jetstream::Context,
    replicas: usize,
    seed_map: Arc<SlotMap>,
    apply: Box<dyn Fn(Arc<SlotMap>) + Send>,
    caught_up: tokio::sync::oneshot::Sender<()>,
) {
    let mut caught_up = Some(caught_up);
    loop {
        // As many replicas as the node's other buckets (`replicas`), also when an operator's
        // command made it first.
        let made = match bucket(&js, replicas).await {
            Ok(bucket) => super::replicas::ensure(&js, &format!("KV_{SLOTS_BUCKET}"), replicas)
                .await
                .map(|()| bucket),
            Err(error) => Err(error),
        };
        let bucket = match made {
            Ok(bucket) => bucket,
            Err(error) => {
                tracing::warn!(%error, "cluster: slot map bucket not ready, trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(error) = seed(&bucket, &seed_map).await {
            tracing::warn!(%error, "cluster: cannot seed the slot map bucket, trying again");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let mut entries = match bucket.watch_with_history(MAP_KEY).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot watch the slot map, trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(entry) = entries.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "cluster: slot map watch error");
                    continue;
                }
            };
            if entry.operation != kv::Operation::Put {
                // Only an operator's hand deletes it; the map in force stays.
                tracing::error!(
                    "cluster: the slot map entry was deleted; keeping the map in force"
                );
                continue;
            }
            match parse_value(&entry.value) {
                Ok(map) => {
                    tracing::info!(revision = entry.revision, "cluster: slot map applied");
                    apply(Arc::new(map));
                }
                Err(error) => {
                    tracing::error!(%error, revision = entry.revision, "cluster: slot map left out")
                }
            }
            // The entry was seeded before the watch: its first delivery is the map in force.
            if let Some(said) = caught_up.take() {
                let _ = said.send(());
            }
        }
        tracing::warn!("cluster: slot map watch ended, watching again");
        tokio::time::sleep(RETRY).await;
    }
}

/// What `berth cluster assign` asks: the slots `first..=last` to `node` (declared at
/// `address` when the map does not name it), compare-and-swapped on `revision` (the one
/// the operator read) or else on the revision read now.
pub struct Assign<'a> {
    pub first: Slot,
    pub last: Slot,
    pub node: &'a str,
    pub address: Option<&'a str>,
    pub revision: Option<u64>,
}

/// `berth cluster slots`: the map in the bucket and its revision, as the comment line
/// `# revision N` and the map's text form.
pub fn show(servers: &[String]) -> Result<String, String> {
    let (map, revision) = current(servers)?;
    Ok(format!("# revision {revision}\n{}", map.render()))
}

/// The map in the bucket and its revision.
pub fn current(servers: &[String]) -> Result<(SlotMap, u64), String> {
    with_bucket(servers, |bucket| async move {
        read(&bucket)
            .await?
            .ok_or_else(|| format!("bucket {SLOTS_BUCKET} holds no slot map yet"))
    })
}

/// `berth cluster assign`: the new map and its revision.
pub fn assign(servers: &[String], ask: &Assign<'_>) -> Result<(SlotMap, u64), String> {
    with_bucket(servers, |bucket| async move {
        let (map, read_now) = read(&bucket)
            .await?
            .ok_or_else(|| format!("bucket {SLOTS_BUCKET} holds no slot map yet"))?;
        let next = map.assign(ask.first, ask.last, ask.node, ask.address)?;
        let revision = swap(&bucket, &map, ask.revision.unwrap_or(read_now), &next)
            .await
            .map_err(|e| e.to_string())?;
        Ok((next, revision))
    })
}

/// Runs `work` on the slot bucket of the cluster at `servers`, on a runtime of its own.
fn with_bucket<F, T>(servers: &[String], work: impl FnOnce(kv::Store) -> F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = super::operator_client(servers, OPERATOR_WAIT).await?;
        let js = jetstream::new(client);
        // An operator's command before any node made it: the nodes scale it to theirs.
        let bucket = bucket(&js, 1).await?;
        tokio::time::timeout(OPERATOR_WAIT, work(bucket))
            .await
            .map_err(|_| format!("NATS did not answer within {OPERATOR_WAIT:?}"))?
    })
}

/// The longest an operator command waits for NATS.
const OPERATOR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
