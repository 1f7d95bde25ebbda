//! The engine on a full disk (a journal that refuses appends): a message the log cannot take
//! is refused and held by nobody, QoS 0 still reaches whoever needs no record, and a
//! checkpoint cut short leaves a log whose later records still recover.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::MemJournal;
use super::{Broker, Rebuild, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{PacketId, Properties, Publish, QoS, Subscribe};

struct Core {
    journal: MemJournal,
    broker: Broker,
    clock: WallClock,
    now: Instant,
    policy: SessionPolicy,
}

impl Core {
    fn new(policy: SessionPolicy) -> Core {
        let journal = MemJournal::new(64);
        let clock = WallClock::now_from_system();
        let broker = Broker::with_journal(
            CoreId(0),
            1,
            policy.clone(),
            Box::new(journal.clone()),
            clock,
        );
        Core {
            journal,
            broker,
            clock,
            now: clock.base,
            policy,
        }
    }

    fn restart(&mut self) {
        let mut rebuild = Rebuild::new(self.clock);
        self.journal
            .replay(|pos, kind, body| rebuild.visit(pos, kind, body));
        let journal = Box::new(self.journal.clone());
        let policy = self.policy.clone();
        self.broker = Broker::recover(CoreId(0), 1, policy, journal, rebuild, self.now).0;
    }

    fn session(&mut self, id: &str, expiry_secs: u64, filter: &str, qos: QoS, online: bool) {
        let client = ByteString::from(id);
        let expiry = Duration::from_secs(expiry_secs);
        self.broker
            .connect(&client, expiry_secs == 0, expiry, 10, self.now)
            .unwrap();
        let subscribe = Subscribe::one(PacketId::new(1).unwrap(), filter, qos);
        self.broker.subscribe(&client, subscribe, self.now);
        if !online {
            self.broker.disconnect(&client, None, self.now);
        }
    }

    /// Clients that got a PUBLISH.
    fn publish(&mut self, payload: &str, qos: QoS) -> Vec<String> {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: "t/x".into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(1).unwrap()),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        };
        let effects = self.broker.publish(&"pub".into(), publish, self.now);
        effects
            .to_clients
            .into_iter()
            .map(|(client, _)| client.to_string())
            .collect()
    }

    fn queued(&self, id: &str) -> usize {
        self.broker.sessions[&ByteString::from(id)].session.queued()
    }
}

#[test]
fn a_message_the_reserve_cannot_take_is_refused_and_held_by_nobody() {
    let mut core = Core::new(SessionPolicy::default());
    core.session("dev", 300, "t/#", QoS::AtLeastOnce, false);
    core.session("live", 0, "t/#", QoS::AtLeastOnce, true);
    core.journal.full_after.set(Some(100));
    assert!(core.publish(&"x".repeat(200), QoS::AtLeastOnce).is_empty());
    assert_eq!(core.broker.counters.store_refused, 1);
    assert_eq!((core.queued("dev"), core.broker.stored_messages()), (0, 0));
    // A small one still fits in what is left for messages.
    core.journal.full_after.set(Some(1000));
    assert_eq!(core.publish("small", QoS::AtLeastOnce), ["live"]);
    assert_eq!(core.broker.counters.store_refused, 1);
    core.journal.full_after.set(None);
    core.publish("later", QoS::AtLeastOnce);
    core.restart();
    assert_eq!(
        core.queued("dev"),
        2,
        "the stored ones come back, the refused one does not"
    );
}

#[test]
fn qos0_on_a_full_disk_reaches_online_sessions_and_skips_offline_ones() {
    let mut policy = SessionPolicy::default();
    policy.limits.queue_qos0 = true;
    let mut core = Core::new(policy);
    core.session("dev", 300, "t/#", QoS::AtMostOnce, false);
    core.session("kept", 300, "t/#", QoS::AtMostOnce, true);
    core.session("live", 0, "t/#", QoS::AtMostOnce, true);
    core.journal.full_after.set(Some(0));
    let mut got = core.publish("zero", QoS::AtMostOnce);
    got.sort();
    assert_eq!(got, ["kept", "live"]);
    assert_eq!(core.queued("dev"), 0);
    assert_eq!(
        core.broker.counters.store_refused, 0,
        "QoS 0 is never acknowledged"
    );
    assert_eq!(core.broker.counters.dropped, 1);
}

#[test]
fn a_checkpoint_cut_short_by_a_full_disk_does_not_swallow_the_records_after_it() {
    let mut core = Core::new(SessionPolicy::default());
    core.session("dev", 300, "t/#", QoS::AtLeastOnce, false);
    for i in 0..20 {
        core.publish(&format!("m{i}"), QoS::AtLeastOnce);
    }
    // Room for the BEGIN and a few copies, not the whole checkpoint nor its ABORT.
    core.journal.full_after.set(Some(200));
    assert!(core.broker.checkpoint(core.now).is_err());
    core.journal.full_after.set(None);
    core.publish("after", QoS::AtLeastOnce);
    core.restart();
    assert_eq!(core.queued("dev"), 21);
}
