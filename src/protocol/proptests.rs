//! Property tests over the whole codec: arbitrary valid packets of every type, for all three
//! versions, survive encode -> decode unchanged with `encoded_len` exact and every strict
//! prefix reported incomplete; arbitrary and mutated bytes never make the decoder panic and
//! whatever they decode to round-trips (the fuzz target's checks, see `fuzzing`).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::codec::{ack, connack, control, subscribe, unsubscribe};
use super::property_codec::{restrict, Context};
use super::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Any UTF-8 without U+0000, non-ASCII included.
fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /_.é€😀-]{0,12}".prop_map(ByteString::from)
}

/// A topic name: not empty, no wildcards.
fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/$é]{1,12}".prop_map(ByteString::from)
}

/// A topic filter as far as the codec cares: not empty (level syntax is not its business).
fn topic_filter() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/+#$]{1,12}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Every property with a valid value, each present half of the time; `restrict` then keeps
/// those a packet allows.
fn all_properties() -> BoxedStrategy<Properties> {
    let flag = || option::of(0u8..=1);
    let first = (
        flag(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
        option::of(binary()),
        flag(),
    )
        .boxed();
    let second = (
        option::of(any::<u32>()),
        flag(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1..=u16::MAX),
        option::of(any::<u16>()),
        option::of(1..=u16::MAX),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1..=u32::MAX),
    )
        .boxed();
    (first, second, (flag(), flag(), flag()))
        .prop_map(|(a, b, c)| {
            PropertyValues {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: a.9,
                authentication_data: a.10,
                request_problem_information: a.11,
                will_delay_interval: b.0,
                request_response_information: b.1,
                response_information: b.2,
                server_reference: b.3,
                reason_string: b.4,
                receive_maximum: b.5,
                topic_alias_maximum: b.6,
                topic_alias: b.7,
                maximum_qos: b.8,
                retain_available: b.9,
                user_properties: b.10,
                maximum_packet_size: b.11,
                wildcard_subscription_available: c.0,
                subscription_identifier_available: c.1,
                shared_subscription_available: c.2,
            }
            .into()
        })
        .boxed()
}

/// Properties for `context`: often none at all, which takes the short forms.
fn properties(context: Context) -> BoxedStrategy<Properties> {
    prop_oneof![1 => Just(Properties::default()), 2 => all_properties().prop_map(move |p| restrict(p, context))].boxed()
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(ReasonCode)
}

fn connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(Context::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        properties(Context::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                let mut c = Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                };
                if !version.is_v5() {
                    c.properties = Properties::default();
                    if let Some(will) = &mut c.will {
                        will.properties = Properties::default();
                    }
                    // [MQTT-3.1.2-22]: no Password without a User Name before 5.0.
                    if c.username.is_none() {
                        c.password = None;
                    }
                }
                Packet::Connect(Box::new(c))
            },
        )
        .boxed()
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        reason(connack::REASON_CODES),
        properties(Context::ConnAck),
    )
        .prop_map(move |(sp, code, properties)| {
            let mut c = ConnAck {
                session_present: sp,
                reason_code: code,
                properties,
            };
            if !version.is_v5() {
                // Only the codes that have a 3.1.1 return code survive the trip.
                c.reason_code =
                    ReasonCode::from_v3_connack(code.to_v3_connack()).unwrap_or_default();
                c.properties = Properties::default();
            }
            c.session_present &= c.reason_code == ReasonCode::SUCCESS;
            Packet::ConnAck(c)
        })
        .boxed()
}

fn publish(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let topic = prop_oneof![4 => topic_name(), 1 => Just(ByteString::new())];
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        properties(Context::Publish),
        binary(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, id, mut properties, payload)| {
                if !version.is_v5() {
                    properties = Properties::default();
                }
                let mut topic = topic;
                if topic.is_empty() {
                    if version.is_v5() {
                        properties.topic_alias.get_or_insert(1);
                    } else {
                        topic = "t".into();
                    }
                }
                let at_most_once = qos == QoS::AtMostOnce;
                let packet_id = if at_most_once { None } else { Some(id) };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id,
                    properties,
                    payload,
                })
            },
        )
        .boxed()
}

