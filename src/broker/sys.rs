//! `$SYS/broker/...`: the broker's own figures, under Mosquitto's topic names, published by
//! core 0 as retained QoS 0 messages through the normal publish path, so that a
//! subscriber on any core sees them.
//!
//! Counting stays per core with no shared atomics: every core takes a [`CoreStats`]
//! snapshot every `sys_interval` (the engine's figures from [`Broker::core_stats`], the
//! connections' from the server) and sends it to core 0 ([`CoreMsg::Stats`]); core 0 adds
//! up the latest snapshot of each core and publishes the figures that changed since it
//! last did ([`Broker::publish_sys`]). A figure is therefore at most about one interval old.
//!
//! Only what is measured is published. To add a figure: add a [`Stat`] variant, give it
//! its topic and how cores combine in [`Stat::topic`] and [`Stat::combine`], add it to
//! [`Stat::ALL`], and set it where it is measured (the engine in [`Broker::core_stats`],
//! the server in its snapshot). Nothing else changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::sys_load::{Load, LOADS};
use super::{Broker, Effects};
use crate::ownership::CoreId;
use crate::protocol::{Properties, Publish, QoS};
pub use crate::topic::is_sys_topic;

/// One measured figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Sessions with a connected client.
    ClientsConnected,
    /// Persistent sessions whose client is away.
    ClientsDisconnected,
    /// Subscriptions held, shared memberships included.
    Subscriptions,
    /// Retained messages (every core holds all of them).
    RetainedMessages,
    /// MQTT control packets of any type received from clients, CONNECT included.
    MessagesReceived,
    /// MQTT control packets of any type written to clients.
    MessagesSent,
    /// PUBLISH packets received from clients.
    PublishReceived,
    /// PUBLISH packets written to clients.
    PublishSent,
    /// Messages dropped: a session's queue overflowed, no member of a share group could
    /// take one, a connected client's outbox held `max_outbox_bytes` of QoS 0 already,
    /// or one was above the client's Maximum Packet Size.
    PublishDropped,
    /// QoS 1/2 PUBLISH packets refused because the store could not take them (disk full,
    /// `max_stored_bytes`).
    PublishRefused,
    BytesReceived,
    BytesSent,
    /// Bytes of log segments on disk, all cores together.
    StoreBytes,
    /// Messages held for persistent or busy sessions (each stored once per core).
    StoreMessages,
    /// Messages waiting in session queues or windows (one per session they wait for).
    StoreQueued,
    /// Records the log could not take (disk full, I/O error).
    StoreErrors,
    /// Filters of a SUBSCRIBE refused with Quota exceeded: the session held
    /// `max_subscriptions` already.
    SubscriptionsRefused,
    /// QoS 0 dropped at a connected client's full outbox while its core kept up: the client
    /// is slower than its peers (part of `PublishDropped`).
    DroppedSlowSubscriber,
    /// QoS 0 dropped at a full outbox while the core was behind (most of its subscribers'
    /// outboxes full: overload; part of `PublishDropped`).
    DroppedOverload,
    /// SUBSCRIBE filters and PUBLISH packets the ACL refused.
    AclRefused,
    /// Deliveries the ACL refused: the recipient may not read the topic.
    AclDenied,
    // The abuse limits (`config::limits`), counted where they refuse.
    /// Connections closed at accept: `max_connections` were open.
    RefusedMaxConnections,
    /// Connections closed at accept: over `max_connection_rate`.
    RefusedConnectionRate,
    /// CONNECTs refused: client id longer than `max_clientid_len`.
    RefusedClientIdLength,
    /// CONNECTs refused by the ban file.
    RefusedBanned,
    /// CONNECTs refused while flapping detection bans the client id.
    RefusedFlapping,
    /// Client ids flapping detection has banned.
    FlappingBans,
    /// PUBLISH packets dropped over `max_publish_rate`.
    PublishRateLimited,
    /// PUBLISH packets whose topic had more than `max_topic_levels` levels.
    PublishTooDeep,
    /// SUBSCRIBE filters with more than `max_topic_levels` levels.
    SubscriptionsTooDeep,
    // Drops by reason (`publish/messages/dropped/...`, and `berth_messages_dropped_total`
    // by `reason`); `PublishDropped` keeps Mosquitto's meaning, the first four of these.
    /// Messages the `max_queued_messages` / `max_queued_bytes` overflow policy dropped.
    DroppedQueueFull,
    /// QoS 0 an offline session could not keep (the log was full), and QoS 1/2 PUBLISHes
    /// refused because the store could not take them (`PublishRefused`).
    DroppedDiskFull,
    /// PUBLISH packets above the receiving client's Maximum Packet Size.
    DroppedTooLarge,
    /// Messages for a share group none of whose members could take them.
    DroppedNoShareMember,
    /// Deliveries whose Message Expiry Interval passed before they were sent.
    DroppedExpired,
    /// Client PUBLISHes (not retained) that matched no subscription.
    DroppedNoSubscribers,
    /// PUBLISHes the ACL refused, and deliveries it denied (`AclDenied`).
    DroppedAcl,
    /// Offline sessions ended because their expiry interval passed (Mosquitto's
    /// `clients/expired`).
    ClientsExpired,
    /// Connections accepted (sockets), for `load/sockets`.
    SocketsAccepted,
    /// CONNECT packets received, for `load/connections`.
    Connects,
    /// CONNECTs refused in a cluster: another node owns the client id's slot.
    RefusedOtherNode,
}

