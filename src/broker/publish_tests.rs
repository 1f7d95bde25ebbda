//! Delivery of one message to many sessions: the QoS 0 packet shared by plain subscribers,
//! and the local copy a wide fan-out from another core is delivered from.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::publish::{own_small, LOCAL_COPY_FANOUT};
use super::{Broker, CoreMsg, Outgoing, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{Packet, PacketId, Properties, Publish, QoS, Subscribe};
use crate::session::state::Message;

fn subscribe(filter: &str, qos: QoS) -> Subscribe {
    Subscribe::one(PacketId::new(1).unwrap(), filter, qos)
}

/// Plain QoS 0 subscribers of a message share one packet; a subscriber whose
/// subscription carries an identifier, or that gets QoS 1, is sent a packet of its own.
#[test]
fn plain_qos0_subscribers_share_one_publish_and_the_rest_get_their_own() {
    let now = Instant::now();
    let mut core = Broker::new(
        CoreId(0),
        1,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    let mut with_id = subscribe("a/#", QoS::AtMostOnce);
    with_id.properties = crate::protocol::PropertyValues {
        subscription_identifiers: vec![7],
        ..Default::default()
    }
    .into();
    let clients: [(&str, Subscribe); 4] = [
        ("plain-1", subscribe("a/#", QoS::AtMostOnce)),
        ("plain-2", subscribe("a/b", QoS::AtLeastOnce)),
        ("with-id", with_id),
        ("qos1", subscribe("a/+", QoS::AtLeastOnce)),
    ];
    for (client, subscribe) in clients {
        let client = ByteString::from(client);
        core.connect(&client, true, Duration::ZERO, 10, now)
            .expect("accepted");
        core.subscribe(&client, subscribe, now);
    }
    let publish = |qos| Publish {
        dup: false,
        qos,
        retain: false,
        topic: "a/b".into(),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    };
    let effects = core.publish(&"pub".into(), publish(QoS::AtMostOnce), now);
    let mut shared = Vec::new();
    for (client, outgoing) in &effects.to_clients {
        let Packet::Publish(p) = outgoing.packet() else {
            panic!("not a PUBLISH")
        };
        assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None));
        match outgoing {
            Outgoing::Shared(s) => shared.push((client.to_string(), Rc::as_ptr(s))),
            Outgoing::Packet(_) => {
                assert_eq!(client, "with-id");
                assert_eq!(p.properties.subscription_identifiers, [7]);
            }
        }
    }
    shared.sort();
    assert_eq!(effects.to_clients.len(), 4);
    assert_eq!(
        shared.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["plain-1", "plain-2", "qos1"]
    );
    assert!(shared.windows(2).all(|w| w[0].1 == w[1].1), "one packet");
    // At QoS 1 only the subscription granted QoS 0 takes the shared packet.
    let effects = core.publish(&"pub".into(), publish(QoS::AtLeastOnce), now);
    let shared: Vec<_> = effects
        .to_clients
        .iter()
        .filter(|(_, o)| matches!(o, Outgoing::Shared(_)))
        .map(|(c, _)| c.to_string())
        .collect();
    assert_eq!(shared, ["plain-1"]);
}

