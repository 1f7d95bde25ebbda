//! How a message travels between nodes: the body of one NATS message (core NATS for QoS 0,
//! a JetStream stream for QoS 1/2). The topic travels inside the body, so no MQTT topic is
//! ever mapped onto a NATS subject (section 2 of the cluster design lists why that mapping
//! leaks).
//!
//! Layout: `version:u8 = 1`, `publisher_len:u16` (big-endian), the publisher's client id
//! (UTF-8), then the message as a complete MQTT 5 PUBLISH packet, as the log stores it
//! (`broker::journal::encode_publish`: QoS, RETAIN, topic, properties, payload; packet id 1
//! when QoS > 0). A Message Expiry Interval is rewritten to the time left when it is sent.
//! Version 2 (a forward the sending node picked the receiving one for some share groups)
//! has, between the publisher and the PUBLISH, `groups:u16` and that many
//! `len:u16` + `$share/{group}/{filter}` (UTF-8): the groups the receiver delivers to.
//!
//! Invariant: decoding never panics on any input; anything that is not such a body is a
//! [`WireError`].

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::broker::journal::{decode_publish, encode_publish};
use crate::protocol::Publish;
use crate::session::Message;

const VERSION: u8 = 1;
/// With share groups.
const VERSION_GROUPS: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a forwarded message of {0} bytes is too short")]
    Short(usize),
    #[error("a forwarded message of version {0}, not 1 or 2")]
    Version(u8),
    #[error("a forwarded message's share groups are cut short or not UTF-8")]
    Groups,
    #[error("a forwarded message's publisher is not UTF-8")]
    Publisher,
    #[error("a forwarded message does not hold a PUBLISH packet")]
    Publish,
}

/// The body that carries `message`, or `None` when its Message Expiry Interval ran out.
pub fn encode(message: &Message, now: Instant) -> Option<Bytes> {
    encode_for(message, &[], now)
}

/// As [`encode`], naming the share `groups` the receiving node delivers it to.
pub fn encode_for(message: &Message, groups: &[ByteString], now: Instant) -> Option<Bytes> {
    let mut properties = message.properties.clone();
    if let Some(at) = message.expires_at {
        let left = at.checked_duration_since(now)?.as_secs();
        if left == 0 {
            return None;
        }
        properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
    }
    let publish = encode_publish(&Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id: None,
        properties,
        payload: message.payload.clone(),
    });
    // A client id is at most 65,535 bytes (a UTF-8 string of the protocol).
    let publisher = &message.publisher.as_bytes()[..message.publisher.len().min(u16::MAX as usize)];
    let groups = &groups[..groups.len().min(u16::MAX as usize)];
    let group_bytes: usize = groups.iter().map(|g| 2 + g.len()).sum();
    let mut body = BytesMut::with_capacity(5 + publisher.len() + group_bytes + publish.len());
    body.put_u8(if groups.is_empty() {
        VERSION
    } else {
        VERSION_GROUPS
    });
    body.put_u16(publisher.len() as u16);
    body.put_slice(publisher);
    if !groups.is_empty() {
        body.put_u16(groups.len() as u16);
        for group in groups {
            // A topic filter is at most 65,535 bytes; a longer name is not a group.
            let group = &group.as_bytes()[..group.len().min(u16::MAX as usize)];
            body.put_u16(group.len() as u16);
            body.put_slice(group);
        }
    }
    body.put_slice(&publish);
    Some(body.freeze())
}

/// The publisher and the PUBLISH a body carries.
pub fn decode(body: &Bytes) -> Result<(ByteString, Publish), WireError> {
    decode_with_groups(body).map(|(publisher, publish, _)| (publisher, publish))
}

