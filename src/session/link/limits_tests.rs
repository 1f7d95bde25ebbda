//! The connection's own limits driven through the Link with the fake engine of `tests.rs`:
//! a PUBLISH over `max_publish_rate` is dropped (v5 QoS 1/2 told 0x97, 3.1.1 QoS 1/2
//! disconnected), a topic deeper than `max_topic_levels` ends the connection with 0x90, a
//! deeper filter gets 0x8F in its place in the SUBACK.

use std::time::{Duration, Instant};

use super::tests::{link, publish, read, violation, Fake};
use super::*;
use crate::protocol::{QoS, ReasonCode, SubAck};

fn acks(steps: &[Step]) -> Vec<ReasonCode> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(Packet::PubAck(a) | Packet::PubRec(a)) => Some(a.reason_code),
            _ => None,
        })
        .collect()
}

/// Carries out a read's steps as the driver would, returning the packets sent.
fn drive(link: &mut Link, engine: &mut Fake, steps: Vec<Step>) -> Vec<Step> {
    let mut out = Vec::new();
    for step in steps {
        if let Step::Release { .. } = step {
            link.release(engine);
            out.extend(std::iter::from_fn(|| link.poll_step()));
        } else {
            out.push(step);
        }
    }
    out
}

fn published(engine: &Fake) -> usize {
    engine
        .calls
        .iter()
        .filter(|c| c.starts_with("publish "))
        .count()
}

#[test]
fn v5_publishes_over_the_rate_are_dropped_and_told_0x97() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    link.set_limits(LinkLimits::new(2, 128));
    let now = Instant::now();
    let packets = vec![
        publish("a", QoS::AtLeastOnce, None),
        publish("a", QoS::AtMostOnce, None),
        publish("a", QoS::AtLeastOnce, None),
        publish("a", QoS::AtMostOnce, None),
    ];
    let steps = read(&mut link, &mut engine, packets, now);
    let sent = drive(&mut link, &mut engine, steps);
    assert_eq!(published(&engine), 2, "the burst of two, then nothing");
    assert_eq!(
        acks(&sent),
        vec![ReasonCode::SUCCESS, ReasonCode::QUOTA_EXCEEDED]
    );
    assert!(!link.is_ending());
    // A second later the rate admits two more.
    let later = now + Duration::from_secs(1);
    let packets = vec![
        publish("a", QoS::AtLeastOnce, None),
        publish("a", QoS::AtLeastOnce, None),
        publish("a", QoS::ExactlyOnce, None),
    ];
    let steps = read(&mut link, &mut engine, packets, later);
    let sent = drive(&mut link, &mut engine, steps);
    assert_eq!(published(&engine), 4);
    assert_eq!(
        acks(&sent),
        vec![
            ReasonCode::SUCCESS,
            ReasonCode::SUCCESS,
            ReasonCode::QUOTA_EXCEEDED
        ]
    );
    assert_eq!(engine.awaiting, 0, "a refused QoS 2 id awaits no PUBREL");
    // The refusals are codes a v5 PUBACK/PUBREC may carry (table 3-4).
    for step in sent {
        if let Step::Send(packet) = step {
            let mut out = bytes::BytesMut::new();
            crate::protocol::encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        }
    }
}

#[test]
fn v3_qos0_over_the_rate_is_dropped_and_qos1_disconnects() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V3_1_1, &mut engine);
    link.set_limits(LinkLimits::new(1, 128));
    let now = Instant::now();
    let packets = vec![
        publish("a", QoS::AtMostOnce, None),
        publish("a", QoS::AtMostOnce, None),
    ];
    read(&mut link, &mut engine, packets, now);
    assert_eq!(published(&engine), 1);
    assert!(!link.is_ending(), "QoS 0 is dropped quietly");
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::AtLeastOnce, None)],
        now,
    );
    assert_eq!(published(&engine), 1);
    let (code, why) = violation(&mut link);
    assert_eq!(code, ReasonCode::MESSAGE_RATE_TOO_HIGH, "{why}");
}

#[test]
fn a_topic_deeper_than_max_topic_levels_ends_the_connection_with_0x90() {
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut engine = Fake::default();
        let mut link = link(version, &mut engine);
        link.set_limits(LinkLimits::new(0, 3));
        let now = Instant::now();
        let packets = vec![
            publish("a/b/c", QoS::AtMostOnce, None),
            publish("a/b/c/d", QoS::AtMostOnce, None),
        ];
        read(&mut link, &mut engine, packets, now);
        assert_eq!(published(&engine), 1);
        let (code, _) = violation(&mut link);
        assert_eq!(code, ReasonCode::TOPIC_NAME_INVALID);
    }
}

#[test]
fn a_filter_deeper_than_max_topic_levels_is_refused_in_its_place() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    link.set_limits(LinkLimits::new(0, 2));
    let id = PacketId::new(3).unwrap();
    let mut subscribe = Subscribe::one(id, "a/b/c", QoS::AtLeastOnce);
    let options = subscribe.filters[0].1;
    subscribe.filters.push(("a/+".into(), options));
    let steps = read(
        &mut link,
        &mut engine,
        vec![Packet::Subscribe(subscribe)],
        Instant::now(),
    );
    let codes: Vec<Vec<ReasonCode>> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(Packet::SubAck(SubAck { reason_codes, .. })) => Some(reason_codes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![vec![
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1
        ]]
    );
    // Every filter too deep: the engine is not asked at all.
    let steps = read(
        &mut link,
        &mut engine,
        vec![Packet::Subscribe(Subscribe::one(
            id,
            "x/y/z",
            QoS::AtMostOnce,
        ))],
        Instant::now(),
    );
    assert!(
        matches!(&steps[..], [Step::Send(Packet::SubAck(a))] if a.reason_codes == vec![ReasonCode::TOPIC_FILTER_INVALID]),
        "{steps:?}"
    );
    assert!(!link.is_ending());
}
