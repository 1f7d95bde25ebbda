//! The Link's acknowledgements and the conditions that release them, driven with the
//! fake engine of `tests.rs`: held until the release is carried out, synced when routed to
//! another core at QoS 1/2, refused when a core refused to store, the QoS 2 id journaled
//! just before PUBREC.

use std::time::Instant;

use super::tests::{link, publish, read, steps as poll_all, violation, Fake};
use super::*;
use crate::protocol::{Ack, Properties, QoS, ReasonCode};

fn sent_acks(steps: &[Step]) -> Vec<(PacketId, ReasonCode)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(Packet::PubAck(a) | Packet::PubRec(a)) => Some((a.packet_id, a.reason_code)),
            _ => None,
        })
        .collect()
}

fn id() -> PacketId {
    PacketId::new(7).unwrap()
}

#[test]
fn an_ack_leaves_only_once_the_release_is_carried_out() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let steps = read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        Instant::now(),
    );
    assert!(sent_acks(&steps).is_empty(), "held: {steps:?}");
    assert!(
        matches!(steps[..], [Step::Release { sync_peers: false }]),
        "{steps:?}"
    );
    link.release(&mut engine);
    let released = poll_all(&mut link);
    assert_eq!(sent_acks(&released), [(id(), ReasonCode::SUCCESS)]);
}

#[test]
fn an_ack_of_a_message_routed_to_another_core_waits_for_the_sync() {
    let mut engine = Fake {
        to_other_core: true,
        ..Fake::default()
    };
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let now = Instant::now();
    let steps = read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        now,
    );
    assert!(
        matches!(
            steps[..],
            [Step::Apply(_), Step::Release { sync_peers: true }]
        ),
        "{steps:?}"
    );
    link.release(&mut engine);
    poll_all(&mut link);
    // QoS 0 to another core needs no sync (and has no ack).
    let steps = read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::AtMostOnce, None)],
        now,
    );
    assert!(matches!(steps[..], [Step::Apply(_)]), "{steps:?}");
}

#[test]
fn a_qos2_id_is_journaled_just_before_its_pubrec_leaves() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::ExactlyOnce, None)],
        Instant::now(),
    );
    assert!(!engine.calls.iter().any(|c| c.starts_with("journal_qos2")));
    link.release(&mut engine);
    assert_eq!(
        engine.calls.last().map(String::as_str),
        Some("journal_qos2 7")
    );
    assert_eq!(
        sent_acks(&poll_all(&mut link)),
        [(id(), ReasonCode::SUCCESS)]
    );
}

#[test]
fn refusals_since_the_read_refuse_its_acks_with_0x97_in_v5() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let packets = vec![
        publish("a", QoS::AtLeastOnce, None),
        publish("b", QoS::ExactlyOnce, None),
    ];
    read(&mut link, &mut engine, packets, Instant::now());
    engine.refused = true;
    link.release(&mut engine);
    let acks = sent_acks(&poll_all(&mut link));
    assert_eq!(
        acks,
        [
            (id(), ReasonCode::QUOTA_EXCEEDED),
            (id(), ReasonCode::QUOTA_EXCEEDED)
        ]
    );
    assert!(engine.calls.contains(&"refuse_qos2 7".to_string()));
    assert!(!engine.calls.iter().any(|c| c.starts_with("journal_qos2")));
    assert!(link.take_end().is_none(), "a v5 connection goes on");
}

#[test]
fn refusals_since_the_read_end_a_3_1_1_connection_unacknowledged() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V3_1_1, &mut engine);
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        Instant::now(),
    );
    engine.refused = true;
    link.release(&mut engine);
    assert!(sent_acks(&poll_all(&mut link)).is_empty());
    assert!(matches!(
        link.take_end(),
        Some(End::StoreFull(StoreClosed::DiskFull))
    ));
}

#[test]
fn a_closed_store_refuses_before_routing() {
    let mut engine = Fake {
        closed: Some(StoreClosed::StoredBytes),
        ..Fake::default()
    };
    let mut v5 = link(ProtocolVersion::V5, &mut engine);
    engine.calls.clear();
    read(
        &mut v5,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        Instant::now(),
    );
    assert_eq!(engine.calls, ["count_refused"], "not routed");
    v5.release(&mut engine);
    let steps = poll_all(&mut v5);
    assert_eq!(sent_acks(&steps), [(id(), ReasonCode::QUOTA_EXCEEDED)]);
    let [Step::Send(Packet::PubAck(Ack { properties, .. }))] = &steps[..] else {
        panic!("{steps:?}");
    };
    assert!(properties
        .reason_string
        .as_deref()
        .unwrap()
        .contains("max_stored_bytes"));
    let mut v3 = link(ProtocolVersion::V3_1_1, &mut engine);
    read(
        &mut v3,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        Instant::now(),
    );
    assert!(matches!(
        v3.take_end(),
        Some(End::StoreFull(StoreClosed::StoredBytes))
    ));
}

#[test]
fn a_suback_waits_for_the_sync_and_comes_before_the_retained_messages() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: id(),
        properties: Properties::default(),
        filters: vec![("a".into(), Default::default())],
    });
    let steps = read(&mut link, &mut engine, vec![subscribe], Instant::now());
    assert!(
        matches!(
            steps[..],
            [
                Step::Apply(_),
                Step::SyncPeers,
                Step::Send(Packet::SubAck(_)),
                Step::Apply(_)
            ]
        ),
        "{steps:?}"
    );
}

#[test]
fn acks_of_a_read_are_released_even_when_a_later_packet_ends_it() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let packets = vec![
        publish("a", QoS::AtLeastOnce, None),
        publish("", QoS::AtMostOnce, None),
    ];
    let steps = read(&mut link, &mut engine, packets, Instant::now());
    assert!(matches!(steps[..], [Step::Release { .. }]));
    link.release(&mut engine);
    assert_eq!(
        sent_acks(&poll_all(&mut link)),
        [(id(), ReasonCode::SUCCESS)]
    );
    assert_eq!(violation(&mut link).0, ReasonCode::PROTOCOL_ERROR);
}

/// A PUBLISH the ACL refuses goes nowhere: v5 is told 0x87 at QoS 1 and 2 (no QoS 2 state
/// is kept), 3.1.1 gets its plain acknowledgement, QoS 0 is dropped.
#[test]
fn a_publish_the_acl_refuses_is_acknowledged_and_dropped() {
    for (version, code) in [
        (ProtocolVersion::V5, ReasonCode::NOT_AUTHORIZED),
        (ProtocolVersion::V3_1_1, ReasonCode::SUCCESS),
    ] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut engine = Fake {
                denied: Some("a"),
                ..Fake::default()
            };
            let mut link = link(version, &mut engine);
            let mut steps = read(
                &mut link,
                &mut engine,
                vec![publish("a", qos, None)],
                Instant::now(),
            );
            link.release(&mut engine);
            steps.extend(poll_all(&mut link));
            let expected: &[_] = match qos {
                QoS::AtMostOnce => &[],
                _ => &[(id(), code)],
            };
            assert_eq!(sent_acks(&steps), expected, "{version:?} {qos:?}");
            assert!(
                !engine.calls.iter().any(|c| c.starts_with("publish")),
                "{:?}",
                engine.calls
            );
            assert_eq!(engine.awaiting, 0, "no QoS 2 state kept");
        }
    }
}
