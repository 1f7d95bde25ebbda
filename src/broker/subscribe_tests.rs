//! `max_subscriptions`, the quota of subscriptions per session: through SUBSCRIBE,
//! UNSUBSCRIBE, shared subscriptions and a restart under a lower limit.

use std::time::Duration;

use bytestring::ByteString;

use super::journal::MemJournal;
use super::{Broker, Rebuild, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{
    PacketId, Properties, QoS, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};

fn policy(max_subscriptions: usize) -> SessionPolicy {
    SessionPolicy {
        max_subscriptions,
        ..SessionPolicy::default()
    }
}

fn subscribe(filters: &[(&str, QoS)]) -> Subscribe {
    Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|&(f, qos)| {
                let options = SubscriptionOptions {
                    qos,
                    ..Default::default()
                };
                (ByteString::from(f), options)
            })
            .collect(),
    }
}

const Q1: QoS = QoS::AtLeastOnce;
const QUOTA: ReasonCode = ReasonCode::QUOTA_EXCEEDED;

#[test]
fn filters_beyond_the_quota_are_refused_and_the_others_of_the_packet_granted() {
    let journal = MemJournal::new(4096);
    let clock = WallClock::now_from_system();
    let now = clock.base;
    let mut core = Broker::with_journal(CoreId(0), 1, policy(2), Box::new(journal.clone()), clock);
    let c = ByteString::from("c");
    core.connect(&c, false, Duration::from_secs(3600), 10, now)
        .unwrap();
    let codes = |core: &mut Broker, filters: &[(&str, QoS)]| {
        core.subscribe(&c, subscribe(filters), now)
            .sub_ack
            .reason_codes
    };

    let got = codes(&mut core, &[("a", Q1), ("b", Q1), ("c", Q1)]);
    assert_eq!(got, [ReasonCode(1), ReasonCode(1), QUOTA]);
    // [MQTT-3.8.4-3] a subscription to a filter held replaces it: not a new one.
    let got = codes(
        &mut core,
        &[("a", QoS::ExactlyOnce), ("d", Q1), ("a/#", Q1)],
    );
    assert_eq!(got, [ReasonCode(2), QUOTA, QUOTA]);
    // A shared subscription counts as one, and an invalid filter is still invalid.
    let got = codes(&mut core, &[("$share/g/x", Q1), ("a/#/b", Q1)]);
    assert_eq!(got, [QUOTA, ReasonCode::TOPIC_FILTER_INVALID]);
    assert_eq!(core.counters.subscriptions_refused, 4);

    let unsubscribe = Unsubscribe {
        packet_id: PacketId::new(2).unwrap(),
        properties: Properties::default(),
        filters: vec!["a".into()],
    };
    core.unsubscribe(&c, unsubscribe);
    let got = codes(&mut core, &[("$share/g/x", Q1), ("e", Q1)]);
    assert_eq!(got, [ReasonCode(1), QUOTA], "an UNSUBSCRIBE frees room");
    core.disconnect(&c, None, now);
    drop(core);

    // A restart under a lower limit keeps what was granted, and refuses what is new.
    let mut rebuild = Rebuild::new(clock);
    journal.replay(|pos, kind, body| rebuild.visit(pos, kind, body));
    let (mut core, _) = Broker::recover(
        CoreId(0),
        1,
        policy(1),
        Box::new(journal.clone()),
        rebuild,
        now,
    );
    let (present, ..) = core
        .connect(&c, false, Duration::from_secs(3600), 10, now)
        .unwrap();
    assert!(present);
    let mut held: Vec<String> = core.sessions[&c]
        .session
        .subscriptions
        .keys()
        .map(|f| f.to_string())
        .collect();
    held.sort();
    assert_eq!(held, ["$share/g/x", "b"]);
    let got = codes(&mut core, &[("b", QoS::AtMostOnce), ("f", Q1)]);
    assert_eq!(got, [ReasonCode(0), QUOTA]);
}

#[test]
fn no_limit_by_default_in_the_engine() {
    let mut core = Broker::new(
        CoreId(0),
        1,
        SessionPolicy::default(),
        WallClock::now_from_system(),
    );
    let now = std::time::Instant::now();
    let c = ByteString::from("c");
    core.connect(&c, true, Duration::ZERO, 10, now).unwrap();
    let filters: Vec<String> = (0..100).map(|i| format!("f/{i}")).collect();
    let filters: Vec<(&str, QoS)> = filters.iter().map(|f| (f.as_str(), Q1)).collect();
    let got = core
        .subscribe(&c, subscribe(&filters), now)
        .sub_ack
        .reason_codes;
    assert!(got.iter().all(|c| *c == ReasonCode(1)), "{got:?}");
}
