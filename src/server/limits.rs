//! One core's side of the abuse limits (`config::limits`): who is let in, where each
//! check runs, and what each refusal counts.
//!
//! - **At accept**, before anything is read (and so before a TLS handshake, when there is
//!   one): `max_connection_rate`, a token bucket per core admitting its share (rate /
//!   cores, with one second's worth of burst), and `max_connections`. Over either, the
//!   socket is closed at once, as Mosquitto does for `max_connections`: nothing has been
//!   read, so there is no protocol version to answer in. The connection count is one atomic
//!   shared by every core, touched once at accept and once at close, never per message.
//!   The [`ConnectionSlot`] a connection holds travels with it to its owner core and gives
//!   the count back when dropped.
//! - **At CONNECT, on the accepting core**: `max_clientid_len`, the ban file (an
//!   immutable list every core reads, replaced whole on SIGHUP) and, in a cluster, the
//!   client id's home: a CONNECT whose slot another node owns is refused before it is
//!   authenticated or handed to its core (the home node does both), and so is a client
//!   without an id on a node that owns no slot (the slot map, replaced whole on SIGHUP).
//! - **At CONNECT, on the owner core**: flapping detection. Client ids belong to one core,
//!   so their disconnect counts live there and nothing is shared.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::auth::{BanList, Flapping, TokenBucket};
use crate::broker::{CoreStats, Stat};
use crate::cluster::{Cluster, Home};
use crate::config::Limits;
use crate::protocol::Connect;
use crate::session::admission::NotAdmitted;
use crate::session::link::LimitHit;

/// The ban list in force, read by every core at each CONNECT and replaced whole on SIGHUP.
pub type SharedBans = Arc<RwLock<Arc<BanList>>>;

/// This node's cluster view (`None`: a single broker), read at each CONNECT and replaced
/// whole on SIGHUP.
pub type SharedCluster = Arc<RwLock<Option<Arc<Cluster>>>>;

/// What the cores' limits share.
#[derive(Clone, Default)]
pub struct SharedLimits {
    pub bans: SharedBans,
    /// Open connections, all cores together (only counted under `max_connections`).
    pub connections: Arc<AtomicUsize>,
    pub cluster: SharedCluster,
}

impl SharedLimits {
    pub fn new(limits: &Limits, cluster: Option<Cluster>) -> SharedLimits {
        SharedLimits {
            bans: Arc::new(RwLock::new(limits.bans.clone())),
            connections: Arc::new(AtomicUsize::new(0)),
            cluster: Arc::new(RwLock::new(cluster.map(Arc::new))),
        }
    }

    /// Puts a reloaded slot map in force.
    pub fn replace_cluster(&self, cluster: Cluster) {
        if let Ok(mut current) = self.cluster.write() {
            *current = Some(Arc::new(cluster));
        }
    }

    /// The cluster view in force.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        match self.cluster.read() {
            Ok(cluster) => cluster.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a reloaded ban list in force.
    pub fn replace_bans(&self, bans: Arc<BanList>) {
        if let Ok(mut current) = self.bans.write() {
            *current = bans;
        }
    }
}

/// One open connection's place under `max_connections`; dropping it frees the place.
pub struct ConnectionSlot(Option<Arc<AtomicUsize>>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Refusals counted on this core, summed into `$SYS` with the others.
#[derive(Debug, Default)]
pub struct LimitStats {
    max_connections: Cell<u64>,
    connection_rate: Cell<u64>,
    client_id_length: Cell<u64>,
    banned: Cell<u64>,
    flapping: Cell<u64>,
    flapping_bans: Cell<u64>,
    publish_rate: Cell<u64>,
    publish_too_deep: Cell<u64>,
    filters_too_deep: Cell<u64>,
    other_node: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get().wrapping_add(1));
}

pub struct CoreLimits {
    max_connections: Option<usize>,
    max_clientid_len: usize,
    /// One bucket per listener (in the configured order), `None` where it has no rate.
    connection_rate: Vec<Option<RefCell<TokenBucket>>>,
    flapping: Option<RefCell<Flapping>>,
    shared: SharedLimits,
    pub stats: LimitStats,
}

impl CoreLimits {
    /// `listener_rates`: each listener's `max_connection_rate` (0: no limit).
    pub fn new(
        limits: &Limits,
        listener_rates: &[u32],
        cores: usize,
        shared: SharedLimits,
        now: Instant,
    ) -> CoreLimits {
        let bucket = |rate: u32| {
            (rate > 0).then(|| {
                let share = f64::from(rate) / cores.max(1) as f64;
                RefCell::new(TokenBucket::new(share, share, now))
            })
        };
        let connection_rate = listener_rates.iter().map(|&rate| bucket(rate)).collect();
        CoreLimits {
            max_connections: limits.max_connections,
            max_clientid_len: limits.max_clientid_len,
            connection_rate,
            flapping: limits.flapping.map(|p| RefCell::new(Flapping::new(p))),
            shared,
            stats: LimitStats::default(),
        }
    }

