//! One core's share of the broker: its listener, its connections (keyed by client id, so
//! a takeover is a local affair) and its links to the other cores.
//!
//! Everything here is owned by one executor and reached through `Rc`; nothing is shared
//! between threads except the messages that cross cores ([`CoreMail`]).

use crate::hash::FastMap;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;

use super::egress::Egress;
use super::gate::{Refusals, StoreGate};
pub use super::io_stats::IoStats;
use super::limits::{ConnectionSlot, CoreLimits, SharedLimits};
use super::outbox::Outbox;
use super::transport::TransportState;
use crate::auth::{Authenticator, CheckCache};
use crate::broker::{Broker, CoreMsg, Effects, SessionPolicy};
use crate::config::{Config, Settings};
use crate::ownership::CoreId;
use crate::protocol::Connect;
use crate::session::ConnectPolicy;

/// Who may connect and what they may do, shared by every core and replaced whole on SIGHUP.
pub type SharedAuth = Arc<super::auth_cell::AuthCell>;

/// A message from one core to another.
pub enum CoreMail {
    /// A connection whose client id this core owns, accepted by another core.
    Handoff(Handoff),
    /// Routing work for the receiving core's engine, batched.
    Core(Vec<CoreMsg>),
    /// Asks for a [`CoreMail::Synced`] once everything sent before it is processed.
    Sync { from: CoreId, token: u64 },
    Synced {
        token: u64,
        from: CoreId,
        /// Messages the replying core has refused to store so far (see `gate::Refusals`).
        refused: u64,
    },
}

pub struct Handoff {
    pub fd: OwnedFd,
    /// What the transport keeps above the socket (`transport::TransportState`).
    pub transport: TransportState,
    pub connect: Box<Connect>,
    /// Bytes the client sent after its CONNECT, already read by the accepting core.
    pub rest: BytesMut,
    pub accepted_on: CoreId,
    pub peer: SocketAddr,
    /// Its place under `max_connections`, given back when the connection ends.
    pub slot: ConnectionSlot,
}

/// An order for a running connection from outside its task.
pub enum Control {
    /// Another connection took the client id (a takeover, MQTT 5.0 3.1.4). Dropping
    /// `done` tells the new connection that this one has stopped.
    TakenOver { done: LocalSender<()> },
    /// The broker is shutting down.
    Shutdown,
    /// The admin API disconnects the client (v5 DISCONNECT 0x98), publishing its will or
    /// not, and discards its session or keeps it. Dropping `done` says it has stopped.
    Kick {
        publish_will: bool,
        discard: bool,
        done: LocalSender<()>,
    },
}

/// What the admin API shows of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub protocol: crate::protocol::ProtocolVersion,
    /// Unix milliseconds.
    pub connected_at_ms: u64,
}

struct Registered {
    serial: u64,
    control: LocalSender<Control>,
    /// Set once the connection has queued its CONNACK; packets for the client go here.
    outbox: Option<Rc<Outbox>>,
    info: Option<ConnInfo>,
}

pub struct Core {
    pub id: CoreId,
    pub cores: usize,
    pub config: Config,
    /// Its `max_session_expiry` changes at run time (admin API settings), like
    /// `publish_rate`; `config` keeps the values the broker started with.
    pub policy: RefCell<ConnectPolicy>,
    /// `max_publish_rate` for connections made from now on.
    pub publish_rate: Cell<u32>,
    /// Senders to the other cores, indexed by core; `None` at our own index: the primary
    /// mesh and the relay mesh (see `mesh`).
    peers: Vec<Option<ConnectedSender<CoreMail>>>,
    relays: Vec<Option<ConnectedSender<CoreMail>>>,
    /// By core: whether this core passed a message on to it since the last relay sync.
    relayed: RefCell<Vec<bool>>,
    connections: RefCell<FastMap<ByteString, Registered>>,
    next_serial: Cell<u64>,
    pub stats: IoStats,
    /// The publish/subscribe engine. Borrowed only between awaits, never across one.
    pub broker: RefCell<Broker>,
    /// Outstanding [`Core::sync_peers`] calls: token -> (replies missing, waker channel).
    syncs: RefCell<HashMap<u64, (usize, LocalSender<()>)>>,
    /// Whether new QoS 1/2 messages are taken (shared by every core).
    pub gate: Arc<StoreGate>,
    /// What every core has refused to store so far, as this core last heard.
    refusals: RefCell<Refusals>,
    /// Whether this core's writers are behind, so that its readers wait (`egress`).
    pub egress: Rc<Egress>,
    auth: SharedAuth,
    /// The generation of `auth` whose ACL the broker holds.
    auth_seen: Cell<u64>,
    /// Passwords that checked lately on this core (`auth::CheckCache`).
    pub passed: RefCell<CheckCache>,
    /// Connection rate and count, bans, flapping (`limits`).
    pub limits: CoreLimits,
    /// The link to the cluster bridge (`nodes`); `None` without a cluster.
    pub nodes: Option<super::nodes::NodeLink>,
}

