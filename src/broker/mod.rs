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
//!
//! The `Broker` is split into parts, each in a file of its own that states its invariants:
//! `sessions.rs` (connect, disconnect, expiry), `subscribe.rs` and `publish.rs` (the
//! packets and delivery), `interest.rs` (the interest table), `retained.rs`, `share.rs`
//! (shared subscriptions), `wills.rs`, `exactly_once.rs` (inbound QoS 2 across a crash),
//! `persist.rs` with `persist/checkpoints.rs` (checkpoints), `recovery.rs`, `sys.rs`.

mod access;
mod exactly_once;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod interest;
pub mod journal;
pub(crate) mod messages;
mod nodes;
mod outgoing;
mod persist;
mod publish;
mod recovery;
mod retained;
mod sessions;
mod share;
mod subscribe;
mod sys;
mod sys_load;
mod wills;

use crate::hash::FastMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;

use crate::ownership::CoreId;
use crate::protocol::{Packet, PacketId};
use crate::session::state::{Change, QueueLimits};
use crate::session::{Message, Session};
use crate::topic::{SharedFilter, SubscriptionTree};

pub use inspect::{HeldMessage, SessionQuery, SessionView};
use journal::{Journal, Record};
pub use messages::WallClock;
use messages::{Lookup, MessageTable};
pub use nodes::{NodeId, STREAM_ORIGIN_CORE};
pub use outgoing::{Outgoing, SharedPublish};
pub use persist::{CheckpointLimits, CheckpointReport};
pub use recovery::{Rebuild, Recovered};
pub use subscribe::{Added, SubscribeOutcome};
pub use sys::{is_sys_topic, Combine, CoreStats, Stat};

/// A message from one core's engine to another's.
#[derive(Debug, Clone)]
pub enum CoreMsg {
    /// Deliver to the matching sessions of the receiving core.
    Publish(Arc<Message>),
    /// The sending core gained (`present`) or lost interest in a filter.
    Interest {
        from: CoreId,
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
        from: CoreId,
        group: SharedFilter,
        members: u32,
        online: u32,
    },
    /// A core's figures for `$SYS`, sent to core 0 every `sys_interval`. Boxed: 320 bytes
    /// inline would make every message on the mesh that large.
    Stats { from: CoreId, stats: Box<CoreStats> },
}

#[derive(Debug, Default)]
pub struct Effects {
    pub to_clients: Vec<(ByteString, Outgoing)>,
    pub to_cores: Vec<(CoreId, CoreMsg)>,
    /// Messages for other nodes of a cluster (`nodes`), each with the share groups
    /// (`$share/{group}/{filter}`) the node was picked for; empty without a cluster.
    pub to_nodes: Vec<(NodeId, Arc<Message>, Vec<ByteString>)>,
    /// Retained messages (and clears) published on this node, for every node's retained
    /// store (`nodes`); empty without a cluster.
    pub retained_to_nodes: Vec<Arc<Message>>,
    /// This core gained (`true`) or lost its first or last subscriber of a plain filter:
    /// what the node announces to the cluster (the server drops it without one).
    pub node_interest: Vec<(ByteString, bool)>,
}

impl Effects {
    /// Adds everything `other` holds, after what this holds.
    pub fn extend(&mut self, other: Effects) {
        self.to_clients.extend(other.to_clients);
        self.to_cores.extend(other.to_cores);
        self.to_nodes.extend(other.to_nodes);
        self.retained_to_nodes.extend(other.retained_to_nodes);
        self.node_interest.extend(other.node_interest);
    }

    pub fn is_empty(&self) -> bool {
        self.to_clients.is_empty()
            && self.to_cores.is_empty()
            && self.to_nodes.is_empty()
            && self.retained_to_nodes.is_empty()
            && self.node_interest.is_empty()
    }
}

