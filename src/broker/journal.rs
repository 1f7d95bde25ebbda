//! What a core writes to its log, record by record, and how each record reads back.
//!
//! The broker journals every change to persistent state (sessions with a non-zero expiry,
//! their subscriptions, the messages they hold and how far each delivery got, inbound QoS 2
//! state, retained messages) before the packet that depends on it leaves the core, so the
//! log is always at least as far as anything a client was told. Sessions without an expiry
//! are never journaled: clean-session traffic costs the log nothing.
//!
//! Record bodies are little-endian; strings and byte strings are a u32 length then the
//! bytes; `sid` is the session's number on this core. A message body is the message as a
//! v5 PUBLISH packet (so the codec that is fuzzed anyway reads it back), preceded by what a
//! PUBLISH cannot say. The byte layout of every record is listed in ARCHITECTURE.md.
//!
//! Invariant: decoding never panics on any input; a body that does not parse is reported
//! as [`JournalError`] and recovery skips it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::{
    self, Packet, PacketId, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};
use crate::session::state::{Origin, Outbound, Seq};
use crate::store::{Log, Position, StoreError};

/// The log a broker writes to: the core's memory-mapped log in the server, a vector in
/// tests.
pub trait Journal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError>;
    /// Copies the record at `pos` out (the map may be reclaimed later).
    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError>;
    /// Where the next record goes.
    fn head(&self) -> Position;
    /// Live segments, oldest first.
    fn segment_count(&self) -> usize;
    /// Deletes the segments older than `segment`; returns the bytes freed.
    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError>;
    fn disk_bytes(&self) -> u64;
    /// Resolves once everything appended so far is as durable as the `fsync` setting asks
    /// before an acknowledgement; `None` when nothing needs waiting for.
    fn durable(&self) -> Option<Durable> {
        None
    }
    /// `None` while the log has room to grow; while it cannot make its next segment (disk
    /// full), the bytes new messages may still take. The rest of what is left is kept for
    /// the records that follow data already sent (SENT, RECEIVED, DONE, sessions).
    fn room_for_messages(&self) -> Option<usize> {
        None
    }
}

/// A MESSAGE record's bytes besides its publisher, its PUBLISH and its targets: the
/// record header, the fixed fields, and the alignment padding at most.
pub const MESSAGE_RECORD_OVERHEAD: usize = 16 + 7 + 8 + 2 + 8 + 8 + 4 + 4 + 4;

