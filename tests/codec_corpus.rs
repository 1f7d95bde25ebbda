//! Replays every file of the fuzz corpus (`fuzz/corpus/codec/`) and of the saved crash
//! inputs (`fuzz/regressions/codec/`) through the fuzz target's checks, so that CI exercises them
//! on stable Rust without cargo-fuzz.
//!
//! The seed corpus itself is generated from the packets in `seed_packets` by the ignored
//! test `write_seed_corpus` (`cargo test --test codec_corpus -- --ignored`); the fuzzer adds
//! its own finds beside them.

use std::fs;
use std::path::{Path, PathBuf};

use berth::protocol::{
    encode, fuzzing, Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId,
    Properties, PropertyValues, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use bytes::{Bytes, BytesMut};

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
}

/// The files of `dir`, hidden ones (`.gitkeep`) left out.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_and_regressions_pass_the_fuzz_checks() {
    let corpus = inputs(&fuzz_dir("corpus/codec"));
    assert!(
        corpus.len() >= 30,
        "the seed corpus is missing: {} files",
        corpus.len()
    );
    for path in corpus.iter().chain(&inputs(&fuzz_dir("regressions/codec"))) {
        let data = fs::read(path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| fuzzing::check(&data));
        assert!(outcome.is_ok(), "{} breaks a codec promise", path.display());
    }
}

#[test]
fn seed_corpus_decodes() {
    // The seeds are valid packets: each must decode, or the fuzzer starts from noise.
    for (name, version, packet) in seed_packets() {
        let bytes = encoded(std::slice::from_ref(&packet), version);
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = berth::protocol::decode(&mut buf, version, u32::MAX);
        assert_eq!(decoded, Ok(Some(packet)), "{name}");
    }
}

/// Regenerates `fuzz/corpus/codec/seed-*` from `seed_packets`.
#[test]
#[ignore = "writes the seed corpus; run by hand when the seeds change"]
fn write_seed_corpus() {
    let dir = fuzz_dir("corpus/codec");
    fs::create_dir_all(&dir).expect("corpus directory");
    let seeds = seed_packets();
    for (name, version, packet) in &seeds {
        fs::write(
            dir.join(format!("seed-{name}")),
            encoded(std::slice::from_ref(packet), *version),
        )
        .expect("write");
    }
    // One whole session per version: a CONNECT, then everything else of that version.
    for version in VERSIONS {
        let session: Vec<Packet> = seeds
            .iter()
            .filter(|(_, v, _)| *v == version)
            .map(|(_, _, p)| p.clone())
            .collect();
        fs::write(
            dir.join(format!("seed-session-{}", tag(version))),
            encoded(&session, version),
        )
        .expect("write");
    }
}

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fn tag(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "v31",
        ProtocolVersion::V3_1_1 => "v311",
        ProtocolVersion::V5 => "v5",
    }
}

