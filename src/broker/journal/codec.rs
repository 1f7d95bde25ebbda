//! The bytes of each record (little-endian; strings a u32 length then UTF-8), and the v5
//! PUBLISH that carries a message inside MESSAGE, RETAINED, WILL and QOS2_ROUTING.
//!
//! Invariant: `decode(kind, encode(record))` is the record again, and decoding never
//! panics on any input: a truncated or malformed body is a [`JournalError`].

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::records::{kind, JournalError, MessageRecord, Record, Snapshot, SnapshotEntry, Target};
use super::Routing;
use crate::protocol::{
    self, Packet, PacketId, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};
use crate::session::state::{Origin, Outbound};
use crate::store::Position;

impl Record {
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
            Record::SessionOwner { sid, username } => {
                buf.put_u64_le(*sid);
                put_username(buf, username.as_ref());
            }
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
            Record::Qos2Routing(r) => {
                buf.put_u64_le(r.sid);
                buf.put_u16_le(r.packet_id);
                buf.put_u64_le(r.origin_seq);
                buf.put_u64_le(r.expires_ms);
                put_str(buf, &r.publisher);
                buf.put_slice(&r.publish);
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
                // Last, and left out when there is none: a SNAPSHOT written before the field
                // existed reads the same.
                if s.username.is_some() {
                    put_username(buf, s.username.as_ref());
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
            kind::SESSION_OWNER => Record::SessionOwner {
                sid: r.u64()?,
                username: r.username()?,
            },
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
                let username = if r.buf.is_empty() {
                    None
                } else {
                    r.username()?
                };
                Record::Snapshot(Snapshot {
                    sid,
                    client_id,
                    expiry_secs,
                    offline_ms,
                    subscriptions,
                    entries,
                    awaiting_release,
                    username,
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
            kind::QOS2_ROUTING => Record::Qos2Routing(Routing {
                sid: r.u64()?,
                packet_id: r.u16()?,
                origin_seq: r.u64()?,
                expires_ms: r.u64()?,
                publisher: r.str()?,
                publish: r.rest(),
            }),
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

fn put_username(buf: &mut BytesMut, username: Option<&ByteString>) {
    match username {
        None => buf.put_u8(0),
        Some(name) => {
            buf.put_u8(1);
            put_str(buf, name);
        }
    }
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
    /// A flag byte (0: none, 1: a username follows) and the username.
    fn username(&mut self) -> Result<Option<ByteString>, JournalError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(JournalError::Malformed { kind: self.kind }),
        }
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
