//! The ACL on one core: refused SUBSCRIBE filters, deliveries (live, retained and queued)
//! only to readers, the rules of a reload applied to what waits in a queue, and a session's
//! username kept across a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::MemJournal;
use super::{Broker, Rebuild, SessionPolicy, WallClock};
use crate::auth::Acl;
use crate::ownership::CoreId;
use crate::protocol::{Packet, PacketId, Properties, Publish, QoS, ReasonCode, Subscribe};

const RULES: &str = "\
user alice
topic read news/#
topic deny news/secret
pattern readwrite devices/%u/#
";

fn acl(text: &str) -> Option<Arc<Acl>> {
    Some(Arc::new(Acl::parse(text, Path::new("acl")).unwrap()))
}

struct Core {
    journal: MemJournal,
    broker: Broker,
    clock: WallClock,
    now: Instant,
}

impl Core {
    fn new() -> Core {
        let journal = MemJournal::new(1 << 16);
        let clock = WallClock::now_from_system();
        let policy = SessionPolicy::default();
        let mut broker =
            Broker::with_journal(CoreId(0), 1, policy, Box::new(journal.clone()), clock);
        broker.set_acl(acl(RULES));
        Core {
            journal,
            broker,
            clock,
            now: clock.base,
        }
    }

    /// A broker rebuilt from the journal alone, as after a crash.
    fn restarted(&self) -> Broker {
        let mut rebuild = Rebuild::new(self.clock);
        self.journal
            .replay(|pos, kind, body| rebuild.visit(pos, kind, body));
        let journal = Box::new(self.journal.clone());
        let policy = SessionPolicy::default();
        Broker::recover(CoreId(0), 1, policy, journal, rebuild, self.now).0
    }

    fn connect(&mut self, id: &str, username: Option<&str>) -> Vec<Packet> {
        let (_, _, resume, _) = self
            .broker
            .connect_as(
                &id.into(),
                username,
                false,
                Duration::from_secs(600),
                10,
                self.now,
            )
            .unwrap();
        resume
    }

    fn subscribe(&mut self, id: &str, filter: &str) -> ReasonCode {
        let subscribe = Subscribe::one(PacketId::new(1).unwrap(), filter, QoS::AtLeastOnce);
        let outcome = self.broker.subscribe(&id.into(), subscribe, self.now);
        outcome.sub_ack.reason_codes[0]
    }

    /// Publishes; returns the topics of what was sent to `id`.
    fn publish(&mut self, topic: &str, retain: bool, id: &str) -> Vec<String> {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: topic.into(),
            packet_id: PacketId::new(1),
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        };
        let effects = self.broker.publish(&"publisher".into(), publish, self.now);
        topics_to(
            effects
                .to_clients
                .into_iter()
                .map(|(c, p)| (c, p.into_packet())),
            id,
        )
    }
}

fn topics_to(packets: impl Iterator<Item = (ByteString, Packet)>, id: &str) -> Vec<String> {
    packets
        .filter(|(client, _)| client == id)
        .filter_map(|(_, packet)| match packet {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect()
}

fn topics(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter_map(|packet| match packet {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_filter_the_user_may_not_read_is_refused_and_a_deny_inside_a_grant_holds_at_delivery() {
    let mut core = Core::new();
    core.connect("c1", Some("alice"));
    assert_eq!(core.subscribe("c1", "news/#"), ReasonCode(1));
    assert_eq!(core.subscribe("c1", "devices/alice/+"), ReasonCode(1));
    assert_eq!(core.subscribe("c1", "#"), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        core.subscribe("c1", "devices/bob/#"),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(core.publish("news/today", false, "c1"), ["news/today"]);
    assert!(
        core.publish("news/secret", false, "c1").is_empty(),
        "denied"
    );
    assert_eq!(
        core.publish("devices/alice/t", false, "c1"),
        ["devices/alice/t"]
    );
    assert!(core.broker.counters.acl_denied >= 1);
    assert_eq!(core.subscribe("c1", "$share/g/news/+"), ReasonCode(1));
    assert_eq!(
        core.subscribe("c1", "$share/g/other"),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(core.broker.counters.acl_refused, 3);

    // Anonymous: the lines before any `user` (none here) and the patterns without %u.
    core.connect("c2", None);
    assert_eq!(core.subscribe("c2", "news/#"), ReasonCode::NOT_AUTHORIZED);
}

#[test]
fn a_retained_message_behind_a_deny_is_not_sent_on_subscribing() {
    let mut core = Core::new();
    core.publish("news/secret", true, "nobody");
    core.publish("news/open", true, "nobody");
    core.connect("c1", Some("alice"));
    let subscribe = Subscribe::one(PacketId::new(1).unwrap(), "news/#", QoS::AtLeastOnce);
    let outcome = core.broker.subscribe(&"c1".into(), subscribe, core.now);
    let sent = topics_to(
        outcome
            .effects
            .to_clients
            .into_iter()
            .map(|(c, p)| (c, p.into_packet())),
        "c1",
    );
    assert_eq!(sent, ["news/open"]);
}

#[test]
fn a_queued_message_the_reader_may_no_longer_read_is_dropped_at_resume() {
    let mut core = Core::new();
    core.connect("c1", Some("alice"));
    core.subscribe("c1", "news/#");
    core.broker.disconnect(&"c1".into(), None, core.now);
    core.publish("news/a", false, "c1");
    core.publish("news/b", false, "c1");
    // The reload: news/b is denied from now on.
    core.broker
        .set_acl(acl(&format!("{RULES}topic deny news/b\n")));
    let resumed = core.connect("c1", Some("alice"));
    assert_eq!(topics(&resumed), ["news/a"]);
    // Resumed by a user the rules give nothing: nothing is sent.
    core.broker.disconnect(&"c1".into(), None, core.now);
    core.publish("news/c", false, "c1");
    assert!(topics(&core.connect("c1", Some("mallory"))).is_empty());
}

#[test]
fn a_sessions_username_is_journaled_and_recovered() {
    let mut core = Core::new();
    core.connect("dev", Some("alice"));
    core.connect("dev", Some("alice")); // unchanged: no new record
    core.connect("anon", None);
    let owners = |journal: &MemJournal| {
        let mut n = 0;
        journal.replay(|_, kind, _| n += usize::from(kind == super::journal::kind::SESSION_OWNER));
        n
    };
    assert_eq!(owners(&core.journal), 1);
    core.connect("dev", Some("bob"));
    assert_eq!(owners(&core.journal), 2);

    let broker = core.restarted();
    assert_eq!(broker.session_username(&"dev".into()), Some(Some("bob")));
    assert_eq!(broker.session_username(&"anon".into()), Some(None));
    assert_eq!(broker.session_username(&"none".into()), None);
}

#[test]
fn a_checkpoint_keeps_a_sessions_username_in_its_snapshot() {
    let mut core = Core::new();
    core.journal = MemJournal::new(4);
    let clock = core.clock;
    core.broker = Broker::with_journal(
        CoreId(0),
        1,
        SessionPolicy::default(),
        Box::new(core.journal.clone()),
        clock,
    );
    core.connect("dev", Some("alice"));
    for i in 0..40 {
        core.connect(&format!("filler{i}"), None);
    }
    core.broker.checkpoint(core.now).unwrap();
    let mut owners = 0;
    core.journal
        .replay(|_, kind, _| owners += usize::from(kind == super::journal::kind::SESSION_OWNER));
    assert_eq!(owners, 0, "the SESSION_OWNER record went with its segment");
    let broker = core.restarted();
    assert_eq!(broker.session_username(&"dev".into()), Some(Some("alice")));
}