/// The server's session policy.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Cap on Session Expiry; also the expiry of 3.1.1 Clean Session 0 sessions.
    pub max_session_expiry: Duration,
    pub limits: QueueLimits,
    /// Sessions this core may hold (its share of the server's maximum).
    pub max_sessions: usize,
    /// Subscriptions one session may hold (plain and shared together); a SUBSCRIBE's
    /// filters beyond it are refused with 0x97 Quota exceeded.
    pub max_subscriptions: usize,
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy {
            max_session_expiry: Duration::from_secs(7200),
            limits: QueueLimits::default(),
            max_sessions: usize::MAX,
            max_subscriptions: usize::MAX,
        }
    }
}

pub(crate) struct Slot {
    pub session: Session,
    pub online: bool,
    /// How long the session outlives its connection.
    pub expiry: Duration,
    /// Set while offline: when the session ends.
    pub expires_at: Option<Instant>,
    /// The session's number in this core's log; `None` for a session that is never
    /// journaled (no expiry).
    pub sid: Option<u64>,
    /// The mark of the checkpoint that last looked at it (`persist::Run::mark`).
    pub checkpoint: u32,
    /// The username of the connection that last took the session (`None`: it gave none):
    /// whose ACL rules its deliveries follow, and who may take it over.
    pub username: Option<Box<str>>,
}

/// Per-core counters, summed across cores for $SYS.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub messages_received: u64,
    pub messages_sent: u64,
    /// Deliveries lost for a recipient that matched (`$SYS publish/messages/dropped`, with
    /// the connections' own): the queue overflowed, or the log had no room for an offline
    /// session's QoS 0.
    pub dropped: u64,
    /// Of `dropped`, those the `max_queued_messages` / `max_queued_bytes` overflow policy
    /// dropped (the oldest) or refused (the newest).
    pub dropped_queue_full: u64,
    /// Of `dropped`, QoS 0 an offline session could not keep: the log was full.
    pub dropped_disk_full: u64,
    /// Deliveries whose Message Expiry Interval passed before they were sent (on arrival
    /// or while queued).
    pub expired: u64,
    /// Client PUBLISHes (not retained) that matched no subscription on any core.
    pub no_subscribers: u64,
    /// PUBLISHes the ACL refused (part of `acl_refused`).
    pub acl_publish_refused: u64,
    /// Offline sessions ended because their expiry interval passed.
    pub sessions_expired: u64,
    /// Records that could not be written to the log (disk full, I/O error).
    pub journal_errors: u64,
    /// Messages this core did not store because its log could not take them (disk full):
    /// never acknowledged as stored. Other cores read it through `Synced` to learn whether
    /// a batch they routed here was refused (see `server::gate`).
    pub store_refused: u64,
    /// QoS 1/2 messages for another node of a cluster that its stream did not take (or
    /// the bridge's channel was full): their publishers are refused as for `store_refused`.
    pub forward_refused: u64,
    pub checkpoints: u64,
    /// Inbound QoS 2 messages routed again by a recovery and skipped: taken before the crash.
    pub duplicates_skipped: u64,
    /// Filters of a SUBSCRIBE refused because the session held `max_subscriptions`.
    pub subscriptions_refused: u64,
    /// Deliveries the ACL refused: a recipient that may not read the topic.
    pub acl_denied: u64,
    /// SUBSCRIBE filters and PUBLISHes the ACL refused.
    pub acl_refused: u64,
}

impl Counters {
    /// Messages this core refused to take so far, for whatever reason: what a
    /// connection's acknowledgements compare before and after their batch (`server::gate`).
    pub fn refused(&self) -> u64 {
        self.store_refused + self.forward_refused
    }
}

