//! The records a core journals, as types: one [`Record`] variant per record kind (the
//! kind numbers are in [`kind`]; the bytes of each are in `codec.rs` and ARCHITECTURE.md).
//!
//! Invariant: a kind number, once given to a record, is never reused for another.

use bytes::Bytes;
use bytestring::ByteString;

use super::Routing;
use crate::broker::messages::WallClock;
use crate::protocol::{PacketId, QoS, SubscriptionOptions};
use crate::session::state::{Origin, Outbound, Seq};
use crate::session::Message;
use crate::store::Position;

/// The kinds of record, as stored in the log's record header.
pub mod kind {
    pub const SESSION_OPEN: u8 = 1;
    pub const SESSION_EXPIRY: u8 = 2;
    pub const SESSION_ONLINE: u8 = 3;
    pub const SESSION_OFFLINE: u8 = 4;
    pub const SESSION_END: u8 = 5;
    pub const SUBSCRIBE: u8 = 6;
    pub const UNSUBSCRIBE: u8 = 7;
    pub const MESSAGE: u8 = 8;
    pub const SENT: u8 = 9;
    pub const RECEIVED: u8 = 10;
    pub const DONE: u8 = 11;
    pub const QOS2_IN: u8 = 12;
    pub const QOS2_RELEASED: u8 = 13;
    pub const RETAINED: u8 = 14;
    pub const RETAINED_CLEAR: u8 = 15;
    pub const SNAPSHOT: u8 = 16;
    pub const CHECKPOINT_BEGIN: u8 = 17;
    pub const CHECKPOINT_END: u8 = 18;
    pub const CHECKPOINT_ABORT: u8 = 19;
    pub const WILL: u8 = 20;
    pub const WILL_CLEAR: u8 = 21;
    pub const QOS2_ROUTING: u8 = 22;
    pub const ORIGINS: u8 = 23;
    pub const MESSAGE_AT: u8 = 24;
    pub const SESSION_OWNER: u8 = 25;
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("record of kind {kind} is truncated or malformed")]
    Malformed { kind: u8 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

/// A session holding a message: which session, at what QoS, with what retain flag and
/// Subscription Identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub sid: u64,
    pub qos: QoS,
    pub retain: bool,
    pub ids: Vec<u32>,
}

/// A message as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub seq: Seq,
    /// Set when the message is an inbound QoS 2 message routed by its origin's core.
    pub origin: Option<Origin>,
    /// Unix milliseconds when the Message Expiry Interval runs out; 0 if never.
    pub expires_ms: u64,
    pub publisher: ByteString,
    pub payload_len: u32,
    /// The sessions that took a reference when it arrived (empty for a copy made by a
    /// checkpoint, whose references are in the session snapshots).
    pub targets: Vec<Target>,
    /// The message as a v5 PUBLISH (packet id 1 when QoS > 0).
    pub publish: Bytes,
}

impl MessageRecord {
    /// The record of `message`, number `seq` on this core, held by `targets` (none for a
    /// copy whose holders the snapshots name); `publish` is the message as
    /// [`encode_publish`](super::encode_publish) writes it.
    pub fn new(
        seq: Seq,
        origin: Option<Origin>,
        message: &Message,
        clock: WallClock,
        targets: Vec<Target>,
        publish: Bytes,
    ) -> MessageRecord {
        MessageRecord {
            seq,
            origin,
            expires_ms: message.expires_at.map_or(0, |at| clock.unix_ms(at)),
            publisher: message.publisher.clone(),
            payload_len: message.payload.len() as u32,
            targets,
            publish,
        }
    }
}

/// One entry of a session snapshot's window or queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub seq: Seq,
    pub qos: QoS,
    pub retain: bool,
    /// Packet id and state when in flight.
    pub in_flight: Option<(PacketId, Outbound)>,
    pub ids: Vec<u32>,
}

