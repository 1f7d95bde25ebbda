//! Checkpoints against the journal: a finished one shrinks the log and keeps the state, one
//! cut short by a crash is ignored, and logs written by the older one-go checkpoints still
//! recover.

use super::*;

#[test]
fn checkpoint_shrinks_the_log_and_keeps_the_state() {
    let mut h = Harness::new(16);
    for d in 0..3 {
        let id = format!("dev{d}");
        h.connect(&id, 300);
        h.subscribe(&id, "t/#", QoS::AtLeastOnce);
    }
    h.disconnect("dev2");
    h.publish("t/r", "kept", QoS::AtLeastOnce, true);
    for i in 0..200 {
        let out = h.publish("t/x", &format!("m{i}"), QoS::AtLeastOnce, false);
        // dev0 acknowledges everything; dev1 nothing (its window fills, then it queues).
        for (_, _, pid) in payloads(&out) {
            h.ack("dev0", Packet::PubAck(ack(pid.unwrap())));
        }
    }
    let before = h.describe();
    let segments_before = h.journal.segment_count();
    assert!(h.broker.checkpoint_due());
    let report = h.broker.checkpoint(h.now).unwrap();
    assert_eq!(report.sessions, 3);
    assert!(
        h.journal.segment_count() < segments_before / 2,
        "{report:?}"
    );
    assert_eq!(h.describe(), before);
    h.publish("t/x", "after", QoS::AtLeastOnce, false);
    let after = h.describe();
    h.crash_and_restart();
    assert_eq!(h.describe(), after);
    // Queued messages read back from their checkpoint copies.
    let (_, resume) = h.connect("dev2", 300);
    let got = payloads(&resume);
    let first: Vec<_> = got.iter().take(2).map(|p| p.0.as_str()).collect();
    assert_eq!(first, ["kept", "m0"]);
    assert_eq!(got.len(), 10); // the receive maximum of the harness
}

#[test]
fn a_checkpoint_cut_short_by_a_crash_is_ignored() {
    let mut h = Harness::new(16);
    h.connect("dev", 300);
    h.subscribe("dev", "t", QoS::AtLeastOnce);
    h.disconnect("dev");
    for i in 0..50 {
        h.publish("t", &format!("m{i}"), QoS::AtLeastOnce, false);
    }
    let before = h.describe();
    let mut records = h.journal.records.borrow().clone();
    h.broker.checkpoint(h.now).unwrap();
    // A crash in the middle of the checkpoint: the old segments are all still there (they
    // go only after END), followed by the first part of the checkpoint.
    records.extend(h.journal.records.borrow().clone());
    let begin = records
        .iter()
        .find(|(_, (k, _))| *k == kind::CHECKPOINT_BEGIN)
        .map(|(p, _)| *p)
        .unwrap();
    let cut = MemJournal::new(16);
    let mut writer = cut.clone();
    for (pos, (k, body)) in records.iter() {
        if *pos > begin && *k == kind::SNAPSHOT {
            break;
        }
        writer.append(*k, body).unwrap();
    }
    h.restart_from(cut.clone());
    assert_eq!(h.describe(), before);
    // The restart wrote ABORT, and the next restart is still right.
    assert!(cut
        .records
        .borrow()
        .values()
        .any(|(k, _)| *k == kind::CHECKPOINT_ABORT));
    h.publish("t", "later", QoS::AtLeastOnce, false);
    let after = h.describe();
    h.crash_and_restart();
    assert_eq!(h.describe(), after);
}

#[test]
fn queue_references_take_eight_bytes_per_message_per_session() {
    // 100 offline sessions share 50 messages: the table holds 50 entries, each queue 50
    // eight-byte references.
    let mut h = Harness::new(1 << 16);
    for d in 0..100 {
        let id = format!("dev{d}");
        h.connect(&id, 300);
        h.subscribe(&id, "fleet/all", QoS::AtLeastOnce);
        h.disconnect(&id);
    }
    for i in 0..50 {
        h.publish("fleet/all", &format!("m{i}"), QoS::AtLeastOnce, false);
    }
    assert_eq!(h.broker.stored_messages(), 50);
    let message_records = h
        .journal
        .records
        .borrow()
        .values()
        .filter(|(k, _)| *k == kind::MESSAGE)
        .count();
    assert_eq!(message_records, 50, "each message is written once");
    assert_eq!(std::mem::size_of::<crate::session::state::Queued>(), 8);
}

/// A log as the checkpoints before stepwise ones wrote it: BEGIN, copies, SNAPSHOTs,
/// WILL, ORIGINS, END in one go, the segments before BEGIN's deleted (or, cut by a crash,
/// all still there and no END).
#[test]
fn a_log_written_by_one_go_checkpoints_still_recovers() {
    use crate::broker::journal::{MessageRecord, Record, Snapshot, SnapshotEntry, Target};
    let publish = crate::broker::journal::encode_publish(&Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::from_static(b"kept"),
    });
    let message = |targets: Vec<Target>| {
        Record::Message(MessageRecord {
            seq: 5,
            origin: None,
            expires_ms: 0,
            publisher: "p".into(),
            payload_len: 4,
            targets,
            publish: publish.clone(),
        })
    };
    let target = Target {
        sid: 1,
        qos: QoS::AtLeastOnce,
        retain: false,
        ids: vec![],
    };
    let before = [
        Record::SessionOpen {
            sid: 1,
            client_id: "old".into(),
            expiry_secs: 300,
        },
        Record::Subscribe {
            sid: 1,
            filter: "t".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            identifier: 0,
        },
        message(vec![target]),
        Record::Will {
            sid: 1,
            delay_secs: 0,
            publish: publish.clone(),
        },
    ];
    let checkpoint = [
        Record::CheckpointBegin {
            id: 1,
            next_seq: 6,
            next_sid: 2,
        },
        message(vec![]),
        Record::Snapshot(Snapshot {
            sid: 1,
            client_id: "old".into(),
            expiry_secs: 300,
            offline_ms: 0,
            subscriptions: vec![(
                "t".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
                0,
            )],
            entries: vec![SnapshotEntry {
                seq: 5,
                qos: QoS::AtLeastOnce,
                retain: false,
                in_flight: None,
                ids: vec![],
            }],
            awaiting_release: vec![],
            username: None,
        }),
        Record::Will {
            sid: 1,
            delay_secs: 0,
            publish: publish.clone(),
        },
        Record::Origins(vec![]),
    ];
    let expected = "old expiry=300s subs=[\"t:1\"] window=[] queue=[5] rel=[]\nretained=[]";
    for whole in [true, false] {
        let journal = MemJournal::new(4);
        let mut writer = journal.clone();
        let mut write = |record: &Record| {
            let mut body = bytes::BytesMut::new();
            record.encode(&mut body);
            writer.append(record.kind(), &body).unwrap();
        };
        before.iter().for_each(&mut write);
        checkpoint.iter().for_each(&mut write);
        if whole {
            write(&Record::CheckpointEnd { id: 1 });
            writer.remove_segments_before(1).unwrap();
        }
        let mut h = Harness::new(4);
        h.restart_from(journal);
        assert_eq!(h.describe(), expected, "whole: {whole}");
        assert_eq!(h.broker.wills.logged_count(), 1);
        let (_, resume) = h.connect("old", 300);
        assert_eq!(payloads(&resume)[0].0, "kept");
    }
}
