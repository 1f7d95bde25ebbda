//! Which nodes are alive, and the barrier a SUBACK waits for: once a node has written new
//! interest (KV revision R), it asks every live node over core NATS (`berth.barrier`, R) and
//! waits until each has applied revision R on all of its cores, or `BARRIER_WAIT` passed.
//! So a publish that follows the SUBACK on any live node is routed to the new subscriber.
//!
//! Membership is a heartbeat: every node puts its name into the bucket `berth_nodes` every
//! `HEARTBEAT`; a node heard within `ALIVE` is live. The bucket's entries age out
//! (`max_age`), so one that stopped long ago is not even read at start.
//!
//! Invariants: a node never waits for itself; a barrier never waits longer than
//! `BARRIER_WAIT` (a node that stopped without a word is waited for only until it is no
//! longer live); a node answers a barrier only once every one of its cores has applied the
//! revision asked for.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_lite::StreamExt;

use super::bridge::RETRY;
use super::keys;
use super::ToCore;

const HEARTBEAT: Duration = Duration::from_secs(2);
pub(super) const ALIVE: Duration = Duration::from_secs(6);
/// How long heartbeats stay in the bucket.
pub(super) const HEARTBEAT_AGE: Duration = Duration::from_secs(10);
const BARRIER_WAIT: Duration = Duration::from_secs(2);

/// The other nodes heard lately.
#[derive(Default)]
pub(super) struct Members {
    heard: RefCell<HashMap<String, Instant>>,
}

impl Members {
    fn live(&self, now: Instant) -> HashSet<String> {
        self.heard
            .borrow()
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < ALIVE)
            .map(|(node, _)| node.clone())
            .collect()
    }
}

/// The newest revision of the interest bucket this node's cores were told of.
#[derive(Default)]
pub(super) struct Applied {
    revision: Cell<u64>,
    changed: tokio::sync::Notify,
}

impl Applied {
    pub fn told(&self, revision: u64) {
        if revision > self.revision.get() {
            self.revision.set(revision);
            self.changed.notify_waiters();
        }
    }

    async fn reached(&self, revision: u64) {
        loop {
            let changed = self.changed.notified();
            if self.revision.get() >= revision {
                return;
            }
            changed.await;
        }
    }
}

/// Puts this node's heartbeat, for as long as the bridge runs.
pub(super) async fn heartbeat(bucket: kv::Store, node: String) {
    loop {
        if let Err(error) = bucket.put(&node, bytes::Bytes::new()).await {
            tracing::debug!(%error, "cluster: heartbeat not written");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Every other node's heartbeats, into `members`.
pub(super) async fn watch_members(bucket: kv::Store, node: String, members: Rc<Members>) {
    loop {
        match bucket.watch_with_history(">").await {
            Ok(mut beats) => {
                while let Some(beat) = beats.next().await {
                    let Ok(beat) = beat else { continue };
                    if beat.key == node {
                        continue;
                    }
                    let mut heard = members.heard.borrow_mut();
                    if beat.operation == kv::Operation::Put {
                        heard.insert(beat.key, Instant::now());
                    } else {
                        heard.remove(&beat.key);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cluster: cannot watch the nodes' heartbeats"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Waits until every live node has applied interest revision `revision` on its cores,
/// at most [`BARRIER_WAIT`].
pub(super) async fn barrier(client: &async_nats::Client, members: &Members, revision: u64) {
    let wanted = members.live(Instant::now());
    if wanted.is_empty() {
        return;
    }
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return;
    };
    let asked = client
        .publish_with_reply(keys::BARRIER_SUBJECT, inbox, revision.to_string().into())
        .await;
    if asked.is_err() {
        return;
    }
    let mut answered = HashSet::new();
    let all = async {
        while !wanted.is_subset(&answered) {
            match answers.next().await {
                Some(answer) => {
                    answered.insert(String::from_utf8_lossy(&answer.payload).into_owned());
                }
                None => return,
            }
        }
    };
    if tokio::time::timeout(BARRIER_WAIT, all).await.is_err() {
        let missing: Vec<_> = wanted.difference(&answered).collect();
        tracing::debug!(
            ?missing,
            revision,
            "cluster: nodes did not answer the barrier in time"
        );
    }
}

/// Answers other nodes' barriers once this node's cores have the revision they ask for.
pub(super) async fn answer_barriers(
    client: async_nats::Client,
    node: String,
    applied: Rc<Applied>,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
) {
    let mut asks = loop {
        match client.subscribe(keys::BARRIER_SUBJECT).await {
            Ok(asks) => break asks,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot answer barriers, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    while let Some(ask) = asks.next().await {
        let (Some(reply), Ok(revision)) = (
            ask.reply,
            std::str::from_utf8(&ask.payload).map(|r| r.parse::<u64>()),
        ) else {
            continue;
        };
        let Ok(revision) = revision else { continue };
        let (client, node, applied, to_cores) = (
            client.clone(),
            node.clone(),
            applied.clone(),
            to_cores.clone(),
        );
        tokio::task::spawn_local(async move {
            let ready = async {
                applied.reached(revision).await;
                every_core_applied(&to_cores).await;
            };
            // The asker stops waiting after BARRIER_WAIT anyway.
            if tokio::time::timeout(BARRIER_WAIT, ready).await.is_ok() {
                let _ = client.publish(reply, node.into()).await;
            }
        });
    }
}

/// Returns once every core has applied what the bridge sent it before (a `Barrier` round);
/// a core that is gone counts as done.
pub(super) async fn every_core_applied(to_cores: &[flume::Sender<ToCore>]) {
    for core in to_cores {
        let (done, applied) = flume::bounded(1);
        if core.send_async(ToCore::Barrier(done)).await.is_ok() {
            let _ = applied.recv_async().await;
        }
    }
}
