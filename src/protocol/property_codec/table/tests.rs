//! The property table against the specification, and every row through the codec: decoded
//! where allowed, refused where not, repeated or refused as the row says, and written back
//! byte for byte.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::property_codec::{check, decode, encoded_len, write};
use crate::protocol::Properties;

/// Table 2-4 of MQTT 5.0 as printed: identifier, name, type, packets / Will Properties.
const SPEC: &[(u8, &str, &str, &str)] = &[
    (
        1,
        "Payload Format Indicator",
        "Byte",
        "PUBLISH, Will Properties",
    ),
    (
        2,
        "Message Expiry Interval",
        "Four Byte Integer",
        "PUBLISH, Will Properties",
    ),
    (
        3,
        "Content Type",
        "UTF-8 Encoded String",
        "PUBLISH, Will Properties",
    ),
    (
        8,
        "Response Topic",
        "UTF-8 Encoded String",
        "PUBLISH, Will Properties",
    ),
    (
        9,
        "Correlation Data",
        "Binary Data",
        "PUBLISH, Will Properties",
    ),
    (
        11,
        "Subscription Identifier",
        "Variable Byte Integer",
        "PUBLISH, SUBSCRIBE",
    ),
    (
        17,
        "Session Expiry Interval",
        "Four Byte Integer",
        "CONNECT, CONNACK, DISCONNECT",
    ),
    (
        18,
        "Assigned Client Identifier",
        "UTF-8 Encoded String",
        "CONNACK",
    ),
    (19, "Server Keep Alive", "Two Byte Integer", "CONNACK"),
    (
        21,
        "Authentication Method",
        "UTF-8 Encoded String",
        "CONNECT, CONNACK, AUTH",
    ),
    (
        22,
        "Authentication Data",
        "Binary Data",
        "CONNECT, CONNACK, AUTH",
    ),
    (23, "Request Problem Information", "Byte", "CONNECT"),
    (
        24,
        "Will Delay Interval",
        "Four Byte Integer",
        "Will Properties",
    ),
    (25, "Request Response Information", "Byte", "CONNECT"),
    (
        26,
        "Response Information",
        "UTF-8 Encoded String",
        "CONNACK",
    ),
    (
        28,
        "Server Reference",
        "UTF-8 Encoded String",
        "CONNACK, DISCONNECT",
    ),
    (
        31,
        "Reason String",
        "UTF-8 Encoded String",
        "CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH",
    ),
    (
        33,
        "Receive Maximum",
        "Two Byte Integer",
        "CONNECT, CONNACK",
    ),
    (
        34,
        "Topic Alias Maximum",
        "Two Byte Integer",
        "CONNECT, CONNACK",
    ),
    (35, "Topic Alias", "Two Byte Integer", "PUBLISH"),
    (36, "Maximum QoS", "Byte", "CONNACK"),
    (37, "Retain Available", "Byte", "CONNACK"),
    (
        38,
        "User Property",
        "UTF-8 String Pair",
        "CONNECT, CONNACK, PUBLISH, Will Properties, PUBACK, PUBREC, PUBREL, PUBCOMP, \
         SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH",
    ),
    (
        39,
        "Maximum Packet Size",
        "Four Byte Integer",
        "CONNECT, CONNACK",
    ),
    (40, "Wildcard Subscription Available", "Byte", "CONNACK"),
    (41, "Subscription Identifier Available", "Byte", "CONNACK"),
    (42, "Shared Subscription Available", "Byte", "CONNACK"),
];

const CONTEXTS: [Context; Context::COUNT] = [
    Context::Connect,
    Context::Will,
    Context::ConnAck,
    Context::Publish,
    Context::Ack,
    Context::Subscribe,
    Context::SubAck,
    Context::Unsubscribe,
    Context::UnsubAck,
    Context::Disconnect,
    Context::Auth,
];