impl Core {
    /// This core's figures now: the broker's, the connections' I/O and the limits' (what
    /// `$SYS` and `/metrics` show).
    pub fn figures(&self) -> crate::broker::CoreStats {
        let mut stats = self.broker.borrow().core_stats();
        self.stats.fill(&mut stats);
        self.limits.fill(&mut stats);
        stats
    }

    pub fn new(
        id: CoreId,
        config: Config,
        peers: Vec<Option<ConnectedSender<CoreMail>>>,
        relays: Vec<Option<ConnectedSender<CoreMail>>>,
        broker: Broker,
        gate: Arc<StoreGate>,
        auth: SharedAuth,
    ) -> Core {
        let policy = ConnectPolicy {
            max_packet_size: config.max_packet_size,
            server_keep_alive: config.server_keep_alive,
            max_keepalive: config.max_keepalive,
            receive_maximum: config.receive_maximum,
            topic_alias_maximum: config.topic_alias_maximum,
            max_session_expiry: config.max_session_expiry,
            max_inflight_messages: config.max_inflight_messages,
            connack_debug_properties: config.connack_debug_properties,
            node: config.cluster.node.as_deref().map(ByteString::from),
        };
        let peers_len = peers.len();
        let mut broker = broker;
        let auth_seen = auth.generation();
        broker.set_acl(auth.get().acl.clone());
        let limits = CoreLimits::new(
            &config.limits,
            &config.connection_rates(),
            peers_len,
            SharedLimits::default(),
            std::time::Instant::now(),
        );
        Core {
            id,
            cores: peers_len,
            broker: RefCell::new(broker),
            publish_rate: Cell::new(config.limits.max_publish_rate),
            config,
            policy: RefCell::new(policy),
            peers,
            relays,
            relayed: RefCell::new(vec![false; peers_len]),
            connections: RefCell::new(FastMap::default()),
            next_serial: Cell::new(0),
            stats: IoStats::default(),
            syncs: RefCell::new(HashMap::new()),
            gate,
            refusals: RefCell::new(Refusals::new(peers_len)),
            egress: Egress::new(),
            auth,
            auth_seen: Cell::new(auth_seen),
            passed: RefCell::new(CheckCache::new()),
            limits,
            nodes: None,
        }
    }

    /// The same core, one node of a cluster (`nodes`).
    pub fn with_nodes(mut self, link: Option<super::nodes::NodeLink>) -> Core {
        if link.is_some() {
            self.broker.borrow_mut().join_cluster();
        }
        self.nodes = link;
        self
    }

    /// The same core, its limits sharing `shared` with the other cores' (a core made
    /// without shares only its own).
    pub fn with_limits(mut self, shared: SharedLimits) -> Core {
        self.limits = CoreLimits::new(
            &self.config.limits,
            &self.config.connection_rates(),
            self.cores,
            shared,
            std::time::Instant::now(),
        );
        self
    }

