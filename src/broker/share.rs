//! Shared subscriptions across cores (MQTT 5.0 section 4.8.2; accepted from 3.1.1 clients
//! too, as most brokers do).
//!
//! A share group (`$share/{ShareName}/{filter}`) has members on any core, because its
//! members are sessions and a session lives on the core that owns its client id. Two
//! tables make one delivery per group out of that:
//!
//! * `local`: this core's members, grouped, each with its subscription and whether its
//!   client is connected. The receiving core picks one member round-robin.
//! * `placements`: for every group on any core, how many members (and connected members)
//!   each core holds, replicated to every core by [`CoreMsg::ShareCount`]. The core that
//!   routes a message picks one core per matching group (weighted round robin, see
//!   [`GroupPlacement`]) and sends it there as [`CoreMsg::Shared`], or delivers it itself.
//!
//! When the chosen core cannot deliver (its members left, or went offline, after the pick
//! was made elsewhere) it prefers, in order: a connected local member; another core with
//! a connected member (the message is passed on once, flagged `redirected`); an offline
//! local member (the message queues in its session); another core with any member. A
//! message that finds none of these is dropped and counted (`undeliverable`).
//!
//! Invariants: a message goes to at most one member of each matching group however many
//! cores hold members; members of different groups each get their copy; No Local does
//! not apply [MQTT-3.8.3-4] and retained messages are not sent on subscribing (MQTT 5.0
//! 3.3.1.3 sends them for new Non-shared Subscriptions only).

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use super::publish::Recipient;
use super::{Broker, CoreMsg, Effects};
use crate::ownership::CoreId;
use crate::session::{Message, Subscription};
use crate::topic::{
    GroupPlacement, ParsedFilter, ShareName, SharedFilter, SharedSubscriptions, SubscriptionTree,
    TopicFilter, TopicName, SHARE_PREFIX,
};

/// One session's membership of a share group on its owner core.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub subscription: Subscription,
    /// Whether the session's client is connected: connected members are preferred.
    pub online: bool,
}

/// A group's row of the replicated placement table.
struct Placement {
    /// The group's filter, which the tree walk does not hand back.
    filter: TopicFilter,
    cores: GroupPlacement,
}

/// The shared subscriptions as one core sees them.
pub(crate) struct Shares {
    cores: usize,
    /// This core's members.
    pub local: SharedSubscriptions<ByteString, Member>,
    /// Every group on any core and its members per core.
    placements: SubscriptionTree<ShareName, Placement>,
    /// Messages for a group that no member could take.
    pub undeliverable: u64,
}

impl Shares {
    pub fn new(cores: usize) -> Shares {
        Shares {
            cores,
            local: SharedSubscriptions::new(),
            placements: SubscriptionTree::new(),
            undeliverable: 0,
        }
    }

    /// Records that `core` holds `members` members of `group`, `online` of them connected.
    pub fn set_count(&mut self, core: CoreId, group: &SharedFilter, members: u32, online: u32) {
        if let Some(row) = self.placements.get_mut(&group.filter, &group.group) {
            row.cores.set(core.0, members, online);
            if row.cores.is_empty() {
                let _ = self.placements.remove(&group.filter, &group.group);
            }
            return;
        }
        if members == 0 {
            return;
        }
        let mut cores = GroupPlacement::new(self.cores);
        cores.set(core.0, members, online);
        let row = Placement {
            filter: group.filter.clone(),
            cores,
        };
        let _ = self
            .placements
            .insert(&group.filter, group.group.clone(), row);
    }

    fn counts(&self, core: CoreId, group: &SharedFilter) -> (u32, u32) {
        self.placements
            .get(&group.filter, &group.group)
            .map_or((0, 0), |row| row.cores.counts(core.0))
    }

    /// Groups known anywhere.
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.placements.len()
    }
}

/// The shared filter a session's subscription key stands for, if it is one.
fn shared_filter(raw: &ByteString) -> Option<SharedFilter> {
    if !raw.starts_with(SHARE_PREFIX) {
        return None;
    }
    match ParsedFilter::parse(raw.clone()) {
        Ok(ParsedFilter::Shared(shared)) => Some(shared),
        _ => None,
    }
}

impl Broker {
    /// Adds (or replaces) `client_id`'s membership of `group`. Returns whether it is new.
    pub(super) fn add_shared(
        &mut self,
        client_id: &ByteString,
        group: &SharedFilter,
        subscription: Subscription,
        effects: &mut Effects,
    ) -> bool {
        let online = self.sessions.get(client_id).is_some_and(|slot| slot.online);
        let member = Member {
            subscription,
            online,
        };
        let replaced = self
            .shares
            .local
            .insert(group, client_id.clone(), member)
            .replaced;
        let (members, connected) = self.shares.counts(self.id, group);
        let (members, connected) = match &replaced {
            None => (members + 1, connected + u32::from(online)),
            Some(old) => (
                members,
                (connected + u32::from(online)).saturating_sub(u32::from(old.online)),
            ),
        };
        self.share_count_changed(group, members, connected, effects);
        replaced.is_none()
    }

    /// Ends `client_id`'s membership of `group`, if it had one.
    pub(super) fn remove_shared(
        &mut self,
        client_id: &ByteString,
        group: &SharedFilter,
        effects: &mut Effects,
    ) {
        let Some(old) = self.shares.local.remove(group, client_id).removed else {
            return;
        };
        let (members, connected) = self.shares.counts(self.id, group);
        let (members, connected) = (
            members.saturating_sub(1),
            connected.saturating_sub(u32::from(old.online)),
        );
        self.share_count_changed(group, members, connected, effects);
    }