/// How the figures of the cores make the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Each core counts its own part.
    Sum,
    /// Every core holds the same thing: core 0's own figure is the broker's.
    Replicated,
}

impl Stat {
    pub const ALL: [Stat; 41] = [
        Stat::ClientsConnected,
        Stat::ClientsDisconnected,
        Stat::Subscriptions,
        Stat::RetainedMessages,
        Stat::MessagesReceived,
        Stat::MessagesSent,
        Stat::PublishReceived,
        Stat::PublishSent,
        Stat::PublishDropped,
        Stat::PublishRefused,
        Stat::BytesReceived,
        Stat::BytesSent,
        Stat::StoreBytes,
        Stat::StoreMessages,
        Stat::StoreQueued,
        Stat::StoreErrors,
        Stat::SubscriptionsRefused,
        Stat::DroppedSlowSubscriber,
        Stat::DroppedOverload,
        Stat::AclRefused,
        Stat::AclDenied,
        Stat::RefusedMaxConnections,
        Stat::RefusedConnectionRate,
        Stat::RefusedClientIdLength,
        Stat::RefusedBanned,
        Stat::RefusedFlapping,
        Stat::FlappingBans,
        Stat::PublishRateLimited,
        Stat::PublishTooDeep,
        Stat::SubscriptionsTooDeep,
        Stat::DroppedQueueFull,
        Stat::DroppedDiskFull,
        Stat::DroppedTooLarge,
        Stat::DroppedNoShareMember,
        Stat::DroppedExpired,
        Stat::DroppedNoSubscribers,
        Stat::DroppedAcl,
        Stat::ClientsExpired,
        Stat::SocketsAccepted,
        Stat::Connects,
        Stat::RefusedOtherNode,
    ];

