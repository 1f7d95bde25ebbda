//! The Link driven by packets with a fake clock and a fake engine, no sockets: every rule
//! that lives in the link, and the conditions under which its acknowledgements leave.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::protocol::{ConnAck, Connect, Disconnect, LastWill, Properties, QoS, ReasonCode};
use crate::session::ConnectPolicy;

pub(super) use super::fake::Fake;

pub(super) fn policy() -> ConnectPolicy {
    ConnectPolicy {
        max_packet_size: 1 << 20,
        server_keep_alive: None,
        max_keepalive: None,
        receive_maximum: 2,
        topic_alias_maximum: 3,
        max_session_expiry: Duration::from_secs(100),
        max_inflight_messages: 1024,
        connack_debug_properties: false,
        node: None,
    }
}

pub(super) fn connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub(super) fn start_with(connect: Connect, engine: &mut Fake, now: Instant) -> (Link, Started) {
    start_under(&policy(), connect, engine, now)
}

fn start_under(
    policy: &ConnectPolicy,
    connect: Connect,
    engine: &mut Fake,
    now: Instant,
) -> (Link, Started) {
    let opening = Link::open(
        Box::new(connect),
        policy,
        || "assigned".into(),
        (crate::ownership::CoreId(0), crate::ownership::CoreId(1)),
    )
    .expect("accepted");
    opening.start(now, engine).expect("started")
}

pub(super) fn link(version: ProtocolVersion, engine: &mut Fake) -> Link {
    start_with(connect(version), engine, Instant::now()).0
}

pub(super) fn publish(topic: &str, qos: QoS, alias: Option<u16>) -> Packet {
    let mut properties = Properties::default();
    properties.topic_alias = alias;
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(7).unwrap()),
        properties,
        payload: Bytes::from_static(b"x"),
    })
}

pub(super) fn steps(link: &mut Link) -> Vec<Step> {
    std::iter::from_fn(|| link.poll_step()).collect()
}

/// One read: the packets, then the end of the read.
pub(super) fn read(
    link: &mut Link,
    engine: &mut Fake,
    packets: Vec<Packet>,
    now: Instant,
) -> Vec<Step> {
    for packet in packets {
        link.handle_packet(packet, now, engine);
    }
    link.end_of_read();
    steps(link)
}

pub(super) fn violation(link: &mut Link) -> (ReasonCode, String) {
    match link.take_end() {
        Some(End::Violation(code, why)) => (code, why),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn mqtt_3_3_2_9_an_alias_set_is_used_by_a_later_empty_topic() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let now = Instant::now();
    let packets = vec![
        publish("a/b", QoS::AtMostOnce, Some(1)),
        publish("", QoS::AtMostOnce, Some(1)),
    ];
    read(&mut link, &mut engine, packets, now);
    assert!(link.take_end().is_none());
    assert_eq!(engine.calls[1..], ["publish a/b", "publish a/b"]);
}

#[test]
fn mqtt_3_3_2_10_an_alias_outside_our_maximum_is_invalid() {
    for alias in [0, 4] {
        let mut engine = Fake::default();
        let mut link = link(ProtocolVersion::V5, &mut engine);
        read(
            &mut link,
            &mut engine,
            vec![publish("a", QoS::AtMostOnce, Some(alias))],
            Instant::now(),
        );
        let (code, why) = violation(&mut link);
        assert_eq!(code, ReasonCode::TOPIC_ALIAS_INVALID, "alias {alias}");
        assert!(why.contains("MQTT-3.3.2-10"));
    }
}

#[test]
fn an_alias_used_before_it_is_set_is_a_protocol_error() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    read(
        &mut link,
        &mut engine,
        vec![publish("", QoS::AtMostOnce, Some(2))],
        Instant::now(),
    );
    assert_eq!(violation(&mut link).0, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn mqtt_3_3_2_8_an_empty_topic_without_alias_is_a_protocol_error() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    read(
        &mut link,
        &mut engine,
        vec![publish("", QoS::AtLeastOnce, None)],
        Instant::now(),
    );
    let (code, why) = violation(&mut link);
    assert_eq!(code, ReasonCode::PROTOCOL_ERROR);
    assert!(why.contains("MQTT-3.3.2-8"));
}

#[test]
fn mqtt_3_3_4_9_qos2_beyond_our_receive_maximum_is_refused() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let now = Instant::now();
    // Receive Maximum 2: two may await PUBREL, the third breaks the rule.
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::ExactlyOnce, None)],
        now,
    );
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::ExactlyOnce, None)],
        now,
    );
    assert!(link.take_end().is_none());
    read(
        &mut link,
        &mut engine,
        vec![publish("a", QoS::ExactlyOnce, None)],
        now,
    );
    let (code, why) = violation(&mut link);
    assert_eq!(code, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
    assert!(why.contains("MQTT-3.3.4-9"));
}

fn disconnect(reason_code: ReasonCode, expiry: Option<u32>) -> Packet {
    let mut properties = Properties::default();
    properties.session_expiry_interval = expiry;
    Packet::Disconnect(Disconnect {
        reason_code,
        properties,
    })
}

