//! Shared subscriptions across cores (`share.rs`): the engines of several cores, wired by
//! hand: every `CoreMsg` is carried to its core at once, as the server's channels would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::share::shared_filter;
use super::{Broker, CoreMsg, Effects, SessionPolicy};
use crate::ownership::CoreId;
use crate::protocol::{Packet, PacketId, Properties, Publish, QoS, Unsubscribe};
use crate::session::Message;
use crate::topic::SharedFilter;

struct Cluster {
    cores: Vec<Broker>,
    /// Packets delivered, by client id, with the core that delivered them.
    inbox: Vec<(CoreId, ByteString, Packet)>,
    now: Instant,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let policy = SessionPolicy {
            max_session_expiry: Duration::from_secs(3600),
            limits: crate::session::state::QueueLimits {
                max_messages: 100,
                ..Default::default()
            },
            max_sessions: usize::MAX,
            max_subscriptions: usize::MAX,
        };
        Cluster {
            cores: (0..n)
                .map(|i| {
                    Broker::new(
                        CoreId(i),
                        n,
                        policy.clone(),
                        crate::broker::WallClock::now_from_system(),
                    )
                })
                .collect(),
            inbox: Vec::new(),
            now: Instant::now(),
        }
    }

    fn run(&mut self, from: usize, effects: Effects) {
        let mut pending = vec![(CoreId(from), effects)];
        while let Some((core, effects)) = pending.pop() {
            for (client, packet) in effects.to_clients {
                self.inbox.push((core, client, packet.into_packet()));
            }
            for (to, msg) in effects.to_cores {
                let more = self.cores[to.0].on_core_msg(msg, self.now);
                pending.push((to, more));
            }
        }
    }

    fn connect(&mut self, core: usize, client: &str, expiry: u64) {
        let (_, _, _, effects) = self.cores[core]
            .connect(
                &client.into(),
                false,
                Duration::from_secs(expiry),
                100,
                self.now,
            )
            .unwrap();
        self.run(core, effects);
    }

    fn disconnect(&mut self, core: usize, client: &str) {
        let effects = self.cores[core].disconnect(&client.into(), None, self.now);
        self.run(core, effects);
    }

    fn subscribe(&mut self, core: usize, client: &str, filter: &str, qos: QoS) -> u8 {
        let subscribe = crate::protocol::Subscribe::one(PacketId::new(1).unwrap(), filter, qos);
        let outcome = self.cores[core].subscribe(&client.into(), subscribe, self.now);
        self.run(core, outcome.effects);
        outcome.sub_ack.reason_codes[0].0
    }

    fn unsubscribe(&mut self, core: usize, client: &str, filter: &str) {
        let unsubscribe = Unsubscribe {
            packet_id: PacketId::new(2).unwrap(),
            properties: Properties::default(),
            filters: vec![filter.into()],
        };
        let (_, effects) = self.cores[core].unsubscribe(&client.into(), unsubscribe);
        self.run(core, effects);
    }

    fn publish(&mut self, core: usize, topic: &str, payload: &str, qos: QoS) {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(9).unwrap()),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        };
        let effects = self.cores[core].publish(&"publisher".into(), publish, self.now);
        self.run(core, effects);
    }

    /// Payloads received by each client.
    fn received(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (_, client, packet) in &self.inbox {
            if let Packet::Publish(p) = packet {
                out.entry(client.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
        out
    }
}

fn total(received: &HashMap<String, Vec<String>>, clients: &[&str]) -> usize {
    clients
        .iter()
        .map(|c| received.get(*c).map_or(0, Vec::len))
        .sum()
}

#[test]
fn mqtt_4_8_2_each_message_reaches_one_member_across_cores_evenly() {
    let mut cluster = Cluster::new(2);
    for (core, client) in [(0, "a"), (1, "b"), (1, "c"), (0, "d")] {
        cluster.connect(core, client, 0);
        assert_eq!(
            cluster.subscribe(core, client, "$share/g/jobs/+", QoS::AtLeastOnce),
            1
        );
    }
    for n in 0..400 {
        cluster.publish(n % 2, "jobs/x", &n.to_string(), QoS::AtLeastOnce);
    }
    let received = cluster.received();
    let mut all: Vec<&String> = received.values().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400, "every message once");
    assert_eq!(
        total(&received, &["a", "b", "c", "d"]),
        400,
        "and only once"
    );
    for client in ["a", "b", "c", "d"] {
        assert_eq!(received[client].len(), 100, "{client}: {received:?}");
    }
}

#[test]
fn two_groups_and_a_plain_subscriber_each_get_every_message() {
    let mut cluster = Cluster::new(2);
    for (core, client, filter) in [
        (0, "g1a", "$share/one/t"),
        (1, "g1b", "$share/one/t"),
        (1, "g2a", "$share/two/t"),
        (0, "plain", "t"),
    ] {
        cluster.connect(core, client, 0);
        cluster.subscribe(core, client, filter, QoS::AtMostOnce);
    }
    for n in 0..10 {
        cluster.publish(n % 2, "t", &n.to_string(), QoS::AtMostOnce);
    }
    let received = cluster.received();
    assert_eq!(total(&received, &["g1a", "g1b"]), 10);
    assert_eq!(total(&received, &["g2a"]), 10);
    assert_eq!(total(&received, &["plain"]), 10);
}

#[test]
fn a_member_that_leaves_gets_nothing_more_and_the_group_loses_nothing() {
    let mut cluster = Cluster::new(2);
    for (core, client) in [(0, "stay"), (1, "leave"), (1, "quit")] {
        cluster.connect(core, client, 0);
        cluster.subscribe(core, client, "$share/g/t", QoS::AtLeastOnce);
    }
    cluster.unsubscribe(1, "leave", "$share/g/t");
    cluster.disconnect(1, "quit");
    for n in 0..20 {
        cluster.publish(n % 2, "t", &n.to_string(), QoS::AtLeastOnce);
    }
    let received = cluster.received();
    assert_eq!(total(&received, &["stay"]), 20);
    assert_eq!(total(&received, &["leave", "quit"]), 0);
    assert_eq!(cluster.cores[0].shares.group_count(), 1);
    assert_eq!(
        cluster.cores[1]
            .shares
            .counts(CoreId(1), &group("$share/g/t")),
        (0, 0)
    );
}

fn group(raw: &str) -> SharedFilter {
    shared_filter(&raw.into()).unwrap()
}

#[test]
fn connected_members_are_preferred_and_offline_ones_queue_when_alone() {
    let mut cluster = Cluster::new(2);
    cluster.connect(0, "online", 0);
    cluster.connect(1, "away", 3600);
    cluster.subscribe(0, "online", "$share/g/t", QoS::AtLeastOnce);
    cluster.subscribe(1, "away", "$share/g/t", QoS::AtLeastOnce);
    cluster.disconnect(1, "away");
    for core in 0..2 {
        assert_eq!(
            cluster.cores[core]
                .shares
                .counts(CoreId(1), &group("$share/g/t")),
            (1, 0),
            "core {core} sees the offline member"
        );
    }
    for n in 0..6 {
        cluster.publish(n % 2, "t", &n.to_string(), QoS::AtLeastOnce);
    }
    assert_eq!(total(&cluster.received(), &["online"]), 6);
    // With nobody connected the offline member's session queues the messages.
    cluster.disconnect(0, "online");
    cluster.inbox.clear();
    for n in 0..3 {
        cluster.publish(0, "t", &n.to_string(), QoS::AtLeastOnce);
    }
    let (_, _, resume, _) = cluster.cores[1]
        .connect(
            &"away".into(),
            false,
            Duration::from_secs(60),
            100,
            cluster.now,
        )
        .unwrap();
    assert_eq!(resume.len(), 3, "queued while offline: {resume:?}");
}

#[test]
fn a_stale_pick_is_passed_on_once_then_counted() {
    let mut cluster = Cluster::new(2);
    cluster.connect(0, "a", 0);
    cluster.connect(1, "b", 0);
    cluster.subscribe(0, "a", "$share/g/t", QoS::AtMostOnce);
    cluster.subscribe(1, "b", "$share/g/t", QoS::AtMostOnce);
    let message = Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
        publisher: "p".into(),
        expires_at: None,
        origin: None,
    });
    // Core 1's member leaves; a message picked for core 1 before it heard is passed on.
    let mut effects = Effects::default();
    cluster.cores[1].remove_shared(&"b".into(), &group("$share/g/t"), &mut effects);
    let mut passed = Effects::default();
    cluster.cores[1].deliver_shared(
        &message,
        &group("$share/g/t"),
        false,
        cluster.now,
        &mut passed,
    );
    assert!(matches!(
        passed.to_cores.as_slice(),
        [(
            CoreId(0),
            CoreMsg::Shared {
                redirected: true,
                ..
            }
        )]
    ));
    cluster.run(1, passed);
    assert_eq!(total(&cluster.received(), &["a"]), 1);
    // Passed on already: no second hop.
    let mut dropped = Effects::default();
    cluster.cores[1].deliver_shared(
        &message,
        &group("$share/g/t"),
        true,
        cluster.now,
        &mut dropped,
    );
    assert!(dropped.to_cores.is_empty() && dropped.to_clients.is_empty());
    assert_eq!(cluster.cores[1].shares.undeliverable, 1);
}