    /// The topic the figure is published on (Mosquitto's name for it).
    pub fn topic(self) -> &'static str {
        match self {
            Stat::ClientsConnected => "$SYS/broker/clients/connected",
            Stat::ClientsDisconnected => "$SYS/broker/clients/disconnected",
            Stat::Subscriptions => "$SYS/broker/subscriptions/count",
            Stat::RetainedMessages => "$SYS/broker/retained messages/count",
            Stat::MessagesReceived => "$SYS/broker/messages/received",
            Stat::MessagesSent => "$SYS/broker/messages/sent",
            Stat::PublishReceived => "$SYS/broker/publish/messages/received",
            Stat::PublishSent => "$SYS/broker/publish/messages/sent",
            Stat::PublishDropped => "$SYS/broker/publish/messages/dropped",
            Stat::PublishRefused => "$SYS/broker/publish/messages/refused",
            Stat::BytesReceived => "$SYS/broker/bytes/received",
            Stat::BytesSent => "$SYS/broker/bytes/sent",
            Stat::StoreBytes => "$SYS/broker/store/bytes",
            Stat::StoreMessages => "$SYS/broker/store/messages",
            Stat::StoreQueued => "$SYS/broker/store/queued",
            Stat::StoreErrors => "$SYS/broker/store/errors",
            Stat::SubscriptionsRefused => "$SYS/broker/subscriptions/refused",
            Stat::DroppedSlowSubscriber => "$SYS/broker/publish/messages/dropped/slow_subscriber",
            Stat::DroppedOverload => "$SYS/broker/publish/messages/dropped/overload",
            Stat::AclRefused => "$SYS/broker/acl/refused",
            Stat::AclDenied => "$SYS/broker/acl/deliveries_denied",
            Stat::RefusedMaxConnections => "$SYS/broker/clients/refused/max_connections",
            Stat::RefusedConnectionRate => "$SYS/broker/clients/refused/connection_rate",
            Stat::RefusedClientIdLength => "$SYS/broker/clients/refused/client_id_length",
            Stat::RefusedBanned => "$SYS/broker/clients/refused/banned",
            Stat::RefusedFlapping => "$SYS/broker/clients/refused/flapping",
            Stat::FlappingBans => "$SYS/broker/clients/flapping/bans",
            Stat::PublishRateLimited => "$SYS/broker/publish/messages/rate_limited",
            Stat::PublishTooDeep => "$SYS/broker/publish/messages/too_deep",
            Stat::SubscriptionsTooDeep => "$SYS/broker/subscriptions/too_deep",
            Stat::DroppedQueueFull => "$SYS/broker/publish/messages/dropped/queue_full",
            Stat::DroppedDiskFull => "$SYS/broker/publish/messages/dropped/disk_full",
            Stat::DroppedTooLarge => "$SYS/broker/publish/messages/dropped/too_large",
            Stat::DroppedNoShareMember => "$SYS/broker/publish/messages/dropped/no_share_member",
            Stat::DroppedExpired => "$SYS/broker/publish/messages/dropped/expired",
            Stat::DroppedNoSubscribers => "$SYS/broker/publish/messages/dropped/no_subscribers",
            Stat::DroppedAcl => "$SYS/broker/publish/messages/dropped/acl",
            Stat::ClientsExpired => "$SYS/broker/clients/expired",
            Stat::SocketsAccepted => "$SYS/broker/sockets/accepted",
            Stat::Connects => "$SYS/broker/clients/connects",
            Stat::RefusedOtherNode => "$SYS/broker/clients/refused/other_node",
        }
    }

    pub fn combine(self) -> Combine {
        match self {
            Stat::RetainedMessages => Combine::Replicated,
            _ => Combine::Sum,
        }
    }
}

/// `clients/connected` + `clients/disconnected`, as Mosquitto publishes it.
pub const CLIENTS_TOTAL: &str = "$SYS/broker/clients/total";
/// The most clients connected at once, as seen at each `$SYS` update (Mosquitto's
/// meaning: a client that comes and goes between two updates may be missed).
pub const CLIENTS_MAXIMUM: &str = "$SYS/broker/clients/maximum";
/// Seconds since the broker started, as `"N seconds"`.
pub const UPTIME: &str = "$SYS/broker/uptime";
/// `"berth X.Y.Z"`, published once.
pub const VERSION: &str = "$SYS/broker/version";

/// One core's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreStats([u64; Stat::ALL.len()]);

impl Default for CoreStats {
    fn default() -> CoreStats {
        CoreStats([0; Stat::ALL.len()])
    }
}

impl CoreStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }

    pub fn set(&mut self, stat: Stat, value: u64) {
        self.0[stat as usize] = value;
    }
}

/// Core 0's view: the latest figures of every core and what it last published.
pub(crate) struct SysBoard {
    latest: Vec<Option<CoreStats>>,
    published: HashMap<String, String>,
    /// The most clients seen connected at an update.
    maximum: u64,
    load: Load,
}

impl SysBoard {
    pub fn new(cores: usize) -> SysBoard {
        SysBoard {
            latest: vec![None; cores],
            published: HashMap::new(),
            maximum: 0,
            load: Load::default(),
        }
    }

    /// Takes in an update's totals: the maximum and the load averages.
    fn update(&mut self, uptime: Duration) {
        self.maximum = self.maximum.max(self.total(Stat::ClientsConnected));
        let totals = LOADS.map(|(stat, _)| self.total(stat));
        self.load.update(uptime, totals);
    }

    /// The broker-wide figure: summed over the cores heard from, or core 0's own.
    fn total(&self, stat: Stat) -> u64 {
        match stat.combine() {
            Combine::Sum => self.latest.iter().flatten().map(|s| s.get(stat)).sum(),
            Combine::Replicated => self
                .latest
                .first()
                .copied()
                .flatten()
                .map_or(0, |s| s.get(stat)),
        }
    }