    /// Who may connect, as of now.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.get()
    }

    /// Gives the broker the ACL of a reload, once this core sees it.
    pub fn refresh_acl(&self) {
        let generation = self.auth.generation();
        if generation != self.auth_seen.get() {
            self.auth_seen.set(generation);
            let acl = self.auth.get().acl.clone();
            self.broker.borrow_mut().set_acl(acl);
        }
    }

    /// Sends to another core, waiting while its channel is full (back-pressure). Fails
    /// only when that core has stopped; the message is dropped then.
    pub async fn send_to(&self, core: CoreId, msg: CoreMail) -> Result<(), ()> {
        match self.peers.get(core.0).and_then(Option::as_ref) {
            Some(sender) => sender.send(msg).await.map_err(drop),
            None => Err(()),
        }
    }

    /// Makes `client_id` point at a new connection, returning its serial, its control
    /// receiver, and — when an earlier connection held the id — a receiver that yields
    /// `None` once that connection has stopped.
    pub fn register(
        &self,
        client_id: &ByteString,
    ) -> (
        u64,
        local_channel::LocalReceiver<Control>,
        Option<local_channel::LocalReceiver<()>>,
    ) {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let (control, control_rx) = local_channel::new_bounded(4);
        let previous = self.connections.borrow_mut().insert(
            client_id.clone(),
            Registered {
                serial,
                control,
                outbox: None,
                info: None,
            },
        );
        let stopped = previous.map(|old| {
            let (done, done_rx) = local_channel::new_bounded(1);
            // The old connection may have ended already: then its receiver is gone and
            // `done` is dropped right here, which is just as good.
            let _ = old.control.try_send(Control::TakenOver { done });
            done_rx
        });
        (serial, control_rx, stopped)
    }

    /// Forgets a connection, unless a newer one has taken its client id since.
    pub fn unregister(&self, client_id: &ByteString, serial: u64) {
        let mut connections = self.connections.borrow_mut();
        if connections
            .get(client_id)
            .is_some_and(|r| r.serial == serial)
        {
            connections.remove(client_id);
        }
    }

    /// Whether `serial` is still the connection that holds `client_id`.
    pub fn is_current(&self, client_id: &ByteString, serial: u64) -> bool {
        self.connections
            .borrow()
            .get(client_id)
            .is_some_and(|r| r.serial == serial)
    }

    /// Records what the admin API shows of connection `serial`.
    pub fn describe(&self, client_id: &ByteString, serial: u64, info: ConnInfo) {
        if let Some(registered) = self.connections.borrow_mut().get_mut(client_id) {
            if registered.serial == serial {
                registered.info = Some(info);
            }
        }
    }

    pub fn connection_info(&self, client_id: &str) -> Option<ConnInfo> {
        self.connections.borrow().get(client_id)?.info.clone()
    }

    /// Tells `client_id`'s connection to end (see [`Control::Kick`]); the receiver yields
    /// `None` once it has stopped. `None` when it has no connection.
    pub fn kick(
        &self,
        client_id: &str,
        publish_will: bool,
        discard: bool,
    ) -> Option<local_channel::LocalReceiver<()>> {
        let connections = self.connections.borrow();
        let registered = connections.get(client_id)?;
        let (done, done_rx) = local_channel::new_bounded(1);
        let kick = Control::Kick {
            publish_will,
            discard,
            done,
        };
        registered.control.try_send(kick).ok()?;
        Some(done_rx)
    }

    pub fn attach_outbox(&self, client_id: &ByteString, serial: u64, outbox: Rc<Outbox>) {
        if let Some(registered) = self.connections.borrow_mut().get_mut(client_id) {
            if registered.serial == serial {
                registered.outbox = Some(outbox);
            }
        }
    }

    pub fn detach_outbox(&self, client_id: &ByteString, serial: u64) {
        if let Some(registered) = self.connections.borrow_mut().get_mut(client_id) {
            if registered.serial == serial {
                registered.outbox = None;
            }
        }
    }

    /// Carries out what the engine decided of its own accord (a client's packet, a timer,
    /// start-up): packets to this core's clients, batches to other cores on the primary
    /// mesh (one channel message per core, in order), work for other nodes to the cluster
    /// bridge. Returns what an acknowledgement of it must wait for from other nodes
    /// ([`Core::sync_nodes_for`]; nothing without a cluster or a QoS 1/2 message for one).
    pub async fn apply(&self, mut effects: Effects) -> super::nodes::NodesOwed {
        let mut owed = super::nodes::NodesOwed::default();
        if !effects.to_nodes.is_empty()
            || !effects.node_interest.is_empty()
            || !effects.retained_to_nodes.is_empty()
        {
            let to_nodes = std::mem::take(&mut effects.to_nodes);
            owed = self.to_nodes(to_nodes, std::mem::take(&mut effects.node_interest));
            owed = owed.max(self.retained_to_nodes(std::mem::take(&mut effects.retained_to_nodes)));
        }
        let batches = self.deliver_clients_and_batch(effects);
        for (core, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                let _ = self.send_to(CoreId(core), CoreMail::Core(batch)).await;
            }
        }
        owed
    }

    /// Carries out what the engine decided while handling a message from another core:
    /// as [`Core::apply`], but what goes to other cores takes the relay mesh (`mesh`).
    pub async fn relay(&self, effects: Effects) {
        let batches = self.deliver_clients_and_batch(effects);
        for (core, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            if let Some(sender) = self.relays.get(core).and_then(Option::as_ref) {
                self.relayed.borrow_mut()[core] = true;
                let _ = sender.send(CoreMail::Core(batch)).await;
            }
        }
    }

    /// Carries out what the engine decided while handling a message that came through the
    /// relay mesh: packets to this core's clients only. The engine passes a message on at
    /// most once, so there is nothing for other cores; were there, it would be dropped and
    /// logged rather than sent, since waiting here could deadlock (`mesh`).
    pub fn deliver_here(&self, effects: Effects) {
        let batches = self.deliver_clients_and_batch(effects);
        let dropped: usize = batches.iter().map(Vec::len).sum();
        if dropped > 0 {
            debug_assert!(false, "a relayed message asked to go on to another core");
            tracing::error!(
                messages = dropped,
                "messages a relayed message would pass on again were dropped"
            );
        }
    }

    /// Queues `effects.to_clients` on the outboxes of connected clients, and returns
    /// `effects.to_cores` batched by core.
    fn deliver_clients_and_batch(&self, effects: Effects) -> Vec<Vec<CoreMsg>> {
        if !effects.to_clients.is_empty() {
            let connections = self.connections.borrow();
            for (client_id, packet) in effects.to_clients {
                if let Some(outbox) = connections.get(&client_id).and_then(|r| r.outbox.as_ref()) {
                    if !outbox.send(packet) {
                        self.stats.outbox_dropped(self.egress.behind());
                    }
                }
            }
        }
        let mut batches: Vec<Vec<CoreMsg>> = (0..self.cores).map(|_| Vec::new()).collect();
        for (core, msg) in effects.to_cores {
            if let Some(batch) = batches.get_mut(core.0) {
                batch.push(msg);
            }
        }
        batches
    }

    /// The cores this core passed messages on to since the last call, forgotten.
    pub fn take_relayed(&self) -> Vec<CoreId> {
        let mut relayed = self.relayed.borrow_mut();
        let cores = (0..relayed.len())
            .filter(|&c| relayed[c])
            .map(CoreId)
            .collect();
        relayed.iter_mut().for_each(|r| *r = false);
        cores
    }

    /// Returns once `cores` have processed (and made durable) everything this core passed
    /// on to them through the relay mesh before the call.
    pub async fn sync_relays(&self, cores: &[CoreId]) {
        self.sync_over(cores, &self.relays).await;
    }

    /// Returns once every other core has processed everything this core sent it before
    /// the call: a SUBACK waits for this so that a publish which follows it on any core
    /// already knows about the new subscription.
    pub async fn sync_peers(&self) {
        let others: Vec<CoreId> = (0..self.cores)
            .map(CoreId)
            .filter(|&c| c != self.id)
            .collect();
        self.sync_over(&others, &self.peers).await;
    }

    /// Sends a sync to each of `cores` through `mesh` and returns once all have answered.
    async fn sync_over(&self, cores: &[CoreId], mesh: &[Option<ConnectedSender<CoreMail>>]) {
        if cores.is_empty() {
            return;
        }
        let token = self.next_serial.get();
        self.next_serial.set(token + 1);
        let (done, done_rx) = local_channel::new_bounded(1);
        self.syncs.borrow_mut().insert(token, (cores.len(), done));
        for &core in cores {
            let sync = CoreMail::Sync {
                from: self.id,
                token,
            };
            let sent = match mesh.get(core.0).and_then(Option::as_ref) {
                Some(sender) => sender.send(sync).await.is_ok(),
                None => false,
            };
            if !sent {
                self.synced(token);
            }
        }
        // `None` once the last reply dropped the sender.
        let _ = done_rx.recv().await;
    }

    /// How many messages every core has refused to store so far, as far as this core
    /// knows now (see `gate::Refusals`).
    pub fn refusals(&self) -> Vec<u64> {
        self.hear_own_refusals();
        self.refusals.borrow().snapshot()
    }

    /// Whether any core refused to store a message since `before` (a [`Core::refusals`]).
    pub fn refused_since(&self, before: &[u64]) -> bool {
        self.hear_own_refusals();
        self.refusals.borrow().rose_since(before)
    }

    fn hear_own_refusals(&self) {
        let own = self.broker.borrow().counters.refused();
        self.refusals.borrow_mut().heard(self.id.0, own);
    }

    /// A core answered a sync, having refused `refused` messages so far.
    pub fn synced_by(&self, token: u64, from: CoreId, refused: u64) {
        self.refusals.borrow_mut().heard(from.0, refused);
        self.synced(token);
    }

    /// A core answered a sync.
    pub fn synced(&self, token: u64) {
        let mut syncs = self.syncs.borrow_mut();
        if let Some((missing, _)) = syncs.get_mut(&token) {
            *missing -= 1;
            if *missing == 0 {
                syncs.remove(&token);
            }
        }
    }

    pub fn connected(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Tells every connection to close for shutdown.
    pub fn shut_down_connections(&self) {
        for registered in self.connections.borrow().values() {
            let _ = registered.control.try_send(Control::Shutdown);
        }
    }
}

/// The broker's session policy for one of `cores` cores.
pub fn session_policy(config: &Config, cores: usize) -> SessionPolicy {
    SessionPolicy {
        max_session_expiry: config.max_session_expiry,
        limits: Settings::of(config).queue_limits(),
        // Each core holds its share; client ids spread evenly over cores by hash.
        max_sessions: match config.max_sessions {
            0 => usize::MAX,
            n => n.div_ceil(cores.max(1)),
        },
        max_subscriptions: match config.max_subscriptions {
            0 => usize::MAX,
            n => n,
        },
    }
}