/// A wide fan-out arriving from another core is delivered from that core's own copy
/// of the message; every subscriber still gets exactly the topic, payload and QoS
/// published, and small payloads no longer slice the publisher's buffer.
#[test]
fn fan_out_from_another_core_delivers_the_same_message_from_a_local_copy() {
    let now = Instant::now();
    let mut core = Broker::new(
        CoreId(1),
        2,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    let n = LOCAL_COPY_FANOUT + 4;
    for i in 0..n {
        let client = ByteString::from(format!("sub-{i}"));
        core.connect(&client, true, Duration::ZERO, 10, now)
            .expect("accepted");
        core.subscribe(&client, subscribe("fleet/+/cmd", QoS::AtLeastOnce), now);
    }
    let buffer = Bytes::from_static(b"fleet/7/cmdPAYLOAD and the rest of a read");
    let (topic, payload) = own_small(
        ByteString::try_from(buffer.slice(0..11)).unwrap(),
        buffer.slice(11..18),
    );
    assert_eq!((&*topic, &payload[..]), ("fleet/7/cmd", &b"PAYLOAD"[..]));
    assert_ne!(
        payload.as_ptr(),
        buffer.slice(11..18).as_ptr(),
        "copied out"
    );
    let message = Arc::new(Message {
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        publisher: "pub".into(),
        expires_at: None,
        origin: None,
    });
    let effects = core.on_core_msg(CoreMsg::Publish(message.clone()), now);
    assert_eq!(effects.to_clients.len(), n);
    let mut clients = std::collections::HashSet::new();
    for (client, packet) in effects.to_clients {
        let Packet::Publish(p) = packet.into_packet() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(&*p.topic, "fleet/7/cmd");
        assert_eq!(&p.payload[..], b"PAYLOAD");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(p.packet_id.is_some());
        assert_ne!(p.payload.as_ptr(), message.payload.as_ptr(), "a local copy");
        clients.insert(client);
    }
    assert_eq!(clients.len(), n, "one copy per subscriber");
    // A narrow fan-out keeps sharing the message it was sent.
    let mut narrow = Broker::new(
        CoreId(1),
        2,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    let client = ByteString::from("one");
    narrow
        .connect(&client, true, Duration::ZERO, 10, now)
        .expect("accepted");
    narrow.subscribe(&client, subscribe("fleet/#", QoS::AtMostOnce), now);
    let effects = narrow.on_core_msg(CoreMsg::Publish(message.clone()), now);
    let [(_, delivery)] = &effects.to_clients[..] else {
        panic!("one delivery")
    };
    let Packet::Publish(p) = delivery.packet() else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.payload.as_ptr(), message.payload.as_ptr());
}

/// The drop reasons the engine counts: a PUBLISH nobody subscribed to (not a retained one,
/// not the broker's own), the overflow of a queue, and a queued message whose expiry passed
/// before its session came back.
#[test]
fn drops_are_counted_by_reason() {
    let now = Instant::now();
    let policy = SessionPolicy {
        limits: crate::session::state::QueueLimits {
            max_messages: 2,
            ..Default::default()
        },
        ..SessionPolicy::default()
    };
    let mut core = Broker::new(CoreId(0), 1, policy, WallClock::now_from_system());
    let publish = |topic: &'static str, retain: bool, expiry: Option<u32>| Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain,
        topic: topic.into(),
        packet_id: PacketId::new(1),
        properties: crate::protocol::PropertyValues {
            message_expiry_interval: expiry,
            ..Default::default()
        }
        .into(),
        payload: Bytes::from_static(b"x"),
    };
    let _ = core.publish(&"pub".into(), publish("nobody", false, None), now);
    let _ = core.publish(&"pub".into(), publish("kept", true, None), now);
    let _ = core.publish(&ByteString::new(), publish("$SYS/x", false, None), now);
    assert_eq!(core.counters.no_subscribers, 1);

    let holder = ByteString::from("holder");
    core.connect(&holder, false, Duration::from_secs(60), 10, now)
        .expect("accepted");
    core.subscribe(&holder, subscribe("q/#", QoS::AtLeastOnce), now);
    core.disconnect(&holder, None, now);
    let _ = core.publish(&"pub".into(), publish("q/stale", false, Some(1)), now);
    let _ = core.publish(&"pub".into(), publish("q/fresh", false, None), now);
    assert_eq!(core.counters.dropped_queue_full, 0);
    let _ = core.publish(&"pub".into(), publish("q/third", false, None), now);
    // Drop-oldest: the stale one goes for the third, and is a queue drop, not an expiry.
    assert_eq!(
        (core.counters.dropped_queue_full, core.counters.dropped),
        (1, 1)
    );
    let _ = core.publish(&"pub".into(), publish("q/short", false, Some(1)), now);
    assert_eq!(core.counters.dropped_queue_full, 2);
    let later = now + Duration::from_secs(2);
    let (present, _, packets, _) = core
        .connect(&holder, false, Duration::from_secs(60), 10, later)
        .expect("resumed");
    assert!(present);
    assert_eq!(packets.len(), 1, "the message that had not expired");
    assert_eq!(core.counters.expired, 1);
    assert_eq!(core.counters.no_subscribers, 1);
    assert_eq!(
        core.counters.dropped, 2,
        "an expiry is not in Mosquitto's dropped"
    );
}

/// In a cluster a retained PUBLISH goes to the other nodes' stores (once, from its own
/// core), `$SYS` ones never; a retained message of the cluster's bucket replaces this
/// core's, is delivered to nobody, and a clear of a topic held nowhere changes nothing.
#[test]
fn retained_messages_go_to_the_cluster_and_come_back_into_the_store() {
    let now = Instant::now();
    let mut core = Broker::new(
        CoreId(0),
        1,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    let retained = |topic: &str, payload: &'static [u8]| Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: ByteString::from(topic),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    };
    let effects = core.publish(&"pub".into(), retained("r/a", b"1"), now);
    assert!(effects.retained_to_nodes.is_empty(), "no cluster: nothing");
    core.join_cluster();
    let effects = core.publish(&"pub".into(), retained("r/a", b"2"), now);
    assert_eq!(effects.retained_to_nodes.len(), 1);
    assert_eq!(&effects.retained_to_nodes[0].payload[..], b"2");
    let effects = core.publish(&"".into(), retained("$SYS/x", b"3"), now);
    assert!(
        effects.retained_to_nodes.is_empty(),
        "$SYS stays on its node"
    );

    let client = ByteString::from("sub");
    core.connect(&client, true, Duration::ZERO, 10, now)
        .expect("accepted");
    core.subscribe(&client, subscribe("r/#", QoS::AtLeastOnce), now);
    core.retained_from_node(&"other".into(), retained("r/b", b"from nb"), now);
    core.retained_from_node(&"other".into(), retained("r/a", b""), now);
    core.retained_from_node(&"other".into(), retained("r/none", b""), now);
    core.retained_from_node(&"other".into(), retained("$SYS/y", b"no"), now);
    let topics: Vec<(String, Bytes)> = core
        .retained
        .matching("#")
        .iter()
        .map(|m| (m.topic.to_string(), m.payload.clone()))
        .collect();
    assert_eq!(
        topics,
        vec![("r/b".to_string(), Bytes::from_static(b"from nb"))]
    );
    assert!(core
        .retained
        .matching("$SYS/#")
        .iter()
        .all(|m| m.topic != "$SYS/y"));
}