/// The publisher, the PUBLISH and the share groups (empty for version 1) a body carries.
pub fn decode_with_groups(
    body: &Bytes,
) -> Result<(ByteString, Publish, Vec<ByteString>), WireError> {
    if body.len() < 3 {
        return Err(WireError::Short(body.len()));
    }
    if body[0] != VERSION && body[0] != VERSION_GROUPS {
        return Err(WireError::Version(body[0]));
    }
    let len = usize::from(u16::from_be_bytes([body[1], body[2]]));
    if body.len() < 3 + len {
        return Err(WireError::Short(body.len()));
    }
    let publisher =
        ByteString::try_from(body.slice(3..3 + len)).map_err(|_| WireError::Publisher)?;
    let mut at = 3 + len;
    let mut groups = Vec::new();
    if body[0] == VERSION_GROUPS {
        let u16_at = |at: usize| {
            body.get(at..at + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or(WireError::Groups)
        };
        let count = u16_at(at)?;
        at += 2;
        for _ in 0..count {
            let len = u16_at(at)?;
            at += 2;
            if body.len() < at + len {
                return Err(WireError::Groups);
            }
            let group =
                ByteString::try_from(body.slice(at..at + len)).map_err(|_| WireError::Groups)?;
            groups.push(group);
            at += len;
        }
    }
    let mut publish = decode_publish(0, &body.slice(at..)).map_err(|_| WireError::Publish)?;
    // The packet id was the log format's placeholder; this node's routing sets none.
    publish.packet_id = None;
    Ok((publisher, publish, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use std::time::Duration;

    fn message(qos: QoS, retain: bool, expires_at: Option<Instant>) -> Message {
        let mut properties = crate::protocol::Properties::default();
        properties.content_type = Some(ByteString::from_static("text/plain"));
        properties.message_expiry_interval = expires_at.map(|_| 60);
        Message {
            topic: ByteString::from_static("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos,
            retain,
            properties,
            publisher: ByteString::from_static("pub-1"),
            expires_at,
            origin: None,
        }
    }

    #[test]
    fn round_trip() {
        let now = Instant::now();
        for (qos, retain) in [
            (QoS::AtMostOnce, false),
            (QoS::AtLeastOnce, true),
            (QoS::ExactlyOnce, false),
        ] {
            let m = message(qos, retain, None);
            let body = encode(&m, now).unwrap();
            let (publisher, publish) = decode(&body).unwrap();
            assert_eq!(publisher, "pub-1");
            assert_eq!((publish.qos, publish.retain), (qos, retain));
            assert_eq!(publish.topic, "a/b");
            assert_eq!(&publish.payload[..], b"hello");
            assert_eq!(publish.packet_id, None);
            assert_eq!(
                publish.properties.content_type.as_deref(),
                Some("text/plain")
            );
        }
    }

    #[test]
    fn share_groups_travel_with_the_message() {
        let now = Instant::now();
        let m = message(QoS::ExactlyOnce, false, None);
        let groups = [
            ByteString::from_static("$share/g/a/+"),
            ByteString::from_static("$share/h/#"),
        ];
        let body = encode_for(&m, &groups, now).unwrap();
        assert_eq!(body[0], 2);
        let (publisher, publish, got) = decode_with_groups(&body).unwrap();
        assert_eq!(
            (publisher.as_ref(), publish.topic.as_ref()),
            ("pub-1", "a/b")
        );
        assert_eq!(got, groups);
        // Without groups: version 1, as before (the retained bucket's entries).
        let plain = encode_for(&m, &[], now).unwrap();
        assert_eq!(plain[0], 1);
        assert!(decode_with_groups(&plain).unwrap().2.is_empty());
        // Cut anywhere in the groups: an error, never a panic.
        for cut in 4..body.len() - 10 {
            let _ = decode_with_groups(&body.slice(..cut));
        }
        assert_eq!(
            decode_with_groups(&Bytes::from_static(b"\x02\x00\x00\x00\x01\x00\x09ab")),
            Err(WireError::Groups)
        );
    }

    #[test]
    fn expiry_travels_as_the_time_left() {
        let now = Instant::now();
        let m = message(QoS::AtLeastOnce, false, Some(now + Duration::from_secs(30)));
        let (_, publish) = decode(&encode(&m, now).unwrap()).unwrap();
        assert_eq!(publish.properties.message_expiry_interval, Some(30));
        let expired = message(QoS::AtLeastOnce, false, Some(now));
        assert!(encode(&expired, now + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(decode(&Bytes::from_static(b"")), Err(WireError::Short(0)));
        assert_eq!(
            decode(&Bytes::from_static(b"\x03\x00\x00")),
            Err(WireError::Version(3))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x01\x00\x09ab")),
            Err(WireError::Short(5))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x01\x00\x01\xff")),
            Err(WireError::Publisher)
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x01\x00\x00\x30")),
            Err(WireError::Publish)
        );
        for n in 0..64u8 {
            let body: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode(&Bytes::from(body));
        }
    }
}