fn spec_context(packet: &str) -> Context {
    match packet {
        "CONNECT" => Context::Connect,
        "Will Properties" => Context::Will,
        "CONNACK" => Context::ConnAck,
        "PUBLISH" => Context::Publish,
        "PUBACK" | "PUBREC" | "PUBREL" | "PUBCOMP" => Context::Ack,
        "SUBSCRIBE" => Context::Subscribe,
        "SUBACK" => Context::SubAck,
        "UNSUBSCRIBE" => Context::Unsubscribe,
        "UNSUBACK" => Context::UnsubAck,
        "DISCONNECT" => Context::Disconnect,
        "AUTH" => Context::Auth,
        other => panic!("not a packet of table 2-4: {other}"),
    }
}

fn spec_wire(name: &str) -> WireType {
    match name {
        "Byte" => WireType::Byte,
        "Two Byte Integer" => WireType::TwoByteInteger,
        "Four Byte Integer" => WireType::FourByteInteger,
        "Variable Byte Integer" => WireType::VariableByteInteger,
        "UTF-8 Encoded String" => WireType::Utf8String,
        "Binary Data" => WireType::BinaryData,
        "UTF-8 String Pair" => WireType::Utf8StringPair,
        other => panic!("not a data type of section 1.5: {other}"),
    }
}

#[test]
fn rows_match_table_2_4() {
    assert_eq!(PROPERTIES.len(), SPEC.len());
    for (def, &(id, name, wire, packets)) in PROPERTIES.iter().zip(SPEC) {
        assert_eq!((def.id, def.name, def.wire), (id, name, spec_wire(wire)));
        let allowed = packets
            .split(", ")
            .fold(0, |set, packet| set | spec_context(packet).bit());
        assert_eq!(def.allowed, allowed, "{name}");
        assert_eq!(self::name(id), name);
    }
}

#[test]
fn only_user_property_and_subscription_identifier_repeat() {
    for def in PROPERTIES {
        let expected = match def.name {
            // 2.2.2.2 / 3.1.2.11.8 and the like: "allowed to appear multiple times".
            "User Property" => def.allowed,
            // [MQTT-3.3.4-4]: a PUBLISH to a subscriber may carry several; 3.8.2.1.2: more
            // than one in a SUBSCRIBE is a Protocol Error.
            "Subscription Identifier" => Context::Publish.bit(),
            _ => 0,
        };
        assert_eq!(def.repeats, expected, "{}", def.name);
        assert_eq!(
            field_is_list(def.id),
            Some(def.repeats != 0),
            "{}",
            def.name
        );
    }
}

#[test]
fn allowed_sets_per_packet() {
    // The variable header sections of each packet, listed independently of table 2-4.
    let cases: &[(Context, &[u8])] = &[
        (
            Context::Connect,
            &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        ),
        (Context::Will, &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]),
        (
            Context::ConnAck,
            &[
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
                0x28, 0x29, 0x2A,
            ],
        ),
        (
            Context::Publish,
            &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
        ),
        (Context::Ack, &[0x1F, 0x26]),
        (Context::Subscribe, &[0x0B, 0x26]),
        (Context::SubAck, &[0x1F, 0x26]),
        (Context::Unsubscribe, &[0x26]),
        (Context::UnsubAck, &[0x1F, 0x26]),
        (Context::Disconnect, &[0x11, 0x1C, 0x1F, 0x26]),
        (Context::Auth, &[0x15, 0x16, 0x1F, 0x26]),
    ];
    assert_eq!(cases.len(), Context::COUNT);
    for &(context, ids) in cases {
        let set = ids.iter().fold(0u64, |set, &id| set | 1 << id);
        assert_eq!(context.allowed(), set, "{context:?}");
    }
}

#[test]
fn rules_fit_wire_types() {
    for def in PROPERTIES {
        let fits = match def.rule {
            Rule::Any => true,
            Rule::ZeroOrOne(_) => def.wire == WireType::Byte,
            Rule::NonZero(_) => matches!(
                def.wire,
                WireType::TwoByteInteger
                    | WireType::FourByteInteger
                    | WireType::VariableByteInteger
            ),
            Rule::TopicName => def.wire == WireType::Utf8String,
        };
        assert!(fits, "{}: {:?} on {:?}", def.name, def.rule, def.wire);
    }
}