    /// A socket just accepted at `now` on listener `listener`: its slot, or `None` when it
    /// must be closed.
    pub fn admit(&self, now: Instant, listener: usize) -> Option<ConnectionSlot> {
        if let Some(Some(bucket)) = self.connection_rate.get(listener) {
            if !bucket.borrow_mut().take(now) {
                bump(&self.stats.connection_rate);
                return None;
            }
        }
        let Some(max) = self.max_connections else {
            return Some(ConnectionSlot(None));
        };
        let count = &self.shared.connections;
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            bump(&self.stats.max_connections);
            return None;
        }
        Some(ConnectionSlot(Some(count.clone())))
    }

    /// The checks of a CONNECT on the accepting core: client id length, then bans.
    pub fn check_connect(&self, connect: &Connect, peer: SocketAddr) -> Option<NotAdmitted> {
        let len = connect.client_id.len();
        if len > self.max_clientid_len {
            bump(&self.stats.client_id_length);
            return Some(NotAdmitted::ClientIdTooLong {
                len,
                max: self.max_clientid_len,
            });
        }
        let bans = match self.shared.bans.read() {
            Ok(bans) => bans.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(banned) = bans.check(&connect.client_id, connect.username.as_deref(), peer.ip())
        {
            bump(&self.stats.banned);
            return Some(NotAdmitted::Banned(banned.reason()));
        }
        let why = self.elsewhere(&connect.client_id)?;
        bump(&self.stats.other_node);
        Some(why)
    }

    /// Where to send a client whose id (empty: one to be assigned) does not live on this
    /// node; `None` when it does, or when there is no cluster.
    fn elsewhere(&self, client_id: &str) -> Option<NotAdmitted> {
        let cluster = self.shared.cluster()?;
        if client_id.is_empty() {
            if cluster.owns_slots() {
                return None;
            }
            let node = cluster.any_home()?;
            return Some(NotAdmitted::OtherNode {
                slot: None,
                node: node.name.clone(),
                address: node.address.clone(),
            });
        }
        match cluster.home_of(client_id) {
            Home::Here => None,
            Home::Elsewhere { slot, node } => Some(NotAdmitted::OtherNode {
                slot: Some(slot.0),
                node: node.name.clone(),
                address: node.address.clone(),
            }),
        }
    }

    /// Whether an id this node assigns may be `client_id`: true unless another node owns
    /// its slot. A node that owns no slot takes every id (it refuses clients without an
    /// id at CONNECT; this only happens when a reload took its last slot in between).
    pub fn assignable(&self) -> impl Fn(&str) -> bool {
        let cluster = self.shared.cluster().filter(|c| c.owns_slots());
        move |id| match &cluster {
            Some(cluster) => cluster.home_of(id) == Home::Here,
            None => true,
        }
    }

    /// Whether flapping detection bans `client_id` at `now` (on its owner core).
    pub fn check_flapping(&self, client_id: &str, now: Instant) -> Option<NotAdmitted> {
        let until = self
            .flapping
            .as_ref()?
            .borrow()
            .banned_until(client_id, now)?;
        bump(&self.stats.flapping);
        let left = until.saturating_duration_since(now);
        Some(NotAdmitted::Flapping {
            secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        })
    }

    /// A connection of `client_id` ended at `now` (on its owner core).
    pub fn disconnected(&self, client_id: &str, now: Instant) {
        if let Some(flapping) = &self.flapping {
            if flapping.borrow_mut().disconnected(client_id, now) {
                bump(&self.stats.flapping_bans);
                tracing::warn!(
                    client_id,
                    "client id banned for flapping (too many disconnects)"
                );
            }
        }
    }

    /// Counts a limit a connection's link ran into.
    pub fn count(&self, hit: LimitHit) {
        bump(match hit {
            LimitHit::PublishRate => &self.stats.publish_rate,
            LimitHit::TopicLevels => &self.stats.publish_too_deep,
            LimitHit::FilterLevels => &self.stats.filters_too_deep,
        });
    }

    /// Fills in this core's limit figures of a `$SYS` snapshot.
    pub fn fill(&self, stats: &mut CoreStats) {
        let s = &self.stats;
        for (stat, counter) in [
            (Stat::RefusedMaxConnections, &s.max_connections),
            (Stat::RefusedConnectionRate, &s.connection_rate),
            (Stat::RefusedClientIdLength, &s.client_id_length),
            (Stat::RefusedBanned, &s.banned),
            (Stat::RefusedFlapping, &s.flapping),
            (Stat::FlappingBans, &s.flapping_bans),
            (Stat::PublishRateLimited, &s.publish_rate),
            (Stat::PublishTooDeep, &s.publish_too_deep),
            (Stat::SubscriptionsTooDeep, &s.filters_too_deep),
            (Stat::RefusedOtherNode, &s.other_node),
        ] {
            stats.set(stat, counter.get());
        }
    }
}