    /// Every topic and payload, in a fixed order.
    fn figures(&self, uptime: Duration) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![
            (
                VERSION.into(),
                format!("berth {}", env!("CARGO_PKG_VERSION")),
            ),
            (UPTIME.into(), format!("{} seconds", uptime.as_secs())),
        ];
        out.extend(
            Stat::ALL
                .iter()
                .map(|&stat| (stat.topic().into(), self.total(stat).to_string())),
        );
        let clients = self.total(Stat::ClientsConnected) + self.total(Stat::ClientsDisconnected);
        out.push((CLIENTS_TOTAL.into(), clients.to_string()));
        out.push((CLIENTS_MAXIMUM.into(), self.maximum.to_string()));
        out.extend(self.load.figures());
        out
    }
}

impl Broker {
    /// This core's engine figures; the server fills in the connection figures.
    pub fn core_stats(&self) -> CoreStats {
        let online = self.sessions.values().filter(|slot| slot.online).count();
        let mut stats = CoreStats::default();
        stats.set(Stat::ClientsConnected, online as u64);
        stats.set(
            Stat::ClientsDisconnected,
            (self.sessions.len() - online) as u64,
        );
        stats.set(
            Stat::Subscriptions,
            (self.subscriptions.len() + self.shares.local.len()) as u64,
        );
        stats.set(Stat::RetainedMessages, self.retained.len() as u64);
        stats.set(Stat::StoreBytes, self.journal.disk_bytes());
        stats.set(Stat::StoreMessages, self.messages.len() as u64);
        let queued = self
            .sessions
            .values()
            .map(|slot| slot.session.queued() + slot.session.in_flight())
            .sum::<usize>();
        stats.set(Stat::StoreQueued, queued as u64);
        stats.set(Stat::StoreErrors, self.counters.journal_errors);
        stats.set(
            Stat::SubscriptionsRefused,
            self.counters.subscriptions_refused,
        );
        stats.set(Stat::AclRefused, self.counters.acl_refused);
        stats.set(Stat::AclDenied, self.counters.acl_denied);
        let c = &self.counters;
        stats.set(Stat::PublishDropped, c.dropped + self.shares.undeliverable);
        stats.set(Stat::DroppedQueueFull, c.dropped_queue_full);
        // The connections add the publishes refused for a full store (`IoStats::fill`).
        stats.set(Stat::DroppedDiskFull, c.dropped_disk_full);
        stats.set(Stat::DroppedNoShareMember, self.shares.undeliverable);
        stats.set(Stat::DroppedExpired, c.expired);
        stats.set(Stat::DroppedNoSubscribers, c.no_subscribers);
        stats.set(Stat::DroppedAcl, c.acl_publish_refused + c.acl_denied);
        stats.set(Stat::ClientsExpired, c.sessions_expired);
        stats
    }

    /// Keeps a core's latest figures (core 0 only uses them).
    pub fn record_stats(&mut self, from: CoreId, stats: CoreStats) {
        if let Some(slot) = self.sys.latest.get_mut(from.0) {
            *slot = Some(stats);
        }
    }

