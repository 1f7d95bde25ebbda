//! The data plane between the nodes of a cluster (the NATS bridge): one NATS connection per
//! node, on a tokio current-thread runtime in an OS thread of its own (`berth-nats`),
//! bridged to the glommio cores by flume channels (design A of `cluster-design.md`; the
//! entry tier, which node a client id lives on, is `crate::cluster`). It runs when the
//! `[cluster]` table names a node and `nats` servers.
//!
//! - **Interest**: a node announces a filter when the first of its cores gains a
//!   subscriber of it and withdraws it when the last loses its last one, as the KV entry
//!   `<node>.<sha256(filter)>` -> filter in bucket `berth_interest`. Every node watches the
//!   bucket into each core's replica (`broker::nodes`), leaving out its own entries. A
//!   SUBACK that added interest waits until every live node has applied it, an UNSUBACK
//!   that removed it until every live node has applied that (`members`). A share group
//!   is announced the same way (`$share/{group}/{filter}`) by a node with members of it;
//!   a forward names the groups the publishing node picked its target for (`wire`).
//! - **QoS 0** goes over core NATS to `berth.node.<node>.q0`.
//! - **Retained messages**: every retained PUBLISH (and clear) of a node is put in the KV
//!   bucket `berth_retained`, key `sha256(topic)`, value the message (`wire`); every node
//!   watches the bucket with its history into each core's store (its own entries too:
//!   the bucket's order decides between nodes), so a node that was down catches up.
//! - **QoS 1/2** go into the stream `BERTH_IN_<node>` (subject `berth.node.<node>.in`,
//!   `Nats-Msg-Id` = a unique id per forward); the publishing core's acknowledgement waits
//!   for JetStream's (`server::nodes`). The target consumes its stream with one durable
//!   pull consumer and acks a message once its cores have stored it.
//! - **The slot map** lives in the KV bucket `berth_slots` (`slots`), seeded from the
//!   node's slot map file when empty and changed only by compare-and-swap; the bridge
//!   watches it and hands each map to the node (`start`'s `apply_map`).
//!
//! Invariants: no core ever waits on NATS (a core hands work to the bridge with
//! `try_send`; a full channel refuses a QoS 1/2 message and drops a QoS 0 one, counted); a
//! message that came from NATS is routed on this node only and never sent to NATS again
//! (`Broker::publish_from_node`); this module never touches a core's state (it only sends
//! [`ToCore`] messages), so it names neither glommio nor `crate::server`.

mod bridge;
mod forget;
mod inbound;
mod interest;
mod keys;
mod members;
mod replicas;
mod retained;
pub mod slots;
pub mod wire;

pub use forget::{forget_node, Forgotten};

use std::sync::Arc;

use bytestring::ByteString;

use crate::broker::NodeId;
use crate::cluster::SlotMap;
use crate::config::ClusterConfig;
use crate::ownership::CoreId;
use crate::protocol::Publish;
use crate::session::Message;

/// Work the cores send the bridge.
pub enum FromCore {
    /// Core `core` gained (`present`) its first or lost its last subscriber of `filter`
    /// (a plain filter, or `$share/{group}/{filter}` for its first or last member of a
    /// group). `ticket`: a SUBACK (an UNSUBACK) waits for it, answered with
    /// [`ToCore::Acked`] once every live node routes the filter here (no longer routes it
    /// here: `members`), or after a bounded wait.
    Interest {
        core: CoreId,
        filter: ByteString,
        present: bool,
        ticket: Option<u64>,
    },
    /// Core `core` has announced every filter its recovered sessions hold: once every core
    /// has, the node's entries in the bucket are made to match (stale ones deleted).
    Recovered { core: CoreId },
    /// Send `message` to `node`. `ticket`: a QoS 1/2 message, answered with
    /// [`ToCore::Acked`] once JetStream has stored it (or could not). `groups`: the share
    /// groups (`$share/{group}/{filter}`) the node was picked for (`wire` carries them).
    Forward {
        core: CoreId,
        node: NodeId,
        message: Arc<Message>,
        groups: Vec<ByteString>,
        ticket: Option<u64>,
    },
    /// A retained message (or clear, empty) published on this node, for the cluster's
    /// bucket `berth_retained` and so every node's store. `ticket`: as for `Forward`.
    Retain {
        core: CoreId,
        message: Arc<Message>,
        ticket: Option<u64>,
    },
}

