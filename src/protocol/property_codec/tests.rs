//! Table tests for property lists: every identifier's wire form, the allowed sets, the
//! duplicate rules and the value ranges.

use bytes::Bytes;

use super::*;

fn decode_list(context: Context, list: &[u8]) -> Result<Properties, DecodeError> {
    let mut bytes = Vec::new();
    let mut len = BytesMut::new();
    wire::put_var_int(&mut len, list.len());
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(list);
    let mut r = Reader::new(Bytes::from(bytes));
    let p = decode(&mut r, context)?;
    assert!(r.is_empty());
    Ok(p)
}

fn encode_list(p: &Properties, context: Context) -> Vec<u8> {
    check(p, context).expect("valid properties");
    let mut buf = BytesMut::new();
    write(p, &mut buf);
    assert_eq!(buf.len(), encoded_len(p));
    buf.to_vec()
}

#[test]
fn every_connack_property() {
    #[rustfmt::skip]
    let list: &[u8] = &[
        0x11, 0, 0, 0, 60,
        0x12, 0, 1, b'c',
        0x13, 0, 30,
        0x15, 0, 1, b'm',
        0x16, 0, 1, 0xFF,
        0x1A, 0, 1, b'i',
        0x1C, 0, 1, b's',
        0x1F, 0, 1, b'r',
        0x21, 0, 100,
        0x22, 0, 5,
        0x24, 1,
        0x25, 0,
        0x26, 0, 1, b'k', 0, 1, b'v',
        0x26, 0, 1, b'k', 0, 1, b'w',
        0x27, 0, 0, 1, 0,
        0x28, 1,
        0x29, 0,
        0x2A, 1,
    ];
    let p = decode_list(Context::ConnAck, list).unwrap();
    let expected = PropertyValues {
        session_expiry_interval: Some(60),
        assigned_client_identifier: Some("c".into()),
        server_keep_alive: Some(30),
        authentication_method: Some("m".into()),
        authentication_data: Some(Bytes::from_static(&[0xFF])),
        response_information: Some("i".into()),
        server_reference: Some("s".into()),
        reason_string: Some("r".into()),
        receive_maximum: Some(100),
        topic_alias_maximum: Some(5),
        maximum_qos: Some(1),
        retain_available: Some(0),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        maximum_packet_size: Some(256),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(0),
        shared_subscription_available: Some(1),
        ..PropertyValues::default()
    }
    .into();
    assert_eq!(p, expected);
    assert_eq!(&encode_list(&p, Context::ConnAck)[1..], list);
    assert_eq!(content_len(&p), list.len());
}