pub struct Broker {
    pub id: CoreId,
    pub cores: usize,
    policy: SessionPolicy,
    /// Boxed: an idle session should cost its size, not its size over the map's load factor.
    sessions: FastMap<ByteString, Box<Slot>>,
    /// Local subscriptions: (client id) -> subscription.
    subscriptions: SubscriptionTree<ByteString, crate::session::Subscription>,
    /// Which other cores subscribe to which filters.
    interest: interest::Interest,
    /// Which other nodes of a cluster subscribe to which filters (`nodes`).
    nodes: nodes::RemoteInterest,
    /// This core's replica of the retained messages.
    retained: retained::Retained,
    pub counters: Counters,
    messages: MessageTable,
    journal: Box<dyn Journal>,
    clock: WallClock,
    next_sid: u64,
    /// Offline sessions by expiry time; entries whose session came back or changed are
    /// skipped when they come up.
    expiries: BinaryHeap<Reverse<(Instant, ByteString)>>,
    /// The running checkpoint, the next one's id, and an ABORT owed.
    checkpoints: persist::Checkpoints,
    /// Reused encoding buffer for records.
    scratch: BytesMut,
    /// Wills waiting for their delay or their session's end, and those in the log.
    wills: wills::Wills,
    /// Inbound QoS 2 messages not yet confirmed, and the origins this core took.
    exactly_once: exactly_once::ExactlyOnce,
    /// `deliver_local`'s scratch map (client -> strongest subscription, identifiers).
    targets: FastMap<ByteString, (crate::session::Subscription, Vec<u32>)>,
    /// Set while recovery re-applies what the log already holds: nothing is journaled.
    replaying: bool,
    /// Records that failed since the last one the log took: an episode is logged once
    /// when it begins and once when it ends, not once per record.
    failing_records: u64,
    /// Shared subscriptions: this core's members and where every group's members are.
    shares: share::Shares,
    /// Core 0: the latest figures of every core, for `$SYS`.
    sys: sys::SysBoard,
    /// The ACL in force (`access`); `None`: no rules, everything allowed.
    acl: Option<Arc<crate::auth::Acl>>,
}

impl Broker {
    /// An engine with an empty journal in memory (tests, benches).
    pub fn new(id: CoreId, cores: usize, policy: SessionPolicy, clock: WallClock) -> Broker {
        Broker::with_journal(
            id,
            cores,
            policy,
            Box::new(journal::MemJournal::new(1 << 16)),
            clock,
        )
    }