fn encoded(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for packet in packets {
        encode(packet, version, &mut buf).expect("a seed packet encodes");
    }
    buf.to_vec()
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

/// One of each packet type for each version, with properties in 5.0.
fn seed_packets() -> Vec<(String, ProtocolVersion, Packet)> {
    let mut seeds = Vec::new();
    for version in VERSIONS {
        let v5 = version.is_v5();
        let props = |p: Properties| if v5 { p } else { Properties::default() };
        let reason = |code: ReasonCode| if v5 { code } else { ReasonCode::SUCCESS };
        let user = PropertyValues {
            user_properties: vec![("k".into(), "v".into())],
            ..PropertyValues::default()
        };
        let why: Properties = PropertyValues {
            reason_string: Some("why".into()),
            ..user.clone()
        }
        .into();
        let user: Properties = user.into();
        let mut list = vec![
            (
                "connect",
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start: true,
                    keep_alive: 30,
                    client_id: "client-1".into(),
                    will: Some(LastWill {
                        topic: "will/topic".into(),
                        payload: Bytes::from_static(b"gone"),
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        properties: props(
                            PropertyValues {
                                will_delay_interval: Some(5),
                                ..(*user).clone()
                            }
                            .into(),
                        ),
                    }),
                    username: Some("user".into()),
                    password: Some(Bytes::from_static(b"secret")),
                    properties: props(
                        PropertyValues {
                            session_expiry_interval: Some(3600),
                            receive_maximum: Some(100),
                            maximum_packet_size: Some(65_536),
                            topic_alias_maximum: Some(10),
                            ..PropertyValues::default()
                        }
                        .into(),
                    ),
                })),
            ),
            (
                "connect-minimal",
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start: false,
                    keep_alive: 0,
                    client_id: "".into(),
                    will: None,
                    username: None,
                    password: None,
                    properties: Properties::default(),
                })),
            ),
            (
                "connack",
                Packet::ConnAck(ConnAck {
                    session_present: true,
                    reason_code: ReasonCode::SUCCESS,
                    properties: props(
                        PropertyValues {
                            assigned_client_identifier: Some("auto-1".into()),
                            maximum_qos: Some(1),
                            retain_available: Some(1),
                            server_keep_alive: Some(60),
                            ..PropertyValues::default()
                        }
                        .into(),
                    ),
                }),
            ),
            (
                "connack-refused",
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason_code: ReasonCode::NOT_AUTHORIZED,
                    properties: props(why.clone()),
                }),
            ),
            (
                "publish-qos0",
                Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: true,
                    topic: "sensors/1/temp".into(),
                    packet_id: None,
                    properties: Properties::default(),
                    payload: Bytes::from_static(b"21.5"),
                }),
            ),
            (
                "publish-qos1",
                Packet::Publish(Publish {
                    dup: true,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "a/b".into(),
                    packet_id: Some(id(1)),
                    properties: props(
                        PropertyValues {
                            payload_format_indicator: Some(1),
                            message_expiry_interval: Some(60),
                            content_type: Some("text/plain".into()),
                            response_topic: Some("reply/here".into()),
                            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                            subscription_identifiers: vec![7, 300],
                            ..(*user).clone()
                        }
                        .into(),
                    ),
                    payload: Bytes::from_static(b"hello"),
                }),
            ),
            (
                "publish-qos2",
                Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    topic: "x".into(),
                    packet_id: Some(id(65_535)),
                    properties: Properties::default(),
                    payload: Bytes::new(),
                }),
            ),
            (
                "puback",
                Packet::PubAck(Ack {
                    packet_id: id(1),
                    reason_code: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                }),
            ),
            (
                "pubrec",
                Packet::PubRec(Ack {
                    packet_id: id(2),
                    reason_code: reason(ReasonCode::NO_MATCHING_SUBSCRIBERS),
                    properties: Properties::default(),
                }),
            ),
            (
                "pubrel",
                Packet::PubRel(Ack {
                    packet_id: id(2),
                    reason_code: ReasonCode::SUCCESS,
                    properties: props(why.clone()),
                }),
            ),
            (
                "pubcomp",
                Packet::PubComp(Ack {
                    packet_id: id(2),
                    reason_code: reason(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
                    properties: Properties::default(),
                }),
            ),
            (
                "subscribe",
                Packet::Subscribe(Subscribe {
                    packet_id: id(3),
                    properties: props(
                        PropertyValues {
                            subscription_identifiers: vec![7],
                            ..(*user).clone()
                        }
                        .into(),
                    ),
                    filters: vec![
                        (
                            "a/+/c".into(),
                            SubscriptionOptions {
                                qos: QoS::AtLeastOnce,
                                ..SubscriptionOptions::default()
                            },
                        ),
                        (
                            "$share/g/#".into(),
                            SubscriptionOptions {
                                qos: QoS::ExactlyOnce,
                                no_local: false,
                                retain_as_published: v5,
                                retain_handling: if v5 {
                                    RetainHandling::Never
                                } else {
                                    RetainHandling::OnSubscribe
                                },
                            },
                        ),
                    ],
                }),
            ),
            (
                "suback",
                Packet::SubAck(SubAck {
                    packet_id: id(3),
                    properties: props(why.clone()),
                    reason_codes: vec![
                        ReasonCode::GRANTED_QOS_1,
                        ReasonCode::GRANTED_QOS_2,
                        ReasonCode::UNSPECIFIED_ERROR,
                    ],
                }),
            ),
            (
                "unsubscribe",
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: id(4),
                    properties: props(user.clone()),
                    filters: vec!["a/+/c".into(), "#".into()],
                }),
            ),
            (
                "unsuback",
                Packet::UnsubAck(UnsubAck {
                    packet_id: id(4),
                    properties: props(why.clone()),
                    reason_codes: if v5 {
                        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                    } else {
                        Vec::new()
                    },
                }),
            ),
            ("pingreq", Packet::PingReq),
            ("pingresp", Packet::PingResp),
            (
                "disconnect",
                Packet::Disconnect(Disconnect {
                    reason_code: reason(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE),
                    properties: props(
                        PropertyValues {
                            session_expiry_interval: Some(0),
                            ..(*why).clone()
                        }
                        .into(),
                    ),
                }),
            ),
        ];
        if v5 {
            list.push((
                "auth",
                Packet::Auth(Auth {
                    reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: PropertyValues {
                        authentication_method: Some("SCRAM-SHA-1".into()),
                        authentication_data: Some(Bytes::from_static(b"nonce")),
                        ..PropertyValues::default()
                    }
                    .into(),
                }),
            ));
            list.push((
                "publish-alias",
                Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: "".into(),
                    packet_id: None,
                    properties: PropertyValues {
                        topic_alias: Some(3),
                        ..PropertyValues::default()
                    }
                    .into(),
                    payload: Bytes::from_static(b"aliased"),
                }),
            ));
        }
        seeds.extend(
            list.into_iter()
                .map(|(name, packet)| (format!("{name}-{}", tag(version)), version, packet)),
        );
    }
    seeds
}