#[test]
fn mqtt_3_14_2_2_disconnect_may_not_set_an_expiry_after_0() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    read(
        &mut link,
        &mut engine,
        vec![disconnect(ReasonCode::SUCCESS, Some(5))],
        Instant::now(),
    );
    let (code, why) = violation(&mut link);
    assert_eq!(code, ReasonCode::PROTOCOL_ERROR);
    assert!(why.contains("MQTT-3.14.2-2"));
}

#[test]
fn a_disconnect_expiry_is_capped_by_ours_and_goes_offline_with_the_session() {
    let mut engine = Fake::default();
    let mut c = connect(ProtocolVersion::V5);
    c.properties.session_expiry_interval = Some(10);
    let now = Instant::now();
    let (mut link, _) = start_with(c, &mut engine, now);
    read(
        &mut link,
        &mut engine,
        vec![disconnect(ReasonCode::SUCCESS, Some(500))],
        now,
    );
    let end = link.take_end().expect("ended");
    assert!(matches!(
        end,
        End::ClientDisconnected {
            publish_will: false
        }
    ));
    assert!(
        !link.close(&end, true, now, &mut engine),
        "no DISCONNECT from the server"
    );
    link.go_offline(now, &mut engine);
    assert_eq!(engine.offline_expiry, Some(Duration::from_secs(100)));
}

fn with_will(delay: Option<u32>, expiry: u32) -> Connect {
    let mut properties = Properties::default();
    properties.will_delay_interval = delay;
    let mut c = connect(ProtocolVersion::V5);
    c.properties.session_expiry_interval = Some(expiry);
    c.will = Some(LastWill {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    });
    c
}

/// Closes a link started with `connect` on `end`; returns the engine's calls after start.
fn will_calls(connect: Connect, end: End, current: bool) -> (Vec<String>, Option<Duration>) {
    let mut engine = Fake::default();
    let now = Instant::now();
    let (mut link, _) = start_with(connect, &mut engine, now);
    engine.calls.clear();
    link.close(&end, current, now, &mut engine);
    (engine.calls, engine.will_at.map(|at| at - now))
}

#[test]
fn mqtt_3_1_2_8_a_normal_disconnect_drops_the_will_and_0x04_publishes_it() {
    let normal = End::ClientDisconnected {
        publish_will: false,
    };
    assert_eq!(
        will_calls(with_will(None, 0), normal, true).0,
        ["drop_will"]
    );
    let with = End::ClientDisconnected { publish_will: true };
    assert_eq!(
        will_calls(with_will(None, 0), with, true).0,
        ["publish will", "drop_will"]
    );
    assert_eq!(
        will_calls(with_will(None, 0), End::Closed, true).0,
        ["publish will", "drop_will"]
    );
    assert_eq!(
        will_calls(with_will(None, 0), End::Shutdown, true).0,
        ["drop_will"]
    );
}

#[test]
fn mqtt_3_1_3_9_a_takeover_before_the_delay_cancels_the_will() {
    let (calls, at) = will_calls(with_will(Some(30), 60), End::TakenOver, false);
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(at, None);
    // Without a delay the will goes at once, and the new connection's will stays.
    let (calls, _) = will_calls(with_will(None, 60), End::TakenOver, false);
    assert_eq!(calls, ["publish will"]);
}

#[test]
fn a_delayed_will_waits_for_its_delay_or_the_session_expiry_whichever_is_first() {
    let (calls, at) = will_calls(with_will(Some(30), 60), End::Closed, true);
    assert_eq!(calls, ["schedule_will"]);
    assert_eq!(at, Some(Duration::from_secs(30)));
    let (_, at) = will_calls(with_will(Some(30), 5), End::Closed, true);
    assert_eq!(at, Some(Duration::from_secs(5)));
    // A session that ends with the connection publishes at once.
    let (calls, _) = will_calls(with_will(Some(30), 0), End::Closed, true);
    assert_eq!(calls, ["publish will", "drop_will"]);
}

#[test]
fn the_will_is_held_at_start_with_its_delay() {
    let mut engine = Fake::default();
    start_with(with_will(Some(30), 60), &mut engine, Instant::now());
    assert_eq!(engine.calls, ["connect", "hold_will 30"]);
}

#[test]
fn a_v5_client_is_told_why_the_server_disconnects() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let end = End::Violation(ReasonCode::PROTOCOL_ERROR, "[MQTT-x] why".into());
    assert!(link.close(&end, true, Instant::now(), &mut engine));
    let sent = steps(&mut link);
    let [Step::Send(Packet::Disconnect(d))] = &sent[..] else {
        panic!("{sent:?}");
    };
    assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR);
    assert_eq!(d.properties.reason_string.as_deref(), Some("[MQTT-x] why"));
    let mut v3 = self::link(ProtocolVersion::V3_1_1, &mut engine);
    assert!(!v3.close(&end, true, Instant::now(), &mut engine));
    assert!(steps(&mut v3).is_empty());
}

