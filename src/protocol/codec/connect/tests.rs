//! Table tests for CONNECT: the examples of both specifications, MQTT 3.1, and each
//! malformed case with the reason code it maps to.

use bytes::{Bytes, BytesMut};

use crate::protocol::codec::testing::*;
use crate::protocol::{
    decode_connect, Connect, DecodeError, EncodeError, LastWill, Packet, Properties,
    ProtocolVersion, QoS,
};
use ProtocolVersion::*;

const MQTT: &[u8] = &[0x00, 0x04, b'M', b'Q', b'T', b'T'];

/// A CONNECT body: protocol name, level, flags, Keep Alive 10, then `rest`.
fn body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    [name, &[level, flags, 0x00, 0x0A], rest].concat()
}

fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(LastWill {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties::default(),
    }
}

/// Client id "c", Will Topic "w", Will Payload "bye", User Name "u", Password "p".
const PAYLOAD: &[u8] = &[
    0, 1, b'c', 0, 1, b'w', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 1, b'p',
];

fn decode_first(bytes: &[u8], max: u32) -> Result<Option<Connect>, DecodeError> {
    decode_connect(&mut BytesMut::from(bytes), max)
}

#[test]
fn spec_example_v3_1_1() {
    // 3.1.2.10: flags 0xCE (User Name, Password, Will QoS 1, Will Flag, Clean Session), Keep Alive 10.
    let bytes = packet(0x10, &body(MQTT, 4, 0xCE, PAYLOAD));
    assert_eq!(decode_first(&bytes, 1024), Ok(Some(connect(V3_1_1))));
    both_ways(&bytes, Packet::Connect(Box::new(connect(V3_1_1))), V3_1_1);
}

#[test]
fn spec_example_v5() {
    // 3.1.2.12: the same flags, and a Session Expiry Interval of 10 seconds.
    let mut rest = vec![0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x01, b'c', 0x00];
    rest.extend_from_slice(&PAYLOAD[3..]);
    let bytes = packet(0x10, &body(MQTT, 5, 0xCE, &rest));
    let mut expected = connect(V5);
    expected.properties.session_expiry_interval = Some(10);
    assert_eq!(decode_first(&bytes, 1024), Ok(Some(expected.clone())));
    both_ways(&bytes, Packet::Connect(Box::new(expected)), V5);
}

#[test]
fn mqtt_3_1_and_minimal_connects() {
    let bytes = packet(
        0x10,
        &body(b"\x00\x06MQIsdp", 3, 0x02, &[0x00, 0x02, b'i', b'd']),
    );
    let expected = Connect {
        protocol: V3_1,
        clean_start: true,
        keep_alive: 10,
        client_id: "id".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    assert_eq!(decode_first(&bytes, 1024), Ok(Some(expected.clone())));
    // A CONNECT is written in its own version, whatever the connection's says.
    both_ways(&bytes, Packet::Connect(Box::new(expected)), V5);
    // Empty client id, no flags at all.
    let bytes = packet(0x10, &body(MQTT, 4, 0x00, &[0x00, 0x00]));
    assert_eq!(decode_first(&bytes, 1024).unwrap().unwrap().client_id, "");
}

#[test]
fn v5_will_properties_and_password_without_user_name() {
    let mut c = connect(V5);
    c.username = None;
    c.properties.receive_maximum = Some(20);
    c.properties.authentication_method = Some("SCRAM".into());
    c.properties.user_properties = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
    let will = c.will.as_mut().unwrap();
    will.retain = true;
    will.qos = QoS::ExactlyOnce;
    will.properties.will_delay_interval = Some(5);
    will.properties.content_type = Some("text".into());
    will.properties.response_topic = Some("r/1".into());
    let encoded = encode_one(&Packet::Connect(Box::new(c.clone())), V5);
    assert_eq!(decode_first(&encoded, 1024), Ok(Some(c)));
}

#[test]
fn incomplete_too_large_and_not_a_connect() {
    let bytes = packet(0x10, &body(MQTT, 4, 0xCE, PAYLOAD));
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode_connect(&mut buf, 1024), Ok(None), "prefix of {cut}");
        assert_eq!(buf.len(), cut);
    }
    // Too large is known from the first two bytes.
    assert_eq!(
        decode_first(&bytes[..2], 20),
        Err(DecodeError::PacketTooLarge { size: 29, max: 20 })
    );
    let err = decode_first(&[0x30, 0x00], 1024).unwrap_err();
    assert_eq!(err.reason_code().0, 0x82);
    assert!(matches!(
        decode_first(&[0x11], 1024),
        Err(DecodeError::Malformed(_))
    ));
}

fn rejects_connect(body: &[u8], reason: u8) {
    let bytes = packet(0x10, body);
    match decode_first(&bytes, u32::MAX) {
        Err(e) => assert_eq!(e.reason_code().0, reason, "{body:02X?} gave {e}"),
        Ok(c) => panic!("{body:02X?} gave {c:?}"),
    }
    // The same verdict from a connection that is already up.
    rejects_with(&bytes, V3_1_1, reason);
}

#[test]
fn protocol_name_and_level() {
    assert_eq!(
        decode_first(&packet(0x10, &body(MQTT, 6, 0x02, &[0, 0])), 1024),
        Err(DecodeError::UnsupportedProtocolVersion(6))
    );
    rejects_connect(&body(b"\x00\x06MQIsdp", 4, 0x02, &[0, 0]), 0x84);
    rejects_connect(&body(b"\x00\x04MQTX", 4, 0x02, &[0, 0]), 0x84);
    rejects_connect(&body(b"\x00\x04mqtt", 5, 0x02, &[0, 0]), 0x84);
    // A protocol name cut short.
    rejects_connect(&[0x00, 0x04, b'M', b'Q'], 0x81);
}