/// A wait for the log to reach the disk.
pub type Durable =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + 'static>>;

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
    Qos2Routing {
        sid: u64,
        packet_id: u16,
        origin_seq: u64,
        expires_ms: u64,
        publisher: ByteString,
        publish: Bytes,
    },
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
            Record::Qos2Routing { .. } => kind::QOS2_ROUTING,
            Record::Origins(_) => kind::ORIGINS,
            Record::MessageAt { .. } => kind::MESSAGE_AT,
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Record::SessionOpen {
                sid,
                client_id,
                expiry_secs,
            } => {
                buf.put_u64_le(*sid);
                put_str(buf, client_id);
                buf.put_u64_le(*expiry_secs);
            }
            Record::SessionExpiry { sid, expiry_secs } => {
                buf.put_u64_le(*sid);
                buf.put_u64_le(*expiry_secs);
            }
            Record::SessionOnline { sid } | Record::SessionEnd { sid } => buf.put_u64_le(*sid),
            Record::SessionOffline {
                sid,
                at_ms,
                expiry_secs,
            } => {
                buf.put_u64_le(*sid);
                buf.put_u64_le(*at_ms);
                buf.put_u64_le(*expiry_secs);
            }
            Record::Subscribe {
                sid,
                filter,
                options,
                identifier,
            } => {
                buf.put_u64_le(*sid);
                put_str(buf, filter);
                buf.put_u8(options_byte(options));
                buf.put_u32_le(*identifier);
            }
            Record::Unsubscribe { sid, filter } => {
                buf.put_u64_le(*sid);
                put_str(buf, filter);
            }
            Record::Message(m) => {
                buf.put_u64_le(m.seq);
                put_origin(buf, m.origin);
                buf.put_u64_le(m.expires_ms);
                put_str(buf, &m.publisher);
                buf.put_u32_le(m.payload_len);
                buf.put_u32_le(m.targets.len() as u32);
                for t in &m.targets {
                    buf.put_u64_le(t.sid);
                    buf.put_u8(t.qos as u8 | u8::from(t.retain) << 2);
                    put_ids(buf, &t.ids);
                }
                buf.put_slice(&m.publish);
            }
            Record::Sent {
                sid,
                seq,
                packet_id,
            } => {
                buf.put_u64_le(*sid);
                buf.put_u64_le(*seq);
                buf.put_u16_le(*packet_id);
            }
            Record::Received { sid, seq } | Record::Done { sid, seq } => {
                buf.put_u64_le(*sid);
                buf.put_u64_le(*seq);
            }
            Record::Qos2In { sid, packet_id } | Record::Qos2Released { sid, packet_id } => {
                buf.put_u64_le(*sid);
                buf.put_u16_le(*packet_id);
            }
            Record::Retained {
                expires_ms,
                publisher,
                publish,
            } => {
                buf.put_u64_le(*expires_ms);
                put_str(buf, publisher);
                buf.put_slice(publish);
            }
            Record::RetainedClear { topic } => put_str(buf, topic),
            Record::Will {
                sid,
                delay_secs,
                publish,
            } => {
                buf.put_u64_le(*sid);
                buf.put_u32_le(*delay_secs);
                buf.put_slice(publish);
            }
            Record::WillClear { sid } => buf.put_u64_le(*sid),
            Record::Qos2Routing {
                sid,
                packet_id,
                origin_seq,
                expires_ms,
                publisher,
                publish,
            } => {
                buf.put_u64_le(*sid);
                buf.put_u16_le(*packet_id);
                buf.put_u64_le(*origin_seq);
                buf.put_u64_le(*expires_ms);
                put_str(buf, publisher);
                buf.put_slice(publish);
            }
            Record::Origins(origins) => {
                buf.put_u32_le(origins.len() as u32);
                for o in origins {
                    put_origin(buf, Some(*o));
                }
            }
            Record::Snapshot(s) => {
                buf.put_u64_le(s.sid);
                put_str(buf, &s.client_id);
                buf.put_u64_le(s.expiry_secs);
                buf.put_u64_le(s.offline_ms);
                buf.put_u32_le(s.subscriptions.len() as u32);
                for (filter, options, identifier) in &s.subscriptions {
                    put_str(buf, filter);
                    buf.put_u8(options_byte(options));
                    buf.put_u32_le(*identifier);
                }
                buf.put_u32_le(s.entries.len() as u32);
                for e in &s.entries {
                    buf.put_u64_le(e.seq);
                    let (packet_id, state) = match e.in_flight {
                        None => (0, 0),
                        Some((id, Outbound::Published)) => (id.get(), 1),
                        Some((id, Outbound::Released)) => (id.get(), 2),
                    };
                    buf.put_u8(e.qos as u8 | u8::from(e.retain) << 2 | state << 3);
                    buf.put_u16_le(packet_id);
                    put_ids(buf, &e.ids);
                }
                buf.put_u32_le(s.awaiting_release.len() as u32);
                for id in &s.awaiting_release {
                    buf.put_u16_le(*id);
                }
            }
            Record::CheckpointBegin {
                id,
                next_seq,
                next_sid,
            } => {
                buf.put_u64_le(*id);
                buf.put_u64_le(*next_seq);
                buf.put_u64_le(*next_sid);
            }
            Record::CheckpointEnd { id } | Record::CheckpointAbort { id } => buf.put_u64_le(*id),
            Record::MessageAt {
                seq,
                at,
                payload_len,
            } => {
                buf.put_u64_le(*seq);
                buf.put_u64_le(at.segment);
                buf.put_u32_le(at.offset);
                buf.put_u32_le(*payload_len);
            }
        }
    }

    pub fn decode(kind: u8, body: &Bytes) -> Result<Record, JournalError> {
        let mut r = Reader {
            buf: body.clone(),
            kind,
        };
        let record = match kind {
            kind::SESSION_OPEN => Record::SessionOpen {
                sid: r.u64()?,
                client_id: r.str()?,
                expiry_secs: r.u64()?,
            },
            kind::SESSION_EXPIRY => Record::SessionExpiry {
                sid: r.u64()?,
                expiry_secs: r.u64()?,
            },
            kind::SESSION_ONLINE => Record::SessionOnline { sid: r.u64()? },
            kind::SESSION_OFFLINE => Record::SessionOffline {
                sid: r.u64()?,
                at_ms: r.u64()?,
                expiry_secs: r.u64()?,
            },
            kind::SESSION_END => Record::SessionEnd { sid: r.u64()? },
            kind::SUBSCRIBE => Record::Subscribe {
                sid: r.u64()?,
                filter: r.str()?,
                options: r.options()?,
                identifier: r.u32()?,
            },
            kind::UNSUBSCRIBE => Record::Unsubscribe {
                sid: r.u64()?,
                filter: r.str()?,
            },
            kind::MESSAGE => {
                let seq = r.u64()?;
                let origin = r.origin()?;
                let expires_ms = r.u64()?;
                let publisher = r.str()?;
                let payload_len = r.u32()?;
                let count = r.u32()?;
                let mut targets = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    let sid = r.u64()?;
                    let flags = r.u8()?;
                    targets.push(Target {
                        sid,
                        qos: r.qos(flags)?,
                        retain: flags & 4 != 0,
                        ids: r.ids()?,
                    });
                }
                Record::Message(MessageRecord {
                    seq,
                    origin,
                    expires_ms,
                    publisher,
                    payload_len,
                    targets,
                    publish: r.rest(),
                })
            }
            kind::SENT => Record::Sent {
                sid: r.u64()?,
                seq: r.u64()?,
                packet_id: r.u16()?,
            },
            kind::RECEIVED => Record::Received {
                sid: r.u64()?,
                seq: r.u64()?,
            },
            kind::DONE => Record::Done {
                sid: r.u64()?,
                seq: r.u64()?,
            },
            kind::QOS2_IN => Record::Qos2In {
                sid: r.u64()?,
                packet_id: r.u16()?,
            },
            kind::QOS2_RELEASED => Record::Qos2Released {
                sid: r.u64()?,
                packet_id: r.u16()?,
            },
            kind::RETAINED => Record::Retained {
                expires_ms: r.u64()?,
                publisher: r.str()?,
                publish: r.rest(),
            },
            kind::RETAINED_CLEAR => Record::RetainedClear { topic: r.str()? },
            kind::SNAPSHOT => {
                let sid = r.u64()?;
                let client_id = r.str()?;
                let expiry_secs = r.u64()?;
                let offline_ms = r.u64()?;
                let count = r.u32()?;
                let mut subscriptions = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    subscriptions.push((r.str()?, r.options()?, r.u32()?));
                }
                let count = r.u32()?;
                let mut entries = Vec::with_capacity(count.min(65536) as usize);
                for _ in 0..count {
                    let seq = r.u64()?;
                    let flags = r.u8()?;
                    let packet_id = r.u16()?;
                    let in_flight = match (flags >> 3, PacketId::new(packet_id)) {
                        (0, _) => None,
                        (1, Some(id)) => Some((id, Outbound::Published)),
                        (2, Some(id)) => Some((id, Outbound::Released)),
                        _ => return Err(JournalError::Malformed { kind }),
                    };
                    entries.push(SnapshotEntry {
                        seq,
                        qos: r.qos(flags)?,
                        retain: flags & 4 != 0,
                        in_flight,
                        ids: r.ids()?,
                    });
                }
                let count = r.u32()?;
                let mut awaiting_release = Vec::with_capacity(count.min(65536) as usize);
                for _ in 0..count {
                    awaiting_release.push(r.u16()?);
                }
                Record::Snapshot(Snapshot {
                    sid,
                    client_id,
                    expiry_secs,
                    offline_ms,
                    subscriptions,
                    entries,
                    awaiting_release,
                })
            }
            kind::CHECKPOINT_BEGIN => Record::CheckpointBegin {
                id: r.u64()?,
                next_seq: r.u64()?,
                next_sid: r.u64()?,
            },
            kind::CHECKPOINT_END => Record::CheckpointEnd { id: r.u64()? },
            kind::CHECKPOINT_ABORT => Record::CheckpointAbort { id: r.u64()? },
            kind::WILL => Record::Will {
                sid: r.u64()?,
                delay_secs: r.u32()?,
                publish: r.rest(),
            },
            kind::WILL_CLEAR => Record::WillClear { sid: r.u64()? },
            kind::QOS2_ROUTING => Record::Qos2Routing {
                sid: r.u64()?,
                packet_id: r.u16()?,
                origin_seq: r.u64()?,
                expires_ms: r.u64()?,
                publisher: r.str()?,
                publish: r.rest(),
            },
            kind::ORIGINS => {
                let count = r.u32()?;
                let mut origins = Vec::with_capacity(count.min(1 << 16) as usize);
                for _ in 0..count {
                    origins.push(r.origin()?.ok_or(JournalError::Malformed { kind })?);
                }
                Record::Origins(origins)
            }
            kind::MESSAGE_AT => Record::MessageAt {
                seq: r.u64()?,
                at: Position {
                    segment: r.u64()?,
                    offset: r.u32()?,
                },
                payload_len: r.u32()?,
            },
            other => return Err(JournalError::UnknownKind(other)),
        };
        if !r.buf.is_empty()
            && !matches!(
                kind,
                kind::MESSAGE | kind::RETAINED | kind::WILL | kind::QOS2_ROUTING
            )
        {
            return Err(JournalError::Malformed { kind });
        }
        Ok(record)
    }
}

