//! Table tests for SUBSCRIBE and SUBACK.

use super::*;
use crate::protocol::codec::testing::*;
use crate::protocol::{Packet, PacketId};
use ProtocolVersion::*;

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

fn subscribe(filters: Vec<(&str, SubscriptionOptions)>) -> Subscribe {
    Subscribe {
        packet_id: PacketId::new(10).unwrap(),
        properties: Properties::default(),
        filters: filters.into_iter().map(|(f, o)| (f.into(), o)).collect(),
    }
}

#[test]
fn spec_example_v3_1_1() {
    // 3.8.3.1: "a/b" at QoS 1 and "c/d" at QoS 2, Packet Identifier 10.
    let s = subscribe(vec![
        ("a/b", options(QoS::AtLeastOnce)),
        ("c/d", options(QoS::ExactlyOnce)),
    ]);
    let bytes = [
        0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/', b'd',
        0x02,
    ];
    both_ways(&bytes, Packet::Subscribe(s), V3_1_1);
}

#[test]
fn v5_options_and_subscription_identifier() {
    let all = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::Never,
    };
    let mut s = subscribe(vec![("a/+", all), ("#", options(QoS::AtMostOnce))]);
    s.properties.subscription_identifiers = vec![128];
    let bytes = [
        0x82, 0x10, 0x00, 0x0A, 0x03, 0x0B, 0x80, 0x01, 0x00, 0x03, b'a', b'/', b'+', 0x2D, 0x00,
        0x01, b'#', 0x00,
    ];
    both_ways(&bytes, Packet::Subscribe(s.clone()), V5);
    // Before 5.0 only the QoS of the options is sent.
    assert_eq!(
        encode_one(&Packet::Subscribe(s), V3_1_1),
        [0x82, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'+', 0x01, 0x00, 0x01, b'#', 0x00]
    );
    let on_new = SubscriptionOptions {
        retain_handling: RetainHandling::OnNewSubscribe,
        ..options(QoS::ExactlyOnce)
    };
    both_ways(
        &[0x82, 0x07, 0x00, 0x0A, 0x00, 0x00, 0x01, b'x', 0x12],
        Packet::Subscribe(subscribe(vec![("x", on_new)])),
        V5,
    );
}

#[test]
fn subscribe_malformed() {
    // Reserved fixed header flags must be 0b0010.
    rejects_with(
        &[0x80, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x00],
        V3_1_1,
        0x81,
    );
    // No filter [MQTT-3.8.3-3]; an empty filter; a filter without its options byte.
    rejects_with(&[0x82, 0x02, 0x00, 0x0A], V3_1_1, 0x82);
    rejects_with(&[0x82, 0x03, 0x00, 0x0A, 0x00], V5, 0x82);
    rejects_with(&[0x82, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x00], V3_1_1, 0x8F);
    rejects_with(&[0x82, 0x05, 0x00, 0x0A, 0x00, 0x01, b'a'], V3_1_1, 0x81);
    // Packet Identifier 0.
    rejects_with(
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        V3_1_1,
        0x82,
    );
    // 3.1.1: requested QoS 3, or upper bits set [MQTT-3.8.3-4].
    rejects_with(
        &[0x82, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x03],
        V3_1_1,
        0x81,
    );
    rejects_with(
        &[0x82, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x04],
        V3_1_1,
        0x81,
    );
    // 5.0: reserved bits [MQTT-3.8.3-5], QoS 3, Retain Handling 3.
    rejects_with(
        &[0x82, 0x07, 0x00, 0x0A, 0x00, 0x00, 0x01, b'a', 0x40],
        V5,
        0x81,
    );
    rejects_with(
        &[0x82, 0x07, 0x00, 0x0A, 0x00, 0x00, 0x01, b'a', 0x03],
        V5,
        0x82,
    );
    rejects_with(
        &[0x82, 0x07, 0x00, 0x0A, 0x00, 0x00, 0x01, b'a', 0x30],
        V5,
        0x82,
    );
    // Subscription Identifier twice, or 0; a property SUBSCRIBE does not allow.
    rejects_with(
        &[
            0x82, 0x0B, 0x00, 0x0A, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
        ],
        V5,
        0x82,
    );
    rejects_with(
        &[
            0x82, 0x09, 0x00, 0x0A, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00,
        ],
        V5,
        0x82,
    );
    rejects_with(
        &[
            0x82, 0x09, 0x00, 0x0A, 0x02, 0x01, 0x00, 0x00, 0x01, b'a', 0x00,
        ],
        V5,
        0x81,
    );
    // A Subscription Identifier that is not in its shortest form.
    rejects_with(
        &[
            0x82, 0x0A, 0x00, 0x0A, 0x03, 0x0B, 0x81, 0x00, 0x00, 0x01, b'a', 0x00,
        ],
        V5,
        0x81,
    );
}