/// What the bridge sends a core.
pub enum ToCore {
    /// Node `node` gained (`present`) or lost interest in `filter`.
    Interest {
        node: NodeId,
        filter: ByteString,
        present: bool,
    },
    /// A message another node sent here, to route on this node. `done`: a QoS 1/2
    /// message, answered (`true`: stored) once the cores it went to have it in their logs.
    Inject {
        publisher: ByteString,
        publish: Publish,
        /// The share groups the sending node picked this one for (only those get it here).
        groups: Vec<ByteString>,
        /// Its sequence in this node's stream (QoS 1/2; `None` for QoS 0): a QoS 2
        /// message is taken once per sequence (`Broker::publish_from_node`).
        stream_seq: Option<u64>,
        done: Option<flume::Sender<bool>>,
    },
    /// A retained message (or clear) of the cluster's bucket, for this core's store.
    Retained {
        publisher: ByteString,
        publish: Publish,
    },
    /// The forward with this ticket was stored by JetStream (`ok`) or refused.
    Acked { ticket: u64, ok: bool },
    /// Answered once everything sent before it is applied.
    Barrier(flume::Sender<()>),
}

/// Work a core's channel to the bridge holds before the core refuses more (`try_send`).
pub const TO_BRIDGE_CAPACITY: usize = 1 << 16;
/// Messages the bridge holds for one core before it waits (it may; cores never do).
const TO_CORE_CAPACITY: usize = 4096;

/// The running bridge, as the server holds it.
pub struct Bridge {
    /// Every core's way to the bridge (clone one per core).
    pub to_bridge: flume::Sender<FromCore>,
    /// Each core's inbox, by core index (taken by the cores).
    pub inboxes: Vec<Option<flume::Receiver<ToCore>>>,
    /// Says once the bridge is up: connected, the node's stream and interest in place,
    /// the other nodes' interest applied on every core.
    pub ready: std::sync::mpsc::Receiver<()>,
    /// Set at the same moment as `ready`: for the cores, which must not block on `ready`.
    pub joined: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Puts a slot map of the bucket `berth_slots` in force on the node (from the bridge's thread).
pub type ApplyMap = Box<dyn Fn(Arc<SlotMap>) + Send>;

/// Starts the bridge's thread for a node with `cores` cores; `apply_map` puts each slot map
/// of the bucket `berth_slots` in force. `None` without a node name or without NATS servers.
pub fn start(
    config: &ClusterConfig,
    cores: usize,
    apply_map: ApplyMap,
) -> std::io::Result<Option<Bridge>> {
    let Some(node) = config.node.as_deref().filter(|_| !config.nats.is_empty()) else {
        return Ok(None);
    };
    // Node names may hold `.`, which NATS subjects, stream names and KV keys cannot.
    let node = keys::nats_name(node);
    let (to_bridge, from_cores) = flume::bounded(TO_BRIDGE_CAPACITY);
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| {
            let (tx, rx) = flume::bounded(TO_CORE_CAPACITY);
            (tx, Some(rx))
        })
        .unzip();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let joined = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers = config.nats.clone();
    let replicas = config.nats_replicas;
    let seed_map = config.slot_map.clone();
    let joined_here = joined.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("berth-nats".into())
        .spawn(move || {
            runtime.block_on(bridge::run(bridge::Setup {
                node,
                servers,
                from_cores,
                to_cores: senders,
                ready: ready_tx,
                joined: joined_here,
                replicas,
                slots: seed_map.map(|seed| (seed, apply_map)),
            }))
        })?;
    Ok(Some(Bridge {
        to_bridge,
        inboxes,
        ready,
        joined,
    }))
}

/// A NATS connection for an operator's command (`berth cluster ...`) to `servers`, given up
/// after `wait`; the error names the URL that does not parse or what failed.
async fn operator_client(
    servers: &[String],
    wait: std::time::Duration,
) -> Result<async_nats::Client, String> {
    let addrs = servers
        .iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("`{url}` is not a NATS server URL: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tokio::time::timeout(wait, async_nats::connect(addrs))
        .await
        .map_err(|_| format!("no NATS server answered within {wait:?}"))?
        .map_err(|e| format!("cannot connect to NATS: {e}"))
}
