//! What the admin API reads of a session (its subscriptions and held messages, in arrival
//! order, paged by number) and the session limits it changes at run time.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use super::{Broker, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{PacketId, Properties, Publish, QoS, Subscribe};
use crate::session::state::{Overflow, QueueLimits};

fn publish(core: &mut Broker, topic: &str, payload: &[u8], now: std::time::Instant) {
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    };
    core.publish(&ByteString::from_static("p"), publish, now);
}

#[test]
fn held_messages_come_in_flight_first_then_queued_and_page_by_number() {
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut core = Broker::new(CoreId(0), 1, SessionPolicy::default(), clock);
    let c = ByteString::from("c");
    // Receive Maximum 1: the first message goes in flight, the others wait.
    core.connect(&c, false, Duration::from_secs(3600), 1, now)
        .unwrap();
    let one = PacketId::new(1).unwrap();
    core.subscribe(&c, Subscribe::one(one, "t/#", QoS::AtLeastOnce), now);
    core.subscribe(&c, Subscribe::one(one, "a", QoS::AtMostOnce), now);
    let filters: Vec<_> = core
        .subscriptions_of("c")
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(filters, ["a", "t/#"]);
    for (topic, payload) in [("t/1", &b"one"[..]), ("t/2", b"two"), ("t/3", b"three")] {
        publish(&mut core, topic, payload, now);
    }
    let (all, more) = core.held_messages("c", None, 10).unwrap();
    assert!(!more);
    let seen: Vec<_> = all
        .iter()
        .map(|m| {
            let message = m.message.as_ref().unwrap();
            (
                m.in_flight.is_some(),
                message.topic.to_string(),
                message.payload.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (true, "t/1".to_string(), Bytes::from_static(b"one")),
            (false, "t/2".to_string(), Bytes::from_static(b"two")),
            (false, "t/3".to_string(), Bytes::from_static(b"three")),
        ]
    );
    let (first, more) = core.held_messages("c", None, 2).unwrap();
    assert!(more);
    let (rest, more) = core.held_messages("c", Some(first[1].seq), 2).unwrap();
    assert!(!more);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].seq, all[2].seq);
    assert!(core.held_messages("nobody", None, 2).is_none());
}

#[test]
fn session_limits_changed_at_run_time_hold_for_the_next_message() {
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut core = Broker::new(CoreId(0), 1, SessionPolicy::default(), clock);
    let c = ByteString::from("c");
    core.connect(&c, false, Duration::from_secs(3600), 10, now)
        .unwrap();
    let one = PacketId::new(1).unwrap();
    core.subscribe(&c, Subscribe::one(one, "t", QoS::AtLeastOnce), now);
    core.disconnect(&c, None, now);
    let limits = QueueLimits {
        max_messages: 2,
        overflow: Overflow::RefuseNewest,
        ..QueueLimits::default()
    };
    core.set_session_limits(Duration::from_secs(60), limits);
    for payload in [b"1", b"2", b"3"] {
        publish(&mut core, "t", payload, now);
    }
    let (held, _) = core.held_messages("c", None, 10).unwrap();
    let payloads: Vec<_> = held
        .iter()
        .map(|m| m.message.as_ref().unwrap().payload.clone())
        .collect();
    assert_eq!(
        payloads,
        [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
    );
    // The new cap holds for a session that connects from now on.
    let d = ByteString::from("d");
    core.connect(&d, false, Duration::from_secs(3600), 10, now)
        .unwrap();
    assert_eq!(core.session_view("d", now).unwrap().expiry_secs, 60);
}