/// A message as the v5 PUBLISH stored in its record.
pub fn encode_publish(publish: &Publish) -> Bytes {
    let mut buf = BytesMut::with_capacity(publish.payload.len() + publish.topic.len() + 16);
    let mut publish = publish.clone();
    publish.dup = false;
    publish.packet_id = (publish.qos != QoS::AtMostOnce)
        .then(|| PacketId::new(1))
        .flatten();
    // Encoding a message that came through the decoder cannot fail; an error would only
    // mean an oversized property set, which then is dropped rather than the message.
    if protocol::encode(
        &Packet::Publish(publish.clone()),
        ProtocolVersion::V5,
        &mut buf,
    )
    .is_err()
    {
        buf.clear();
        publish.properties = Default::default();
        let _ = protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut buf);
    }
    buf.freeze()
}

pub fn decode_publish(kind: u8, bytes: &Bytes) -> Result<Publish, JournalError> {
    let mut buf = BytesMut::from(&bytes[..]);
    match protocol::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(publish))) => Ok(publish),
        _ => Err(JournalError::Malformed { kind }),
    }
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

/// An origin as u16 core + u64 seq; seq 0 (never allocated) means none.
fn put_origin(buf: &mut BytesMut, origin: Option<Origin>) {
    let o = origin.unwrap_or(Origin { core: 0, seq: 0 });
    buf.put_u16_le(o.core);
    buf.put_u64_le(o.seq);
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32_le(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn put_ids(buf: &mut BytesMut, ids: &[u32]) {
    buf.put_u8(ids.len().min(255) as u8);
    for id in ids.iter().take(255) {
        buf.put_u32_le(*id);
    }
}

struct Reader {
    buf: Bytes,
    kind: u8,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, JournalError> {
        if self.buf.len() < n {
            return Err(JournalError::Malformed { kind: self.kind });
        }
        Ok(self.buf.split_to(n))
    }
    fn u8(&mut self) -> Result<u8, JournalError> {
        Ok(self.take(1)?[0])
    }
    fn origin(&mut self) -> Result<Option<Origin>, JournalError> {
        let core = self.u16()?;
        let seq = self.u64()?;
        Ok((seq != 0).then_some(Origin { core, seq }))
    }

    fn u16(&mut self) -> Result<u16, JournalError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, JournalError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, JournalError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<ByteString, JournalError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        ByteString::try_from(bytes).map_err(|_| JournalError::Malformed { kind: self.kind })
    }
    fn qos(&self, flags: u8) -> Result<QoS, JournalError> {
        match flags & 3 {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(JournalError::Malformed { kind: self.kind }),
        }
    }
    fn options(&mut self) -> Result<SubscriptionOptions, JournalError> {
        let b = self.u8()?;
        Ok(SubscriptionOptions {
            qos: self.qos(b)?,
            no_local: b & 4 != 0,
            retain_as_published: b & 8 != 0,
            retain_handling: match b >> 4 {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscribe,
                2 => RetainHandling::Never,
                _ => return Err(JournalError::Malformed { kind: self.kind }),
            },
        })
    }
    fn ids(&mut self) -> Result<Vec<u32>, JournalError> {
        let n = self.u8()?;
        (0..n).map(|_| self.u32()).collect()
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }
}

/// A journal in memory, for tests of the broker without a disk: segments of `segment_len`
/// records each. Clones share the same records, so a test can keep a handle and replay
/// what the broker wrote.
#[derive(Debug, Clone)]
pub struct MemJournal {
    pub records: Rc<RefCell<BTreeMap<Position, (u8, Bytes)>>>,
    pub segment_len: u32,
    head: Rc<Cell<Position>>,
    /// Tests of a full disk: `Some(n)` makes the journal report `n` bytes of room for
    /// messages and refuse (`NoRoom`) every append once `n` body bytes more were taken.
    pub full_after: Rc<Cell<Option<usize>>>,
}

impl MemJournal {
    pub fn new(segment_len: u32) -> MemJournal {
        MemJournal {
            records: Default::default(),
            segment_len: segment_len.max(1),
            head: Rc::new(Cell::new(Position {
                segment: 0,
                offset: 0,
            })),
            full_after: Default::default(),
        }
    }

    /// A journal of its own holding `records` at their positions, appending after the
    /// last (a crash that kept exactly these records).
    pub fn with_records(segment_len: u32, records: BTreeMap<Position, (u8, Bytes)>) -> MemJournal {
        let journal = MemJournal::new(segment_len);
        if let Some(last) = records.keys().next_back() {
            journal.head.set(journal.after(*last));
        }
        *journal.records.borrow_mut() = records;
        journal
    }

    /// Where the record after the one at `pos` goes: `segment_len` records a segment.
    fn after(&self, pos: Position) -> Position {
        if pos.offset + 1 >= self.segment_len {
            Position {
                segment: pos.segment + 1,
                offset: 0,
            }
        } else {
            Position {
                segment: pos.segment,
                offset: pos.offset + 1,
            }
        }
    }

    /// Replays every record, in order, as the log's `open` does.
    pub fn replay(&self, mut visit: impl FnMut(Position, u8, &[u8])) {
        for (pos, (kind, body)) in self.records.borrow().iter() {
            visit(*pos, *kind, body);
        }
    }
}

impl Journal for MemJournal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError> {
        if let Some(left) = self.full_after.get() {
            let left = left.checked_sub(body.len()).ok_or(StoreError::NoRoom)?;
            self.full_after.set(Some(left));
        }
        let pos = self.head.get();
        self.records
            .borrow_mut()
            .insert(pos, (kind, Bytes::copy_from_slice(body)));
        self.head.set(self.after(pos));
        Ok(pos)
    }
    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError> {
        self.records
            .borrow()
            .get(&pos)
            .cloned()
            .ok_or(StoreError::NoRecord(pos))
    }
    fn head(&self) -> Position {
        self.head.get()
    }
    fn segment_count(&self) -> usize {
        let head = self.head.get();
        let first = self
            .records
            .borrow()
            .keys()
            .next()
            .map_or(head.segment, |p| p.segment);
        (head.segment - first + 1) as usize
    }
    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError> {
        let mut records = self.records.borrow_mut();
        let keep = records.split_off(&Position { segment, offset: 0 });
        let freed = records.values().map(|(_, b)| b.len() as u64).sum();
        *records = keep;
        Ok(freed)
    }
    fn disk_bytes(&self) -> u64 {
        self.records
            .borrow()
            .values()
            .map(|(_, b)| b.len() as u64 + 12)
            .sum()
    }
    fn room_for_messages(&self) -> Option<usize> {
        self.full_after.get()
    }
}