    /// The client of a session connected (`online`) or went away: its share groups now
    /// prefer, or pass over, it. Idempotent.
    pub(super) fn share_presence(
        &mut self,
        client_id: &ByteString,
        online: bool,
        effects: &mut Effects,
    ) {
        let Some(slot) = self.sessions.get(client_id) else {
            return;
        };
        let groups: Vec<SharedFilter> = slot
            .session
            .subscriptions
            .keys()
            .filter_map(shared_filter)
            .collect();
        for group in groups {
            let Some(member) = self.shares.local.get_mut(&group, client_id) else {
                continue;
            };
            if member.online == online {
                continue;
            }
            member.online = online;
            let (members, connected) = self.shares.counts(self.id, &group);
            let connected = if online {
                connected + 1
            } else {
                connected.saturating_sub(1)
            };
            self.share_count_changed(&group, members, connected, effects);
        }
    }

    fn share_count_changed(
        &mut self,
        group: &SharedFilter,
        members: u32,
        online: u32,
        effects: &mut Effects,
    ) {
        self.shares.set_count(self.id, group, members, online);
        self.broadcast(effects, |from| CoreMsg::ShareCount {
            from,
            group: group.clone(),
            members,
            online,
        });
    }

    /// Picks, for every share group whose filter matches, the core that delivers to it,
    /// and delivers or sends the message accordingly.
    pub(super) fn route_shared(
        &mut self,
        topic: &TopicName,
        message: &Arc<Message>,
        now: Instant,
        effects: &mut Effects,
    ) {
        if self.shares.placements.is_empty() {
            return;
        }
        let mut picks: Vec<(CoreId, SharedFilter)> = Vec::new();
        self.shares.placements.matches_mut(topic, |group, row| {
            if let Some(core) = row.cores.pick(None) {
                let filter = row.filter.clone();
                picks.push((
                    CoreId(core),
                    SharedFilter {
                        group: group.clone(),
                        filter,
                    },
                ));
            }
        });
        picks.sort_by_key(|(core, _)| *core);
        let mut picks = picks.into_iter().peekable();
        while let Some((core, group)) = picks.next() {
            if core == self.id {
                self.deliver_shared(message, &group, false, now, effects);
                continue;
            }
            let mut groups = vec![group];
            while let Some((_, group)) = picks.next_if(|(next, _)| *next == core) {
                groups.push(group);
            }
            effects.to_cores.push((
                core,
                CoreMsg::Shared {
                    message: message.clone(),
                    groups,
                    redirected: false,
                },
            ));
        }
    }

    /// Delivers `message` to one member of `group` on this core, or passes it on (see the
    /// module documentation for the order of preference).
    pub(super) fn deliver_shared(
        &mut self,
        message: &Arc<Message>,
        group: &SharedFilter,
        redirected: bool,
        now: Instant,
        effects: &mut Effects,
    ) {
        let here = self.id.0;
        let local = self.shares.local.group_mut(group);
        let connected = local.and_then(|members| {
            members
                .next_member_where(|_, member| member.online)
                .map(|(client, member)| (client.clone(), member.subscription.clone()))
        });
        if let Some((client, subscription)) = connected {
            return self.deliver_to_member(message, &client, &subscription, now, effects);
        }
        let row = self.shares.placements.get_mut(&group.filter, &group.group);
        let elsewhere = match row {
            Some(row) if !redirected && row.cores.online_elsewhere(here) => {
                row.cores.pick(Some(here))
            }
            _ => None,
        };
        if let Some(core) = elsewhere {
            return self.redirect_shared(message, group, core, effects);
        }
        let offline = self.shares.local.group_mut(group).and_then(|members| {
            members
                .next_member()
                .map(|(client, member)| (client.clone(), member.subscription.clone()))
        });
        if let Some((client, subscription)) = offline {
            return self.deliver_to_member(message, &client, &subscription, now, effects);
        }
        let anywhere = match self.shares.placements.get_mut(&group.filter, &group.group) {
            Some(row) if !redirected => row.cores.pick(Some(here)),
            _ => None,
        };
        match anywhere {
            Some(core) => self.redirect_shared(message, group, core, effects),
            None => self.shares.undeliverable += 1,
        }
    }

    fn redirect_shared(
        &mut self,
        message: &Arc<Message>,
        group: &SharedFilter,
        core: usize,
        effects: &mut Effects,
    ) {
        effects.to_cores.push((
            CoreId(core),
            CoreMsg::Shared {
                message: message.clone(),
                groups: vec![group.clone()],
                redirected: true,
            },
        ));
    }

    fn deliver_to_member(
        &mut self,
        message: &Arc<Message>,
        client: &ByteString,
        subscription: &Subscription,
        now: Instant,
        effects: &mut Effects,
    ) {
        if !self.sessions.contains_key(client) {
            // A member without a session cannot be: sessions leave their groups as they end.
            self.shares.undeliverable += 1;
            return;
        }
        let recipient = Recipient {
            client_id: client.clone(),
            qos: message.qos.min(subscription.options.qos),
            retain: subscription.options.retain_as_published && message.retain,
            subscription_identifiers: subscription.identifier.into_iter().collect(),
        };
        self.deliver_to(message, vec![recipient], None, now, effects);
    }
}

#[cfg(test)]
mod tests {
    //! The engines of several cores, wired by hand: every `CoreMsg` is carried to its core
    //! at once, as the server's channels would.

    use std::collections::HashMap;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::broker::SessionPolicy;
    use crate::protocol::{
        Packet, PacketId, Properties, Publish, QoS, SubscriptionOptions, Unsubscribe,
    };

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
            let subscribe = crate::protocol::Subscribe {
                packet_id: PacketId::new(1).unwrap(),
                properties: Properties::default(),
                filters: vec![(
                    filter.into(),
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                )],
            };
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
}