#[test]
fn mqtt_3_3_1_3_no_retained_messages_on_a_shared_subscribe() {
    let mut cluster = Cluster::new(1);
    cluster.connect(0, "pub", 0);
    let retained = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "t".into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from_static(b"kept"),
    };
    let effects = cluster.cores[0].publish(&"pub".into(), retained, cluster.now);
    cluster.run(0, effects);
    cluster.connect(0, "s", 0);
    cluster.subscribe(0, "s", "$share/g/t", QoS::AtMostOnce);
    assert!(cluster.received().is_empty());
    cluster.subscribe(0, "s", "t", QoS::AtMostOnce);
    assert_eq!(total(&cluster.received(), &["s"]), 1);
}

#[test]
fn ending_a_session_leaves_its_groups_everywhere() {
    let mut cluster = Cluster::new(3);
    cluster.connect(2, "m", 60);
    cluster.subscribe(2, "m", "$share/g/a/#", QoS::AtLeastOnce);
    cluster.subscribe(2, "m", "$share/h/a/#", QoS::AtLeastOnce);
    for core in 0..3 {
        assert_eq!(cluster.cores[core].shares.group_count(), 2);
    }
    let (_, _, _, effects) = cluster.cores[2]
        .connect(&"m".into(), true, Duration::ZERO, 10, cluster.now)
        .unwrap();
    cluster.run(2, effects);
    for core in 0..3 {
        assert_eq!(cluster.cores[core].shares.group_count(), 0, "core {core}");
    }
    assert!(cluster.cores[2].shares.local.is_empty());
}