/// The memory-mapped log as the engine's journal.
pub struct LogJournal {
    log: Log,
    /// Acknowledgements wait for msync only under `fsync = "always"`.
    always: bool,
}

impl LogJournal {
    /// Journals to `log`; `always` makes acknowledgements wait for msync (`fsync = "always"`).
    pub fn new(log: Log, always: bool) -> LogJournal {
        LogJournal { log, always }
    }
}

impl Journal for LogJournal {
    fn append(&mut self, kind: u8, body: &[u8]) -> Result<Position, StoreError> {
        self.log.append(kind, body)
    }

    fn read(&self, pos: Position) -> Result<(u8, Bytes), StoreError> {
        self.log
            .read(pos)
            .map(|(kind, body)| (kind, Bytes::copy_from_slice(body)))
    }

    fn head(&self) -> Position {
        self.log.head()
    }

    fn segment_count(&self) -> usize {
        self.log.segments().count()
    }

    fn remove_segments_before(&mut self, segment: u64) -> Result<u64, StoreError> {
        self.log.remove_segments_before(segment)
    }

    fn disk_bytes(&self) -> u64 {
        self.log.disk_bytes()
    }

    fn durable(&self) -> Option<Durable> {
        self.always.then(|| Box::pin(self.log.durable()) as Durable)
    }