fn conn_ack(started: &Started) -> &ConnAck {
    let Packet::ConnAck(ack) = &started.conn_ack else {
        panic!("a CONNACK");
    };
    ack
}

#[test]
fn the_v5_connack_tells_the_expiry_granted_and_what_is_available() {
    let mut engine = Fake {
        granted: Some(Duration::from_secs(100)),
        ..Fake::default()
    };
    let mut c = connect(ProtocolVersion::V5);
    c.properties.session_expiry_interval = Some(u32::MAX);
    c.properties.request_response_information = Some(1);
    let (_, started) = start_under(&debug_policy(), c, &mut engine, Instant::now());
    let props = &conn_ack(&started).properties;
    assert_eq!(props.session_expiry_interval, Some(100));
    assert_eq!(props.retain_available, Some(1));
    assert_eq!(props.wildcard_subscription_available, Some(1));
    assert_eq!(props.subscription_identifier_available, Some(1));
    assert_eq!(props.shared_subscription_available, Some(1));
    assert_eq!(
        props.response_information.as_deref(),
        Some("berth/response/c/")
    );
    let users: Vec<_> = props
        .user_properties
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(users, ["berth-shard=0", "berth-accepted-on=1"]);
    // Granted as asked: nothing to tell.
    let mut engine = Fake::default();
    let mut c = connect(ProtocolVersion::V5);
    c.properties.session_expiry_interval = Some(50);
    let (_, started) = start_with(c, &mut engine, Instant::now());
    assert_eq!(conn_ack(&started).properties.session_expiry_interval, None);
    assert_eq!(conn_ack(&started).properties.response_information, None);
}

fn debug_policy() -> ConnectPolicy {
    ConnectPolicy {
        connack_debug_properties: true,
        ..policy()
    }
}

#[test]
fn a_v5_connack_names_no_core_unless_asked_to() {
    let mut engine = Fake::default();
    let (_, started) = start_with(connect(ProtocolVersion::V5), &mut engine, Instant::now());
    assert!(conn_ack(&started).properties.user_properties.is_empty());
}

#[test]
fn mqtt_3_2_2_20_the_core_names_are_left_out_when_the_connack_would_not_fit() {
    let mut engine = Fake::default();
    let mut c = connect(ProtocolVersion::V5);
    c.properties.maximum_packet_size = Some(40);
    let (_, started) = start_under(&debug_policy(), c, &mut engine, Instant::now());
    assert!(conn_ack(&started).properties.user_properties.is_empty());
    assert!(started.limits.max_packet_size == Some(40));
}

#[test]
fn a_3_1_1_connack_has_no_properties() {
    let mut engine = Fake::default();
    let (_, started) = start_with(
        connect(ProtocolVersion::V3_1_1),
        &mut engine,
        Instant::now(),
    );
    assert_eq!(conn_ack(&started).properties, Properties::default());
}

#[test]
fn the_session_limit_refuses_with_quota_exceeded() {
    let mut engine = Fake {
        session_limit: true,
        ..Fake::default()
    };
    let opening = Link::open(
        Box::new(connect(ProtocolVersion::V5)),
        &policy(),
        || "x".into(),
        (crate::ownership::CoreId(0), crate::ownership::CoreId(0)),
    )
    .unwrap();
    let refusal = opening.start(Instant::now(), &mut engine).unwrap_err();
    assert_eq!(refusal.reason_code, ReasonCode::QUOTA_EXCEEDED);
    assert!(refusal.conn_ack.is_some());
}

#[test]
fn mqtt_3_1_2_24_deadline_is_one_and_a_half_keep_alives() {
    let mut engine = Fake::default();
    let start = Instant::now();
    let (mut link, _) = start_with(connect(ProtocolVersion::V3_1_1), &mut engine, start);
    assert_eq!(link.deadline(), Some(start + Duration::from_secs(15)));
    let later = start + Duration::from_secs(4);
    let steps = read(&mut link, &mut engine, vec![Packet::PingReq], later);
    assert!(matches!(steps[..], [Step::Send(Packet::PingResp)]));
    assert_eq!(link.deadline(), Some(later + Duration::from_secs(15)));
    link.handle_timeout(later + Duration::from_secs(14));
    assert!(
        link.take_end().is_none(),
        "a timer that fired early ends nothing"
    );
    link.handle_timeout(later + Duration::from_secs(15));
    assert!(matches!(link.take_end(), Some(End::KeepAliveTimeout)));
    let mut off = connect(ProtocolVersion::V5);
    off.keep_alive = 0;
    assert_eq!(start_with(off, &mut engine, start).0.deadline(), None);
}

#[test]
fn a_decode_error_ends_the_connection_with_its_reason_code() {
    let mut engine = Fake::default();
    let mut link = link(ProtocolVersion::V5, &mut engine);
    let error = crate::protocol::DecodeError::Malformed("bad");
    link.handle_decode_error(error.clone());
    assert_eq!(violation(&mut link).0, error.reason_code());
}