    /// Publishes, retained at QoS 0, every `$SYS` figure that changed since the last call
    /// (all of them the first time). `uptime` is the time since the broker started.
    pub fn publish_sys(&mut self, uptime: Duration, now: Instant) -> Effects {
        let mut effects = Effects::default();
        self.sys.update(uptime);
        for (topic, payload) in self.sys.figures(uptime) {
            if self.sys.published.get(&topic) == Some(&payload) {
                continue;
            }
            let publish = Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: ByteString::from(topic.as_str()),
                packet_id: None,
                properties: Properties::default(),
                payload: Bytes::from(payload.clone().into_bytes()),
            };
            // The empty publisher is the broker itself: no client has an empty id.
            let routed = self.publish(&ByteString::new(), publish, now);
            effects.extend(routed);
            self.sys.published.insert(topic, payload);
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{CoreMsg, SessionPolicy};
    use crate::protocol::{Packet, PacketId, Subscribe, SubscriptionOptions};

    fn broker(id: usize, cores: usize) -> Broker {
        let policy = SessionPolicy {
            max_session_expiry: Duration::from_secs(60),
            limits: crate::session::state::QueueLimits {
                max_messages: 10,
                ..Default::default()
            },
            max_sessions: usize::MAX,
            max_subscriptions: usize::MAX,
        };
        Broker::new(
            CoreId(id),
            cores,
            policy,
            crate::broker::WallClock::now_from_system(),
        )
    }

    fn retained_topics(effects: &Effects) -> Vec<String> {
        effects
            .to_cores
            .iter()
            .filter_map(|(core, msg)| match msg {
                CoreMsg::Retain(m) if core.0 == 1 => Some(m.topic.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn topics_are_distinct_and_under_sys() {
        let mut topics: Vec<&str> = Stat::ALL.iter().map(|s| s.topic()).collect();
        topics.extend([CLIENTS_TOTAL, CLIENTS_MAXIMUM, UPTIME, VERSION]);
        let loads: Vec<String> = super::super::sys_load::topics().collect();
        topics.extend(loads.iter().map(String::as_str));
        let count = topics.len();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), count);
        assert!(topics
            .iter()
            .all(|t| is_sys_topic(t) && t.starts_with("$SYS/broker/")));
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn figures_add_up_across_cores_and_only_changes_are_published() {
        let mut core0 = broker(0, 2);
        let now = Instant::now();
        let _ = core0.connect(&"a".into(), false, Duration::from_secs(60), 10, now);
        let _ = core0.connect(&"b".into(), false, Duration::from_secs(60), 10, now);
        let _ = core0.disconnect(&"b".into(), None, now);
        let mut mine = core0.core_stats();
        assert_eq!(mine.get(Stat::ClientsConnected), 1);
        assert_eq!(mine.get(Stat::ClientsDisconnected), 1);
        mine.set(Stat::BytesReceived, 100);
        core0.record_stats(CoreId(0), mine);
        let mut theirs = CoreStats::default();
        theirs.set(Stat::ClientsConnected, 5);
        theirs.set(Stat::BytesReceived, 23);
        theirs.set(Stat::RetainedMessages, 99);
        let effects = core0.on_core_msg(
            CoreMsg::Stats {
                from: CoreId(1),
                stats: Box::new(theirs),
            },
            now,
        );
        assert!(effects.to_cores.is_empty() && effects.to_clients.is_empty());
        let first = core0.publish_sys(Duration::from_secs(7), now);
        let topics = retained_topics(&first);
        let loads = super::super::sys_load::topics().count();
        assert_eq!(topics.len(), Stat::ALL.len() + 4 + loads, "{topics:?}");
        let value = |topic: &str| {
            core0
                .retained
                .get(topic)
                .expect("retained")
                .payload
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
        };
        assert_eq!(value("$SYS/broker/clients/connected"), "6");
        assert_eq!(value("$SYS/broker/clients/total"), "7");
        assert_eq!(value("$SYS/broker/bytes/received"), "123");
        assert_eq!(
            value("$SYS/broker/retained messages/count"),
            "0",
            "core 0's own"
        );
        assert_eq!(value("$SYS/broker/uptime"), "7 seconds");
        assert_eq!(value("$SYS/broker/clients/maximum"), "6");
        assert!(value("$SYS/broker/version").starts_with("berth "));
        // Nothing changed but the uptime.
        let second = core0.publish_sys(Duration::from_secs(8), now);
        assert_eq!(retained_topics(&second), vec![UPTIME.to_string()]);
    }

    #[test]
    fn sys_figures_reach_a_local_subscriber_and_clients_cannot_publish_there() {
        let mut core0 = broker(0, 1);
        let now = Instant::now();
        let _ = core0.connect(&"watch".into(), true, Duration::ZERO, 10, now);
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::default(),
            filters: vec![("$SYS/broker/uptime".into(), SubscriptionOptions::default())],
        };
        let _ = core0.subscribe(&"watch".into(), subscribe, now);
        let forged = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: UPTIME.into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from_static(b"forged"),
        };
        let effects = core0.publish(&"watch".into(), forged, now);
        assert!(effects.to_clients.is_empty() && core0.retained.is_empty());
        let effects = core0.publish_sys(Duration::from_secs(3), now);
        let got: Vec<_> = effects
            .to_clients
            .iter()
            .map(|(client, packet)| match packet.packet() {
                Packet::Publish(p) => (client.to_string(), p.payload.clone(), p.retain),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![("watch".to_string(), Bytes::from_static(b"3 seconds"), false)]
        );
    }
}