fn ack(
    version: ProtocolVersion,
    codes: &'static [u8],
    make: fn(Ack) -> Packet,
) -> BoxedStrategy<Packet> {
    (packet_id(), reason(codes), properties(Context::Ack))
        .prop_map(move |(packet_id, reason_code, properties)| {
            let a = Ack {
                packet_id,
                reason_code,
                properties,
            };
            make(if version.is_v5() {
                a
            } else {
                Ack {
                    reason_code: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                    ..a
                }
            })
        })
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let handling = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscribe),
        Just(RetainHandling::Never)
    ];
    let options = (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, rap, handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling: handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        },
    );
    (
        packet_id(),
        properties(Context::Subscribe),
        vec((topic_filter(), options), 1..4),
    )
        .prop_map(move |(packet_id, properties, filters)| {
            let properties = if version.is_v5() {
                properties
            } else {
                Properties::default()
            };
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn suback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        properties(Context::SubAck),
        vec(reason(subscribe::SUBACK_V5), 1..4),
    )
        .prop_map(move |(packet_id, properties, mut reason_codes)| {
            if !version.is_v5() {
                for code in &mut reason_codes {
                    if code.is_error() {
                        *code = ReasonCode::UNSPECIFIED_ERROR;
                    }
                }
            }
            let properties = if version.is_v5() {
                properties
            } else {
                Properties::default()
            };
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        properties(Context::Unsubscribe),
        vec(topic_filter(), 1..4),
    )
        .prop_map(move |(packet_id, properties, filters)| {
            let properties = if version.is_v5() {
                properties
            } else {
                Properties::default()
            };
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        properties(Context::UnsubAck),
        vec(reason(unsubscribe::UNSUBACK), 1..4),
    )
        .prop_map(move |(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(if version.is_v5() {
                UnsubAck {
                    packet_id,
                    properties,
                    reason_codes,
                }
            } else {
                UnsubAck {
                    packet_id,
                    properties: Properties::default(),
                    reason_codes: Vec::new(),
                }
            })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (reason(control::DISCONNECT), properties(Context::Disconnect))
        .prop_map(move |(reason_code, properties)| {
            Packet::Disconnect(if version.is_v5() {
                Disconnect {
                    reason_code,
                    properties,
                }
            } else {
                Disconnect::default()
            })
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (reason(control::AUTH), properties(Context::Auth))
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// Any valid packet of `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        ack(version, ack::PUBACK_PUBREC, Packet::PubAck),
        ack(version, ack::PUBACK_PUBREC, Packet::PubRec),
        ack(version, ack::PUBREL_PUBCOMP, Packet::PubRel),
        ack(version, ack::PUBREL_PUBCOMP, Packet::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    select(&VERSIONS[..]).prop_flat_map(|version| packet(version).prop_map(move |p| (version, p)))
}

fn encode_to_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("a valid packet encodes");
    buf.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn valid_packets_round_trip((version, packet) in versioned_packet()) {
        fuzzing::round_trip(&packet, version);
        // Every strict prefix is incomplete, not an error, and consumes nothing.
        let bytes = encode_to_vec(&packet, version);
        for cut in 0..bytes.len() {
            let mut prefix = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut prefix, version, u32::MAX), Ok(None));
            prop_assert_eq!(prefix.len(), cut);
        }
        // The size limit is exact.
        let size = bytes.len() as u32;
        prop_assert!(decode(&mut BytesMut::from(&bytes[..]), version, size).is_ok());
        let too_large = decode(&mut BytesMut::from(&bytes[..]), version, size - 1);
        prop_assert_eq!(too_large, Err(DecodeError::PacketTooLarge { size: bytes.len(), max: size - 1 }));
    }

    #[test]
    fn connects_decode_as_first_packets(packet in select(&VERSIONS[..]).prop_flat_map(connect)) {
        let Packet::Connect(expected) = &packet else { unreachable!() };
        let bytes = encode_to_vec(&packet, expected.protocol);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode_connect(&mut buf, u32::MAX), Ok(Some((**expected).clone())));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_of_packets_decodes_in_order(
        (version, packets) in select(&VERSIONS[..]).prop_flat_map(|v| (Just(v), vec(packet(v), 1..6)))
    ) {
        let mut buf = BytesMut::new();
        for p in &packets {
            encode(p, version, &mut buf).expect("a valid packet encodes");
        }
        for p in &packets {
            prop_assert_eq!(decode(&mut buf, version, u32::MAX), Ok(Some(p.clone())));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        fuzzing::check(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        (version, packet) in versioned_packet(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_to_vec(&packet, version);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        fuzzing::check(&bytes);
        fuzzing::check(&bytes[..cut.index(bytes.len() + 1)]);
    }
}

#[test]
fn every_version_has_every_packet_type() {
    // A guard on the generators: each packet type shows up for each version.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for version in VERSIONS {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let p = packet(version)
                .new_tree(&mut runner)
                .expect("a tree")
                .current();
            seen.insert(codec::first_byte(&p) >> 4);
        }
        let expected = if version.is_v5() { 15 } else { 14 };
        assert_eq!(seen.len(), expected, "{version:?}: {seen:?}");
    }
}