#[test]
fn suback_both_versions() {
    let id = PacketId::new(10).unwrap();
    let codes = vec![
        ReasonCode::GRANTED_QOS_1,
        ReasonCode::GRANTED_QOS_0,
        ReasonCode::UNSPECIFIED_ERROR,
    ];
    let v3 = SubAck {
        packet_id: id,
        properties: Properties::default(),
        reason_codes: codes.clone(),
    };
    both_ways(
        &[0x90, 0x05, 0x00, 0x0A, 0x01, 0x00, 0x80],
        Packet::SubAck(v3),
        V3_1_1,
    );
    let mut v5 = SubAck {
        packet_id: id,
        properties: Properties::default(),
        reason_codes: codes,
    };
    v5.reason_codes.push(ReasonCode::NOT_AUTHORIZED);
    v5.properties.reason_string = Some("x".into());
    let bytes = [
        0x90, 0x0B, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, b'x', 0x01, 0x00, 0x80, 0x87,
    ];
    both_ways(&bytes, Packet::SubAck(v5.clone()), V5);
    // Every 5.0 failure code becomes 0x80 before 5.0.
    assert_eq!(
        encode_one(&Packet::SubAck(v5), V3_1_1),
        [0x90, 0x06, 0x00, 0x0A, 0x01, 0x00, 0x80, 0x80]
    );
}

#[test]
fn suback_malformed() {
    rejects_with(&[0x90, 0x02, 0x00, 0x0A], V3_1_1, 0x82);
    rejects_with(&[0x90, 0x03, 0x00, 0x0A, 0x03], V3_1_1, 0x81);
    rejects_with(&[0x90, 0x03, 0x00, 0x0A, 0x87], V3_1_1, 0x81);
    rejects_with(&[0x90, 0x04, 0x00, 0x0A, 0x00, 0x11], V5, 0x81);
    rejects_with(&[0x91, 0x03, 0x00, 0x0A, 0x00], V3_1_1, 0x81);
}

#[test]
fn refused_on_encode() {
    assert!(matches!(
        refuses(&Packet::Subscribe(subscribe(vec![])), V3_1_1),
        EncodeError::Invalid(_)
    ));
    assert!(matches!(
        refuses(
            &Packet::Subscribe(subscribe(vec![("", options(QoS::AtMostOnce))])),
            V5
        ),
        EncodeError::Invalid(_)
    ));
    let mut s = subscribe(vec![("a", options(QoS::AtMostOnce))]);
    s.properties.subscription_identifiers = vec![1, 2];
    assert!(matches!(
        refuses(&Packet::Subscribe(s.clone()), V5),
        EncodeError::Invalid(DecodeError::DuplicateProperty(_))
    ));
    s.properties.subscription_identifiers = vec![268_435_456];
    assert!(matches!(
        refuses(&Packet::Subscribe(s), V5),
        EncodeError::OutOfRange(_)
    ));
    let empty = SubAck {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        reason_codes: vec![],
    };
    assert!(matches!(
        refuses(&Packet::SubAck(empty), V3_1_1),
        EncodeError::Invalid(_)
    ));
    let bad = SubAck {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::NO_MATCHING_SUBSCRIBERS],
    };
    assert!(matches!(
        refuses(&Packet::SubAck(bad), V5),
        EncodeError::Invalid(_)
    ));
}