    pub fn with_journal(
        id: CoreId,
        cores: usize,
        policy: SessionPolicy,
        journal: Box<dyn Journal>,
        clock: WallClock,
    ) -> Broker {
        Broker {
            id,
            cores,
            policy,
            sessions: FastMap::default(),
            subscriptions: SubscriptionTree::new(),
            interest: interest::Interest::default(),
            nodes: nodes::RemoteInterest::default(),
            retained: retained::Retained::default(),
            counters: Counters::default(),
            messages: MessageTable::new(1, []),
            journal,
            clock,
            next_sid: 1,
            expiries: BinaryHeap::new(),
            checkpoints: persist::Checkpoints::default(),
            scratch: BytesMut::new(),
            wills: wills::Wills::default(),
            exactly_once: exactly_once::ExactlyOnce::default(),
            targets: FastMap::default(),
            replaying: false,
            failing_records: 0,
            shares: share::Shares::new(cores),
            sys: sys::SysBoard::new(cores),
            acl: None,
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

    /// Messages held for sessions of this core (each counted once).
    pub fn stored_messages(&self) -> usize {
        self.messages.len()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.journal.disk_bytes()
    }

    /// How long this core's log msyncs took (`None`: no msync runs, `fsync = "never"`).
    pub fn fsync_latency(&self) -> Option<crate::histogram::Histogram> {
        self.journal.fsync_latency()
    }

    /// See [`Journal::durable`].
    pub fn durable(&self) -> Option<journal::Durable> {
        self.journal.durable()
    }

    /// Writes a record; a failure is counted, never fatal: the state in memory stays
    /// right, only its durability is lost. Callers whose record stands for something a
    /// client is told (a message, a retained message, an inbound QoS 2 id) refuse it when
    /// this returns `None`; for the others ARCHITECTURE.md "A full disk" says what a lost
    /// record costs after a restart (at worst a redelivery). Logged once per episode.
    fn journal(&mut self, record: &Record) -> Option<crate::store::Position> {
        if self.replaying {
            return None;
        }
        let appended = if self.write_pending_abort() {
            self.scratch.clear();
            record.encode(&mut self.scratch);
            self.journal.append(record.kind(), &self.scratch)
        } else {
            Err(crate::store::StoreError::NoRoom)
        };
        match appended {
            Ok(pos) => {
                if self.failing_records > 0 {
                    tracing::warn!(core = %self.id, failed_records = self.failing_records, "log: writes resumed");
                    self.failing_records = 0;
                }
                Some(pos)
            }
            Err(error) => {
                self.counters.journal_errors += 1;
                if self.failing_records == 0 {
                    tracing::error!(core = %self.id, %error, kind = record.kind(), "log: cannot write a record; this is logged once until writes resume");
                }
                self.failing_records += 1;
                None
            }
        }
    }

    /// Payload bytes of the messages this core holds for its sessions.
    pub fn stored_bytes(&self) -> u64 {
        self.messages.bytes()
    }

    /// Logs a session's changes and settles the references they end.
    fn settle(&mut self, sid: Option<u64>, changes: &mut Vec<Change>) {
        for change in changes.drain(..) {
            let record = match change {
                Change::Sent { seq, packet_id } => sid.map(|sid| Record::Sent {
                    sid,
                    seq,
                    packet_id: packet_id.map_or(0, PacketId::get),
                }),
                Change::Received { seq } => sid.map(|sid| Record::Received { sid, seq }),
                Change::Done { seq } | Change::Dropped { seq } | Change::Expired { seq } => {
                    match change {
                        Change::Dropped { .. } => {
                            self.counters.dropped += 1;
                            self.counters.dropped_queue_full += 1;
                        }
                        Change::Expired { .. } => self.counters.expired += 1,
                        _ => {}
                    }
                    self.messages.release(seq);
                    sid.map(|sid| Record::Done { sid, seq })
                }
            };
            if let Some(record) = record {
                self.journal(&record);
            }
        }
    }

    /// Acknowledgements from the client for messages we sent it.
    pub fn on_ack(&mut self, client_id: &ByteString, packet: Packet, now: Instant) -> Effects {
        let mut effects = Effects::default();
        let mut out = Vec::new();
        let mut changes = Vec::new();
        let Broker {
            sessions,
            messages,
            journal,
            clock,
            acl,
            ..
        } = self;
        let Some(slot) = sessions.get_mut(client_id) else {
            return effects;
        };
        let sid = slot.sid;
        let lookup = Lookup {
            table: messages,
            journal: journal.as_ref(),
            clock: *clock,
        };
        let lookup = &access::Readable {
            messages: &lookup,
            acl: acl.as_deref(),
            who: crate::auth::Who {
                client_id,
                username: slot.username.as_deref(),
            },
        };
        let mut released = None;
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                slot.session
                    .on_complete(ack.packet_id, lookup, now, &mut out, &mut changes)
            }
            Packet::PubRec(ack) => slot.session.on_pub_rec(
                ack.packet_id,
                ack.reason_code,
                lookup,
                now,
                &mut out,
                &mut changes,
            ),
            Packet::PubRel(ack) => {
                let (reply, known) = slot.session.on_pub_rel(ack.packet_id);
                out.push(reply);
                if known {
                    released = sid.map(|sid| Record::Qos2Released {
                        sid,
                        packet_id: ack.packet_id.get(),
                    });
                }
            }
            _ => {}
        }
        self.settle(sid, &mut changes);
        if let Some(record) = released {
            if let Record::Qos2Released { sid, packet_id } = record {
                self.exactly_once.confirm(sid, packet_id);
            }
            self.journal(&record);
        }
        self.counters.messages_sent += out
            .iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .count() as u64;
        effects
            .to_clients
            .extend(out.into_iter().map(|p| (client_id.clone(), p.into())));
        effects
    }
}

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod exactly_once_tests;
#[cfg(test)]
mod inspect_tests;
#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod publish_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod store_full_tests;
#[cfg(test)]
mod subscribe_tests;