/// A valid value of each wire type, as written.
fn sample(wire: WireType) -> &'static [u8] {
    match wire {
        WireType::Byte => &[1],
        WireType::TwoByteInteger => &[0x01, 0x02],
        WireType::FourByteInteger => &[0, 0x01, 0x02, 0x03],
        WireType::VariableByteInteger => &[0x81, 0x01],
        WireType::Utf8String => &[0, 3, b'a', b'/', b'b'],
        WireType::BinaryData => &[0, 2, 0xFF, 0x00],
        WireType::Utf8StringPair => &[0, 1, b'k', 0, 2, b'v', b'w'],
    }
}

fn decode_list(context: Context, list: &[u8]) -> Result<Properties, DecodeError> {
    let mut bytes = BytesMut::new();
    wire::put_var_int(&mut bytes, list.len());
    bytes.extend_from_slice(list);
    let mut r = Reader::new(bytes.freeze());
    let p = decode(&mut r, context)?;
    assert!(r.is_empty());
    Ok(p)
}

fn encode_list(p: &Properties, context: Context) -> Result<Bytes, EncodeError> {
    check(p, context)?;
    let mut buf = BytesMut::new();
    write(p, &mut buf);
    assert_eq!(buf.len(), encoded_len(p));
    // Drop the one-byte length: every list here is short.
    Ok(buf.freeze().slice(1..))
}

#[test]
fn every_row_round_trips_where_allowed_and_only_there() {
    for def in PROPERTIES {
        let one = [&[def.id][..], sample(def.wire)].concat();
        // Authentication Data needs its method beside it; the method is written first.
        let with = |list: &[u8]| match def.id {
            0x16 => [&[0x15, 0, 1, b'm'][..], list].concat(),
            _ => list.to_vec(),
        };
        let method = if def.id == 0x16 { 1 << 0x15 } else { 0 };
        for context in CONTEXTS {
            if def.allowed & context.bit() == 0 {
                assert_eq!(
                    decode_list(context, &one),
                    Err(DecodeError::PropertyNotAllowed {
                        property: def.name,
                        packet: context.packet(),
                    }),
                    "{} in {context:?}",
                    def.name
                );
                continue;
            }
            let list = with(&one);
            let p = decode_list(context, &list)
                .unwrap_or_else(|e| panic!("{} in {context:?}: {e}", def.name));
            assert_eq!(present(&p), 1 << def.id | method, "{}", def.name);
            assert_eq!(encode_list(&p, context).unwrap(), list, "{}", def.name);
            for elsewhere in CONTEXTS {
                if def.allowed & elsewhere.bit() == 0 {
                    assert!(matches!(
                        encode_list(&p, elsewhere),
                        Err(EncodeError::Invalid(DecodeError::PropertyNotAllowed { .. }))
                    ));
                }
            }
            let twice = with(&[&one[..], &one].concat());
            match decode_list(context, &twice) {
                Ok(p) if def.repeats & context.bit() != 0 => {
                    assert_eq!(encode_list(&p, context).unwrap(), twice, "{}", def.name);
                    for elsewhere in CONTEXTS {
                        let once_only = def.allowed & !def.repeats & elsewhere.bit() != 0;
                        if once_only {
                            assert_eq!(
                                encode_list(&p, elsewhere),
                                Err(EncodeError::Invalid(DecodeError::DuplicateProperty(
                                    def.name
                                )))
                            );
                        }
                    }
                }
                Err(DecodeError::DuplicateProperty(name)) if def.repeats & context.bit() == 0 => {
                    assert_eq!(name, def.name)
                }
                other => panic!("{} twice in {context:?}: {other:?}", def.name),
            }
        }
    }
}