/// A whole session, as a checkpoint writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub sid: u64,
    pub client_id: ByteString,
    pub expiry_secs: u64,
    /// Unix milliseconds when it went offline; 0 while online.
    pub offline_ms: u64,
    pub subscriptions: Vec<(ByteString, SubscriptionOptions, u32)>,
    pub entries: Vec<SnapshotEntry>,
    pub awaiting_release: Vec<u16>,
    /// The username of the connection that last took the session (`SESSION_OWNER`).
    pub username: Option<ByteString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    SessionOpen {
        sid: u64,
        client_id: ByteString,
        expiry_secs: u64,
    },
    SessionExpiry {
        sid: u64,
        expiry_secs: u64,
    },
    SessionOnline {
        sid: u64,
    },
    SessionOffline {
        sid: u64,
        at_ms: u64,
        expiry_secs: u64,
    },
    SessionEnd {
        sid: u64,
    },
    /// The username of the connection that took the session, when it differs from the one
    /// before (`None`: a connection without one): who may take the session over, and whose
    /// ACL rules its deliveries follow.
    SessionOwner {
        sid: u64,
        username: Option<ByteString>,
    },
    Subscribe {
        sid: u64,
        filter: ByteString,
        options: SubscriptionOptions,
        identifier: u32,
    },
    Unsubscribe {
        sid: u64,
        filter: ByteString,
    },
    Message(MessageRecord),
    Sent {
        sid: u64,
        seq: Seq,
        packet_id: u16,
    },
    Received {
        sid: u64,
        seq: Seq,
    },
    Done {
        sid: u64,
        seq: Seq,
    },
    Qos2In {
        sid: u64,
        packet_id: u16,
    },
    Qos2Released {
        sid: u64,
        packet_id: u16,
    },
    Retained {
        expires_ms: u64,
        publisher: ByteString,
        publish: Bytes,
    },
    RetainedClear {
        topic: ByteString,
    },
    Snapshot(Snapshot),
    CheckpointBegin {
        id: u64,
        next_seq: Seq,
        next_sid: u64,
    },
    CheckpointEnd {
        id: u64,
    },
    CheckpointAbort {
        id: u64,
    },
    /// The will of a persistent session's current connection (or of its last one, until it
    /// is published or cancelled). SESSION_OPEN and SESSION_ONLINE clear it: a connection
    /// with a will writes its own WILL after them.
    Will {
        sid: u64,
        delay_secs: u32,
        publish: Bytes,
    },
    WillClear {
        sid: u64,
    },
    /// An inbound QoS 2 message of persistent session `sid`, journaled on the publisher's
    /// core before it is routed and until its QOS2_IN (or QOS2_RELEASED): recovery routes
    /// an unconfirmed one again, and every core skips an origin it has already taken.
    Qos2Routing(Routing),
    /// A checkpoint's copy of the origins a core has taken lately (its dedupe window).
    Origins(Vec<Origin>),
    /// Message `seq` is the MESSAGE record at `at`, which stays: written by a checkpoint
    /// for a message it keeps in place rather than copy, and by a promotion, so that the
    /// SNAPSHOT after it finds the message without the records before it.
    MessageAt {
        seq: Seq,
        at: Position,
        payload_len: u32,
    },
}

impl Record {
    pub fn kind(&self) -> u8 {
        match self {
            Record::SessionOpen { .. } => kind::SESSION_OPEN,
            Record::SessionExpiry { .. } => kind::SESSION_EXPIRY,
            Record::SessionOnline { .. } => kind::SESSION_ONLINE,
            Record::SessionOffline { .. } => kind::SESSION_OFFLINE,
            Record::SessionEnd { .. } => kind::SESSION_END,
            Record::SessionOwner { .. } => kind::SESSION_OWNER,
            Record::Subscribe { .. } => kind::SUBSCRIBE,
            Record::Unsubscribe { .. } => kind::UNSUBSCRIBE,
            Record::Message(_) => kind::MESSAGE,
            Record::Sent { .. } => kind::SENT,
            Record::Received { .. } => kind::RECEIVED,
            Record::Done { .. } => kind::DONE,
            Record::Qos2In { .. } => kind::QOS2_IN,
            Record::Qos2Released { .. } => kind::QOS2_RELEASED,
            Record::Retained { .. } => kind::RETAINED,
            Record::RetainedClear { .. } => kind::RETAINED_CLEAR,
            Record::Snapshot(_) => kind::SNAPSHOT,
            Record::CheckpointBegin { .. } => kind::CHECKPOINT_BEGIN,
            Record::CheckpointEnd { .. } => kind::CHECKPOINT_END,
            Record::CheckpointAbort { .. } => kind::CHECKPOINT_ABORT,
            Record::Will { .. } => kind::WILL,
            Record::WillClear { .. } => kind::WILL_CLEAR,
            Record::Qos2Routing(_) => kind::QOS2_ROUTING,
            Record::Origins(_) => kind::ORIGINS,
            Record::MessageAt { .. } => kind::MESSAGE_AT,
        }
    }
}