    /// A quarter of a segment is kept for the records that follow data already sent.
    fn room_for_messages(&self) -> Option<usize> {
        let kept = self.log.config().segment_size as usize / 4;
        self.log
            .reserve_left()
            .map(|left| left.saturating_sub(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(record: Record) {
        let mut buf = BytesMut::new();
        record.encode(&mut buf);
        let body = buf.freeze();
        assert_eq!(Record::decode(record.kind(), &body).unwrap(), record);
        // Every truncation is an error, never a panic.
        for cut in 0..body.len() {
            let _ = Record::decode(record.kind(), &body.slice(..cut));
        }
    }

    #[test]
    fn every_record_round_trips_and_truncation_never_panics() {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::Never,
        };
        let publish = encode_publish(&Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: PacketId::new(9),
            properties: Default::default(),
            payload: Bytes::from_static(b"hello"),
        });
        assert_eq!(
            decode_publish(kind::MESSAGE, &publish).unwrap().payload,
            "hello"
        );
        for record in [
            Record::SessionOpen {
                sid: 7,
                client_id: "dev-1".into(),
                expiry_secs: 300,
            },
            Record::SessionExpiry {
                sid: 7,
                expiry_secs: 0,
            },
            Record::SessionOnline { sid: 7 },
            Record::SessionOffline {
                sid: 7,
                at_ms: 1_700_000_000_000,
                expiry_secs: 60,
            },
            Record::SessionEnd { sid: 7 },
            Record::Subscribe {
                sid: 7,
                filter: "a/+".into(),
                options,
                identifier: 42,
            },
            Record::Unsubscribe {
                sid: 7,
                filter: "a/+".into(),
            },
            Record::Message(MessageRecord {
                seq: 99,
                origin: Some(Origin { core: 1, seq: 42 }),
                expires_ms: 5,
                publisher: "p".into(),
                payload_len: 5,
                targets: vec![
                    Target {
                        sid: 7,
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        ids: vec![1, 2],
                    },
                    Target {
                        sid: 8,
                        qos: QoS::ExactlyOnce,
                        retain: false,
                        ids: vec![],
                    },
                ],
                publish: publish.clone(),
            }),
            Record::Sent {
                sid: 7,
                seq: 99,
                packet_id: 3,
            },
            Record::Received { sid: 7, seq: 99 },
            Record::Done { sid: 7, seq: 99 },
            Record::Qos2In {
                sid: 7,
                packet_id: 4,
            },
            Record::Qos2Released {
                sid: 7,
                packet_id: 4,
            },
            Record::Retained {
                expires_ms: 0,
                publisher: "p".into(),
                publish: publish.clone(),
            },
            Record::RetainedClear {
                topic: "a/b".into(),
            },
            Record::Snapshot(Snapshot {
                sid: 7,
                client_id: "dev-1".into(),
                expiry_secs: 300,
                offline_ms: 12,
                subscriptions: vec![("a/#".into(), options, 0)],
                entries: vec![
                    SnapshotEntry {
                        seq: 5,
                        qos: QoS::ExactlyOnce,
                        retain: false,
                        in_flight: Some((PacketId::new(3).unwrap(), Outbound::Released)),
                        ids: vec![],
                    },
                    SnapshotEntry {
                        seq: 6,
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        in_flight: None,
                        ids: vec![9],
                    },
                ],
                awaiting_release: vec![4, 5],
            }),
            Record::CheckpointBegin {
                id: 1,
                next_seq: 100,
                next_sid: 8,
            },
            Record::CheckpointEnd { id: 1 },
            Record::CheckpointAbort { id: 1 },
            Record::Will {
                sid: 7,
                delay_secs: 30,
                publish: publish.clone(),
            },
            Record::WillClear { sid: 7 },
            Record::Qos2Routing {
                sid: 7,
                packet_id: 9,
                origin_seq: 100,
                expires_ms: 0,
                publisher: "dev-1".into(),
                publish: publish.clone(),
            },
            Record::Origins(vec![Origin { core: 0, seq: 1 }, Origin { core: 3, seq: 9 }]),
            Record::MessageAt {
                seq: 99,
                at: Position {
                    segment: 4,
                    offset: 4096,
                },
                payload_len: 1 << 20,
            },
        ] {
            roundtrip(record);
        }
    }

    #[test]
    fn unknown_kinds_and_trailing_bytes_are_errors() {
        assert!(matches!(
            Record::decode(200, &Bytes::new()),
            Err(JournalError::UnknownKind(200))
        ));
        let body = Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0, 9]);
        assert!(Record::decode(kind::SESSION_END, &body).is_err());
    }
}
