//! How many NATS servers keep each copy of the node's stream and the cluster's buckets
//! (`[cluster] nats_replicas`), and bringing an existing one to that count.
//!
//! Unset, the count is 3 when the server this node reached is in a NATS cluster (its INFO
//! names one): a stream of 3 replicas keeps its quorum, and so every message it
//! acknowledged, when one server dies; and 1 against a lone server, which refuses more.
//! A NATS cluster of 2 servers (or one wanting 5) needs the key set.
//!
//! Invariant: a stream or bucket made before with another count is updated to it (JetStream
//! scales it in place, keeping its messages) rather than left with a mismatch; an update
//! JetStream refuses is an error, so the setup is tried again and the refusal logged.

use async_nats::jetstream;

/// The replicas when the server is in a NATS cluster and none are configured.
pub(super) const CLUSTERED: usize = 3;

/// The replicas wanted: `configured`, else [`CLUSTERED`] or 1 by the server's INFO (an
/// error until connected, when there is no INFO to tell).
pub(super) fn resolve(
    client: &async_nats::Client,
    configured: Option<usize>,
) -> Result<usize, String> {
    if let Some(replicas) = configured {
        return Ok(replicas);
    }
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err("not connected to NATS yet".into());
    }
    let info = client
        .try_server_info()
        .ok_or_else(|| "no INFO from the NATS server yet".to_string())?;
    Ok(if info.cluster.is_some() { CLUSTERED } else { 1 })
}

/// Brings stream `name` (a bucket's is `KV_<bucket>`) to `replicas`, where it has another
/// count.
pub(super) async fn ensure(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<(), String> {
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| format!("stream {name}: {e}"))?
        .config
        .clone();
    if config.num_replicas.max(1) == replicas {
        return Ok(());
    }
    tracing::info!(
        stream = name,
        from = config.num_replicas,
        to = replicas,
        "cluster: changing the stream's replicas"
    );
    config.num_replicas = replicas;
    js.update_stream(config)
        .await
        .map_err(|e| format!("stream {name}: to {replicas} replicas: {e}"))?;
    Ok(())
}