fn job(payload: &str) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "jobs/x".into(),
        packet_id: Some(PacketId::new(9).unwrap()),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

#[test]
fn across_nodes_each_message_goes_to_one_node_per_group() {
    let group = ByteString::from_static("$share/g/jobs/+");
    let mut node = Cluster::new(1);
    node.connect(0, "a", 0);
    let subscribe = crate::protocol::Subscribe::one(
        PacketId::new(1).unwrap(),
        "$share/g/jobs/+",
        QoS::AtLeastOnce,
    );
    let outcome = node.cores[0].subscribe(&"a".into(), subscribe, node.now);
    assert_eq!(outcome.effects.node_interest, vec![(group.clone(), true)]);
    node.run(0, outcome.effects);
    // Node 7 has members of the group, node 8 a plain subscriber of the topic.
    node.cores[0].remote_interest(super::NodeId(7), group.clone(), true);
    node.cores[0].remote_interest(super::NodeId(8), "jobs/#".into(), true);
    let mut for_seven = 0;
    for n in 0..6 {
        let effects = node.cores[0].publish(&"publisher".into(), job(&n.to_string()), node.now);
        for (to, _, groups) in &effects.to_nodes {
            match to.0 {
                7 => {
                    assert_eq!(groups, std::slice::from_ref(&group));
                    for_seven += 1;
                }
                8 => assert!(groups.is_empty(), "plain interest only"),
                other => panic!("sent to node {other}"),
            }
        }
        node.run(0, effects);
    }
    assert_eq!(for_seven, 3, "round robin over this node and node 7");
    assert_eq!(node.received()["a"].len(), 3, "the others went to node 7");
    // From another node: only the groups it names take the message.
    let effects = node.cores[0].publish_from_node(&"far".into(), job("p"), None, &[], node.now);
    assert!(effects.to_nodes.is_empty(), "never sent on");
    node.run(0, effects);
    assert_eq!(node.received()["a"].len(), 3, "picked elsewhere");
    let named = std::slice::from_ref(&group);
    let effects = node.cores[0].publish_from_node(&"far".into(), job("q"), None, named, node.now);
    node.run(0, effects);
    assert_eq!(node.received()["a"].last().unwrap(), "q");
    // The last member leaving withdraws the node's group; node 7 then gets every message.
    let unsubscribe = Unsubscribe {
        packet_id: PacketId::new(2).unwrap(),
        properties: Properties::default(),
        filters: vec![group.clone()],
    };
    let (_, effects) = node.cores[0].unsubscribe(&"a".into(), unsubscribe);
    assert_eq!(effects.node_interest, vec![(group.clone(), false)]);
    node.run(0, effects);
    for n in 0..4 {
        let effects = node.cores[0].publish(&"publisher".into(), job(&n.to_string()), node.now);
        assert!(effects
            .to_nodes
            .iter()
            .any(|(to, _, g)| to.0 == 7 && g == named));
    }
}

#[test]
fn a_qos2_stream_message_delivered_twice_reaches_its_group_once() {
    let group = ByteString::from_static("$share/g/jobs/+");
    let mut node = Cluster::new(1);
    node.connect(0, "a", 0);
    node.subscribe(0, "a", "$share/g/jobs/+", QoS::ExactlyOnce);
    let named = std::slice::from_ref(&group);
    for _ in 0..2 {
        let mut publish = job("once");
        publish.qos = QoS::ExactlyOnce;
        let effects =
            node.cores[0].publish_from_node(&"far".into(), publish, Some(41), named, node.now);
        node.run(0, effects);
    }
    assert_eq!(node.received()["a"], ["once"]);
}
