//! `berth cluster forget-node`: what a node that never comes back leaves in NATS — its
//! interest entries in `berth_interest` (the other nodes keep forwarding QoS 1/2 messages
//! for its subscribers into its stream), its heartbeat in `berth_nodes` and its stream
//! `BERTH_IN_<node>` — removed by an operator.
//!
//! Invariants: nothing is removed while the node is live (a heartbeat within `ALIVE`) or
//! while the slot map gives it slots (its clients' sessions would come back to it); the
//! interest entries go before the stream, so the other nodes stop forwarding to it before
//! the stream that would take their messages is gone.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use futures_lite::StreamExt;

use super::{keys, members};

/// How long the command waits for NATS before it gives up.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// What was removed.
#[derive(Debug, Default)]
pub struct Forgotten {
    pub interest_entries: usize,
    pub heartbeat: bool,
    /// The stream's messages, when it was there.
    pub stream_messages: Option<u64>,
}

/// Removes dead node `node`'s entries and stream through the NATS servers `servers`, after
/// checking that its heartbeat is older than `ALIVE` (the caller checks the slot map).
pub fn forget_node(servers: &[String], node: &str) -> Result<Forgotten, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
    runtime.block_on(forget(servers, keys::nats_name(node)))
}

async fn forget(servers: &[String], node: String) -> Result<Forgotten, String> {
    let client = super::operator_client(servers, CONNECT_WAIT).await?;
    let js = jetstream::new(client);
    let mut forgotten = Forgotten::default();
    let beats = js.get_key_value(keys::NODES_BUCKET).await.ok();
    if let Some(beats) = &beats {
        let beat = beats
            .entry(&node)
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::NODES_BUCKET))?;
        if let Some(beat) =
            beat.filter(|b| b.operation == async_nats::jetstream::kv::Operation::Put)
        {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let age =
                Duration::from_nanos((now - beat.created.unix_timestamp_nanos()).max(0) as u64);
            if age < members::ALIVE {
                return Err(format!(
                    "node {node} is live (its last heartbeat {} ms ago); stop it first and \
                     wait {} s",
                    age.as_millis(),
                    members::ALIVE.as_secs()
                ));
            }
        }
    }
    if let Ok(interest) = js.get_key_value(keys::INTEREST_BUCKET).await {
        let mut present = interest
            .keys()
            .await
            .map_err(|e| format!("bucket {}: {e}", keys::INTEREST_BUCKET))?;
        let mut its = Vec::new();
        while let Some(key) = present.next().await {
            let key = key.map_err(|e| format!("bucket {}: {e}", keys::INTEREST_BUCKET))?;
            if keys::key_node(&key) == Some(node.as_str()) {
                its.push(key);
            }
        }
        for key in &its {
            interest
                .delete(key)
                .await
                .map_err(|e| format!("bucket {}: deleting {key}: {e}", keys::INTEREST_BUCKET))?;
        }
        forgotten.interest_entries = its.len();
    }
    if let Some(beats) = &beats {
        if matches!(beats.entry(&node).await, Ok(Some(_))) {
            beats
                .purge(&node)
                .await
                .map_err(|e| format!("bucket {}: {e}", keys::NODES_BUCKET))?;
            forgotten.heartbeat = true;
        }
    }
    let stream = keys::in_stream(&node);
    if let Ok(mut found) = js.get_stream(&stream).await {
        let messages = found
            .info()
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?
            .state
            .messages;
        js.delete_stream(&stream)
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?;
        forgotten.stream_messages = Some(messages);
    }
    Ok(forgotten)
}