#[test]
fn every_publish_and_will_property() {
    #[rustfmt::skip]
    let list: &[u8] = &[
        0x01, 1,
        0x02, 0, 0, 0x0E, 0x10,
        0x03, 0, 4, b'j', b's', b'o', b'n',
        0x08, 0, 3, b'r', b'/', b's',
        0x09, 0, 2, 1, 2,
        0x0B, 0xFF, 0xFF, 0xFF, 0x7F,
        0x0B, 0x05,
        0x23, 0, 9,
    ];
    let p = decode_list(Context::Publish, list).unwrap();
    assert_eq!(p.message_expiry_interval, Some(3600));
    assert_eq!(p.subscription_identifiers, vec![268_435_455, 5]);
    assert_eq!(p.correlation_data.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(&encode_list(&p, Context::Publish)[1..], list);
    let will: &[u8] = &[0x18, 0, 0, 0, 9, 0x03, 0, 1, b't'];
    let w = decode_list(Context::Will, will).unwrap();
    assert_eq!(
        (w.will_delay_interval, w.content_type.as_deref()),
        (Some(9), Some("t"))
    );
}

#[test]
fn long_lists_have_multi_byte_lengths() {
    let p = PropertyValues {
        reason_string: Some("x".repeat(200).into()),
        ..PropertyValues::default()
    }
    .into();
    let bytes = encode_list(&p, Context::Ack);
    assert_eq!(&bytes[..3], &[0xCB, 0x01, 0x1F]);
    assert_eq!(decode_list(Context::Ack, &bytes[2..]).unwrap(), p);
}

#[test]
fn allowed_sets() {
    let cases: &[(Context, &[u8])] = &[
        (Context::Connect, &[0x12, 0, 1, b'c']),
        (Context::Will, &[0x11, 0, 0, 0, 1]),
        (Context::ConnAck, &[0x17, 1]),
        (Context::Publish, &[0x1F, 0, 1, b'r']),
        (Context::Ack, &[0x0B, 1]),
        (Context::Subscribe, &[0x23, 0, 1]),
        (Context::SubAck, &[0x11, 0, 0, 0, 1]),
        (Context::Unsubscribe, &[0x1F, 0, 1, b'r']),
        (Context::UnsubAck, &[0x15, 0, 1, b'm']),
        (Context::Disconnect, &[0x15, 0, 1, b'm']),
        (Context::Auth, &[0x11, 0, 0, 0, 1]),
    ];
    for (context, list) in cases {
        let err = decode_list(*context, list).unwrap_err();
        assert!(
            matches!(err, DecodeError::PropertyNotAllowed { .. }),
            "{context:?}: {err}"
        );
        assert_eq!(err.reason_code().0, 0x81);
    }
    for unknown in [0x00, 0x04, 0x2B, 0x3F, 0x40, 0x80, 0xFF] {
        assert!(
            matches!(
                decode_list(Context::Publish, &[unknown, 0]),
                Err(DecodeError::Malformed(_))
            ),
            "{unknown:#x}"
        );
    }
}

#[test]
fn duplicates() {
    // Everything but User Property, and Subscription Identifier in a PUBLISH, is allowed once.
    let twice = |id: u8, value: &[u8]| [&[id][..], value, &[id], value].concat();
    assert_eq!(
        decode_list(Context::Publish, &twice(0x01, &[1])),
        Err(DecodeError::DuplicateProperty("Payload Format Indicator"))
    );
    assert!(decode_list(Context::Subscribe, &twice(0x0B, &[1])).is_err());
    assert!(decode_list(Context::Publish, &twice(0x0B, &[1])).is_ok());
    assert!(decode_list(Context::Auth, &twice(0x26, &[0, 0, 0, 0])).is_ok());
    assert_eq!(
        decode_list(Context::Auth, &twice(0x15, &[0, 0]))
            .unwrap_err()
            .reason_code()
            .0,
        0x82
    );
    assert_eq!(
        decode_list(Context::ConnAck, &twice(0x27, &[0, 0, 0, 1]))
            .unwrap_err()
            .reason_code()
            .0,
        0x82
    );
}

#[test]
fn value_ranges() {
    let protocol_errors: &[(Context, &[u8])] = &[
        (Context::Publish, &[0x01, 2]),
        (Context::Connect, &[0x17, 2]),
        (Context::Connect, &[0x19, 2]),
        (Context::ConnAck, &[0x24, 2]),
        (Context::ConnAck, &[0x25, 2]),
        (Context::ConnAck, &[0x28, 2]),
        (Context::ConnAck, &[0x29, 2]),
        (Context::ConnAck, &[0x2A, 0xFF]),
        (Context::ConnAck, &[0x21, 0, 0]),
        (Context::Connect, &[0x27, 0, 0, 0, 0]),
        (Context::Publish, &[0x0B, 0]),
        (Context::ConnAck, &[0x16, 0, 0]),
    ];
    for (context, list) in protocol_errors {
        assert_eq!(
            decode_list(*context, list).unwrap_err().reason_code().0,
            0x82,
            "{list:02X?}"
        );
    }
    assert_eq!(
        decode_list(Context::Publish, &[0x23, 0, 0])
            .unwrap_err()
            .reason_code()
            .0,
        0x94
    );
    assert_eq!(
        decode_list(Context::Will, &[0x08, 0, 1, b'+'])
            .unwrap_err()
            .reason_code()
            .0,
        0x90
    );
    assert_eq!(
        decode_list(Context::Will, &[0x08, 0, 0])
            .unwrap_err()
            .reason_code()
            .0,
        0x90
    );
    // The largest values are fine.
    assert!(decode_list(
        Context::ConnAck,
        &[0x21, 0xFF, 0xFF, 0x27, 0xFF, 0xFF, 0xFF, 0xFF]
    )
    .is_ok());
}

#[test]
fn truncated_lists() {
    // A length longer than what follows; a value cut by the end of the list.
    let mut r = Reader::new(Bytes::from_static(&[0x05, 0x01, 0x01]));
    assert!(matches!(
        decode(&mut r, Context::Publish),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_list(Context::Publish, &[0x02, 0, 0]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_list(Context::Publish, &[0x26, 0, 1, b'k']),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_list(Context::Publish, &[0x0B, 0x80]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn encode_checks() {
    let p = PropertyValues {
        topic_alias: Some(1),
        ..PropertyValues::default()
    }
    .into();
    assert_eq!(
        check(&p, Context::Ack),
        Err(EncodeError::Invalid(DecodeError::PropertyNotAllowed {
            property: "Topic Alias",
            packet: "PUBACK, PUBREC, PUBREL or PUBCOMP"
        }))
    );
    let p = PropertyValues {
        receive_maximum: Some(0),
        ..PropertyValues::default()
    }
    .into();
    assert!(matches!(
        check(&p, Context::Connect),
        Err(EncodeError::Invalid(DecodeError::Protocol(_)))
    ));
    let p = PropertyValues {
        user_properties: vec![("k".into(), "a\0".into())],
        ..PropertyValues::default()
    }
    .into();
    assert!(matches!(
        check(&p, Context::Auth),
        Err(EncodeError::Invalid(DecodeError::Malformed(_)))
    ));
    let p = PropertyValues {
        correlation_data: Some(Bytes::from(vec![0; 65_536])),
        ..PropertyValues::default()
    }
    .into();
    assert!(matches!(
        check(&p, Context::Publish),
        Err(EncodeError::OutOfRange(_))
    ));
    assert_eq!(encode_list(&Properties::default(), Context::Auth), [0x00]);
}
