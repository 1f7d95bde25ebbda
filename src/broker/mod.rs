//! One core's publish/subscribe engine, free of I/O: its sessions, its subscription tree,
//! its copy of the interest table (which other cores subscribe to what) and its copy of
//! the retained messages.
//!
//! Every call takes `now` and returns [`Effects`]: packets for connected clients of this
//! core and messages for other cores. The server executes them.
//!
//! Invariants: a session is touched only by the core that owns its client id; a message
//! crosses to another core only if that core has announced interest in a matching filter,
//! and at most once per core however many of its sessions match; per-publisher order is
//! kept because each core-to-core channel is FIFO and a publish is routed in the order it
//! was read; the interest table and the retained store converge because every change is
//! broadcast to every core.

mod routing;
mod share;
mod sys;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::protocol::Packet;
use crate::server::ShardId;
use crate::session::{Message, Session};
use crate::topic::{SharedFilter, SubscriptionTree};

pub use routing::{Added, SubscribeOutcome};
pub use sys::{is_sys_topic, CoreStats, Stat};

/// A message from one core's engine to another's.
#[derive(Debug, Clone)]
pub enum CoreMsg {
    /// Deliver to the matching sessions of the receiving core.
    Publish(Arc<Message>),
    /// The sending core gained (`present`) or lost interest in a filter.
    Interest {
        from: ShardId,
        filter: ByteString,
        present: bool,
    },
    /// Set (or clear, with an empty payload) a retained message everywhere.
    Retain(Arc<Message>),
    /// Deliver to one member on the receiving core of each of these share groups.
    /// `redirected`: a core that had no member to take it passed it on (it is not again).
    Shared {
        message: Arc<Message>,
        groups: Vec<SharedFilter>,
        redirected: bool,
    },
    /// The sending core now holds `members` members of a share group, `online` of them
    /// with a connected client.
    ShareCount {
        from: ShardId,
        group: SharedFilter,
        members: u32,
        online: u32,
    },
    /// A core's figures for `$SYS`, sent to core 0 every `sys_interval`.
    Stats { from: ShardId, stats: CoreStats },
}

#[derive(Debug, Default)]
pub struct Effects {
    pub to_clients: Vec<(ByteString, Packet)>,
    pub to_cores: Vec<(ShardId, CoreMsg)>,
}

/// The server's session policy.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Cap on Session Expiry; also the expiry of 3.1.1 Clean Session 0 sessions.
    pub max_session_expiry: Duration,
    pub max_queued: usize,
}

pub(crate) struct Slot {
    pub session: Session,
    pub online: bool,
    /// How long the session outlives its connection.
    pub expiry: Duration,
    /// Set while offline: when the session ends.
    pub expires_at: Option<Instant>,
}

/// Per-core counters, summed across cores for $SYS.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub dropped: u64,
}

pub struct Broker {
    pub id: ShardId,
    pub cores: usize,
    policy: SessionPolicy,
    sessions: HashMap<ByteString, Slot>,
    /// Local subscriptions: (client id) -> subscription.
    subscriptions: SubscriptionTree<ByteString, crate::session::Subscription>,
    /// Which other cores subscribe to which filters.
    interest: SubscriptionTree<ShardId, ()>,
    retained: HashMap<ByteString, Arc<Message>>,
    pub counters: Counters,
    /// Shared subscriptions: this core's members and where every group's members are.
    shares: share::Shares,
    /// Core 0: the latest figures of every core, for `$SYS`.
    sys: sys::SysBoard,
}

impl Broker {
    pub fn new(id: ShardId, cores: usize, policy: SessionPolicy) -> Broker {
        Broker {
            id,
            cores,
            policy,
            sessions: HashMap::new(),
            subscriptions: SubscriptionTree::new(),
            interest: SubscriptionTree::new(),
            retained: HashMap::new(),
            counters: Counters::default(),
            shares: share::Shares::new(cores),
            sys: sys::SysBoard::new(cores),
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// A client connected. Returns Session Present and the packets that resume its session.
    /// `expiry` is the requested Session Expiry (3.1.1: 0 for Clean Session 1, the server
    /// maximum otherwise); it is capped by policy and the capped value returned.
    pub fn connect(
        &mut self,
        client_id: &ByteString,
        clean_start: bool,
        expiry: Duration,
        receive_maximum: u16,
        now: Instant,
    ) -> (bool, Duration, Vec<Packet>, Effects) {
        let mut effects = Effects::default();
        let expiry = expiry.min(self.policy.max_session_expiry);
        if clean_start {
            self.end_session(client_id, &mut effects);
        }
        let present = self.sessions.contains_key(client_id);
        let slot = self
            .sessions
            .entry(client_id.clone())
            .or_insert_with(|| Slot {
                session: Session::new(client_id.clone(), self.policy.max_queued),
                online: false,
                expiry,
                expires_at: None,
            });
        slot.online = true;
        slot.expiry = expiry;
        slot.expires_at = None;
        let mut resume = Vec::new();
        slot.session.resume(receive_maximum, now, &mut resume);
        self.share_presence(client_id, true, &mut effects);
        (present, expiry, resume, effects)
    }

    /// The client's connection ended. A session with no expiry ends with it.
    pub fn disconnect(
        &mut self,
        client_id: &ByteString,
        expiry: Option<Duration>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return effects;
        };
        if let Some(expiry) = expiry {
            slot.expiry = expiry.min(self.policy.max_session_expiry);
        }
        if slot.expiry.is_zero() {
            self.end_session(client_id, &mut effects);
        } else {
            slot.online = false;
            slot.expires_at = Some(now + slot.expiry);
            self.share_presence(client_id, false, &mut effects);
        }
        effects
    }

    /// Ends sessions whose expiry has passed while offline.
    pub fn expire(&mut self, now: Instant) -> Effects {
        let mut effects = Effects::default();
        let expired: Vec<ByteString> = self
            .sessions
            .iter()
            .filter(|(_, slot)| !slot.online && slot.expires_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_session(&id, &mut effects);
        }
        effects
    }

    fn end_session(&mut self, client_id: &ByteString, effects: &mut Effects) {
        let Some(slot) = self.sessions.remove(client_id) else {
            return;
        };
        for filter in slot.session.subscriptions.keys() {
            self.remove_subscription(client_id, filter, effects);
        }
    }

    /// Acknowledgements from the client for messages we sent it.
    pub fn on_ack(&mut self, client_id: &ByteString, packet: Packet, now: Instant) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return effects;
        };
        let mut out = Vec::new();
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                slot.session.on_complete(ack.packet_id, now, &mut out)
            }
            Packet::PubRec(ack) => {
                slot.session
                    .on_pub_rec(ack.packet_id, ack.reason_code, now, &mut out)
            }
            Packet::PubRel(ack) => out.push(slot.session.on_pub_rel(ack.packet_id)),
            _ => {}
        }
        effects
            .to_clients
            .extend(out.into_iter().map(|p| (client_id.clone(), p)));
        effects
    }

    /// Whether an inbound QoS 2 PUBLISH is new (route it) or a retransmission.
    pub fn receive_qos2(
        &mut self,
        client_id: &ByteString,
        packet_id: crate::protocol::PacketId,
    ) -> bool {
        self.sessions
            .get_mut(client_id)
            .is_none_or(|slot| slot.session.receive_qos2(packet_id))
    }

    pub fn awaiting_release(&self, client_id: &ByteString) -> usize {
        self.sessions
            .get(client_id)
            .map_or(0, |slot| slot.session.awaiting_release())
    }
}