#[test]
fn connect_flags() {
    // Reserved flag [MQTT-3.1.2-3].
    rejects_connect(&body(MQTT, 4, 0x03, &[0, 0]), 0x81);
    // Will QoS / Will Retain without the Will Flag, Will QoS 3.
    rejects_connect(&body(MQTT, 4, 0x0A, &[0, 0]), 0x81);
    rejects_connect(&body(MQTT, 4, 0x22, &[0, 0]), 0x81);
    rejects_connect(&body(MQTT, 4, 0x1E, &[0, 0, 0, 1, b'w', 0, 0]), 0x81);
    // Password without User Name: malformed before 5.0 [MQTT-3.1.2-22], fine in 5.0.
    rejects_connect(&body(MQTT, 4, 0x42, &[0, 0, 0, 1, b'p']), 0x81);
    assert!(decode_first(
        &packet(0x10, &body(MQTT, 5, 0x42, &[0, 0, 0, 0, 1, b'p'])),
        1024
    )
    .is_ok());
    // A flag whose field is missing, and a field with no flag (trailing bytes).
    rejects_connect(&body(MQTT, 4, 0x82, &[0, 0]), 0x81);
    rejects_connect(&body(MQTT, 4, 0x02, &[0, 0, 0, 1, b'u']), 0x81);
}

#[test]
fn will_topic_and_strings() {
    // Wildcards or nothing in the Will Topic.
    rejects_connect(
        &body(MQTT, 4, 0x06, &[0, 0, 0, 3, b'a', b'/', b'#', 0, 0]),
        0x90,
    );
    rejects_connect(&body(MQTT, 4, 0x06, &[0, 0, 0, 1, b'+', 0, 0]), 0x90);
    rejects_connect(&body(MQTT, 4, 0x06, &[0, 0, 0, 0, 0, 0]), 0x90);
    // Ill-formed UTF-8 and U+0000 in the client id.
    rejects_connect(&body(MQTT, 4, 0x02, &[0, 2, 0xC0, 0x80]), 0x81);
    rejects_connect(&body(MQTT, 4, 0x02, &[0, 1, 0x00]), 0x81);
}

#[test]
fn v5_properties() {
    let with = |props: &[u8]| body(MQTT, 5, 0x02, &[props, &[0, 0]].concat());
    // Not allowed in CONNECT: Topic Alias, Will Delay Interval (a Will property), unknown 0x05.
    rejects_connect(&with(&[0x03, 0x23, 0x00, 0x01]), 0x81);
    rejects_connect(&with(&[0x05, 0x18, 0x00, 0x00, 0x00, 0x01]), 0x81);
    rejects_connect(&with(&[0x02, 0x05, 0x00]), 0x81);
    // Out of range: Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2.
    rejects_connect(&with(&[0x03, 0x21, 0x00, 0x00]), 0x82);
    rejects_connect(&with(&[0x05, 0x27, 0x00, 0x00, 0x00, 0x00]), 0x82);
    rejects_connect(&with(&[0x02, 0x17, 0x02]), 0x82);
    rejects_connect(&with(&[0x02, 0x19, 0x05]), 0x82);
    // Twice the Session Expiry Interval; Authentication Data without a method.
    rejects_connect(&with(&[0x0A, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]), 0x82);
    rejects_connect(&with(&[0x04, 0x16, 0x00, 0x01, b'x']), 0x82);
    // Property length past the end of the packet; a value cut short.
    rejects_connect(&body(MQTT, 5, 0x02, &[0x09, 0x11, 0x00]), 0x81);
    rejects_connect(&with(&[0x02, 0x21, 0x00]), 0x81);
    // Will properties: Topic Alias is not one of them.
    let will = [
        0x00, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 0x00, 0x01, b'w', 0x00, 0x00,
    ];
    rejects_connect(&body(MQTT, 5, 0x06, &will), 0x81);
}

#[test]
fn v5_remaining_length_must_be_minimal() {
    let connect_body = body(MQTT, 5, 0x02, &[0x00, 0x00, 0x00]);
    let mut long = vec![0x10, 0x80 | connect_body.len() as u8, 0x00];
    long.extend_from_slice(&connect_body);
    assert!(matches!(
        decode_first(&long, 1024),
        Err(DecodeError::Malformed(_))
    ));
    let connect_body = body(MQTT, 4, 0x02, &[0x00, 0x00]);
    let mut long = vec![0x10, 0x80 | connect_body.len() as u8, 0x00];
    long.extend_from_slice(&connect_body);
    assert!(decode_first(&long, 1024).unwrap().is_some());
}

#[test]
fn refused_on_encode() {
    let mut c = connect(V3_1_1);
    c.username = None;
    assert!(matches!(
        refuses(&Packet::Connect(Box::new(c)), V3_1_1),
        EncodeError::Invalid(_)
    ));
    let mut c = connect(V5);
    c.will.as_mut().unwrap().topic = "a/+".into();
    assert!(matches!(
        refuses(&Packet::Connect(Box::new(c)), V5),
        EncodeError::Invalid(DecodeError::TopicNameInvalid(_))
    ));
    let mut c = connect(V5);
    c.will.as_mut().unwrap().properties.session_expiry_interval = Some(1);
    assert!(matches!(
        refuses(&Packet::Connect(Box::new(c)), V5),
        EncodeError::Invalid(_)
    ));
    let mut c = connect(V5);
    c.password = Some(Bytes::from(vec![0; 65_536]));
    assert!(matches!(
        refuses(&Packet::Connect(Box::new(c)), V5),
        EncodeError::OutOfRange(_)
    ));
}
