//! Every record round-trips through its codec, and no truncation of a body panics.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{PacketId, Publish, QoS, RetainHandling, SubscriptionOptions};
use crate::session::state::{Origin, Outbound};

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
        Record::SessionOwner {
            sid: 7,
            username: Some("alice".into()),
        },
        Record::SessionOwner {
            sid: 7,
            username: Some("".into()),
        },
        Record::SessionOwner {
            sid: 7,
            username: None,
        },
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
            username: None,
        }),
        Record::Snapshot(Snapshot {
            sid: 8,
            client_id: "dev-2".into(),
            expiry_secs: 300,
            offline_ms: 0,
            subscriptions: vec![],
            entries: vec![],
            awaiting_release: vec![],
            username: Some("bob".into()),
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
        Record::Qos2Routing(Routing {
            sid: 7,
            packet_id: 9,
            origin_seq: 100,
            expires_ms: 0,
            publisher: "dev-1".into(),
            publish: publish.clone(),
        }),
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

/// A SNAPSHOT without an owner is written as before the field existed, so a log written
/// then reads the same; with one, the field comes last.
#[test]
fn a_snapshot_owner_is_an_optional_last_field() {
    let mut snapshot = Snapshot {
        sid: 1,
        client_id: "c".into(),
        expiry_secs: 1,
        offline_ms: 0,
        subscriptions: vec![],
        entries: vec![],
        awaiting_release: vec![],
        username: None,
    };
    let mut without = BytesMut::new();
    Record::Snapshot(snapshot.clone()).encode(&mut without);
    // sid, client id, expiry, offline, three empty counts: the layout the field came after.
    assert_eq!(without.len(), 8 + 4 + 1 + 8 + 8 + 4 + 4 + 4);
    snapshot.username = Some("u".into());
    let mut with = BytesMut::new();
    Record::Snapshot(snapshot.clone()).encode(&mut with);
    assert_eq!(&with[..without.len()], &without[..]);
    assert_eq!(&with[without.len()..], &[1, 1, 0, 0, 0, b'u']);
    let bad_flag = [&without[..], &[2]].concat();
    assert!(Record::decode(kind::SNAPSHOT, &Bytes::from(bad_flag)).is_err());
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
