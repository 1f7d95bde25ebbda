//! Inbound QoS 2 across a crash, on two cores: the publisher's session on core 0, the
//! subscriber's on core 1. Whatever point the crash hits between routing and the PUBREC
//! being journaled, the subscriber gets the message exactly once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::MemJournal;
use super::{Broker, CoreMsg, Effects, Rebuild, SessionPolicy, WallClock};
use crate::ownership::CoreId;
use crate::protocol::{Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, Subscribe};

const A: usize = 0;
const B: usize = 1;

struct World {
    journals: [MemJournal; 2],
    cores: [Broker; 2],
    clock: WallClock,
    now: Instant,
}

fn id(s: &str) -> ByteString {
    ByteString::from(s)
}

impl World {
    fn new() -> World {
        let clock = WallClock::now_from_system();
        let journals = [MemJournal::new(1 << 20), MemJournal::new(1 << 20)];
        let cores = [0, 1].map(|c| {
            Broker::with_journal(
                CoreId(c),
                2,
                SessionPolicy::default(),
                Box::new(journals[c].clone()),
                clock,
            )
        });
        World {
            journals,
            cores,
            clock,
            now: clock.base,
        }
    }

    /// Hands core-to-core messages to their cores, and what those send on, until quiet.
    fn carry(&mut self, mut msgs: Vec<(CoreId, CoreMsg)>) {
        while !msgs.is_empty() {
            let mut next = Vec::new();
            for (to, msg) in msgs {
                next.extend(self.cores[to.0].on_core_msg(msg, self.now).to_cores);
            }
            msgs = next;
        }
    }

    /// Both cores stop without warning and start from their journals, as the server does:
    /// recover, exchange announcements, then route unconfirmed QoS 2 messages again.
    fn crash_and_restart(&mut self) {
        let mut announce = Vec::new();
        for c in [A, B] {
            let mut rebuild = Rebuild::new(self.clock);
            self.journals[c].replay(|pos, kind, body| rebuild.visit(pos, kind, body));
            let (broker, report) = Broker::recover(
                CoreId(c),
                2,
                SessionPolicy::default(),
                Box::new(self.journals[c].clone()),
                rebuild,
                self.now,
            );
            self.cores[c] = broker;
            announce.extend(report.announce.to_cores);
        }
        self.carry(announce);
        for c in [A, B] {
            let effects = self.cores[c].route_again(self.now);
            self.carry(effects.to_cores);
        }
    }

    fn setup(&mut self, sub_qos: QoS) {
        let now = self.now;
        self.cores[B].connect(&id("sub"), false, Duration::from_secs(3600), 100, now);
        let subscribe = Subscribe::one(PacketId::new(1).unwrap(), "t/#", sub_qos);
        let outcome = self.cores[B].subscribe(&id("sub"), subscribe, now);
        self.carry(outcome.effects.to_cores);
        self.cores[B].disconnect(&id("sub"), None, now);
        self.cores[A].connect(&id("pub"), false, Duration::from_secs(3600), 100, now);
    }

    /// The publisher's QoS 2 PUBLISH with packet id 7, as the connection handles it;
    /// returns what it would send to the other core.
    fn publish(&mut self) -> Effects {
        let pid = PacketId::new(7).unwrap();
        assert!(self.cores[A].receive_qos2(&id("pub"), pid));
        let publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "t/x".into(),
            packet_id: Some(pid),
            properties: Properties::default(),
            payload: Bytes::from_static(b"once"),
        };
        self.cores[A].publish_exactly_once(&id("pub"), pid, publish, self.now)
    }

    /// The subscriber comes back and takes everything; returns the payloads.
    fn subscriber_takes_all(&mut self) -> Vec<Bytes> {
        let now = self.now;
        let (present, _, resume, _) = self.cores[B]
            .connect(&id("sub"), false, Duration::from_secs(3600), 100, now)
            .expect("session");
        assert!(present, "subscriber session lost");
        let mut got = Vec::new();
        for packet in resume {
            if let Packet::Publish(p) = packet {
                got.push(p.payload.clone());
                let ack = Ack {
                    packet_id: p.packet_id.unwrap(),
                    reason_code: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                };
                let reply = match p.qos {
                    QoS::AtLeastOnce => Packet::PubAck(ack),
                    _ => Packet::PubRec(ack),
                };
                self.cores[B].on_ack(&id("sub"), reply, now);
            }
        }
        got
    }

    /// The publisher reconnects and resends its PUBLISH (DUP): it must not be routed again.
    fn publisher_retransmits(&mut self) {
        let pid = PacketId::new(7).unwrap();
        assert!(
            !self.cores[A].receive_qos2(&id("pub"), pid),
            "the retransmission would be routed a second time"
        );
    }
}

#[test]
fn crash_after_the_other_core_took_it_delivers_once() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    let effects = w.publish();
    w.carry(effects.to_cores);
    w.crash_and_restart(); // before QOS2_IN: no PUBREC reached the publisher
    w.publisher_retransmits();
    assert_eq!(w.subscriber_takes_all(), ["once"]);
    assert_eq!(w.cores[B].counters.duplicates_skipped, 1);
}

#[test]
fn crash_before_the_other_core_took_it_delivers_once() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    let _lost_with_the_process = w.publish();
    w.crash_and_restart();
    w.publisher_retransmits();
    assert_eq!(w.subscriber_takes_all(), ["once"]);
}

#[test]
fn confirmed_messages_are_not_routed_again() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    let effects = w.publish();
    w.carry(effects.to_cores);
    w.cores[A].journal_qos2_received(&id("pub"), PacketId::new(7).unwrap());
    w.crash_and_restart();
    assert_eq!(w.cores[B].counters.duplicates_skipped, 0);
    w.publisher_retransmits();
    assert_eq!(w.subscriber_takes_all(), ["once"]);
}

#[test]
fn a_checkpoint_keeps_what_each_core_took_and_what_is_unconfirmed() {
    let mut w = World::new();
    w.setup(QoS::AtLeastOnce);
    let effects = w.publish();
    w.carry(effects.to_cores);
    // The subscriber takes and acknowledges it: no queue entry remembers it now.
    assert_eq!(w.subscriber_takes_all(), ["once"]);
    w.cores[B].disconnect(&id("sub"), None, w.now);
    let now = w.now;
    w.cores[A].checkpoint(now).expect("checkpoint A");
    w.cores[B].checkpoint(now).expect("checkpoint B");
    w.crash_and_restart();
    assert_eq!(w.cores[B].counters.duplicates_skipped, 1);
    w.publisher_retransmits();
    assert_eq!(w.subscriber_takes_all(), Vec::<Bytes>::new());
}

#[test]
fn pubrel_ends_the_routing_record() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    let effects = w.publish();
    w.carry(effects.to_cores);
    w.cores[A].journal_qos2_received(&id("pub"), PacketId::new(7).unwrap());
    let rel = Ack {
        packet_id: PacketId::new(7).unwrap(),
        reason_code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    w.cores[A].on_ack(&id("pub"), Packet::PubRel(rel), w.now);
    assert!(w.cores[A].exactly_once.unconfirmed().next().is_none());
    w.crash_and_restart();
    assert!(w.cores[A].exactly_once.unconfirmed().next().is_none());
    assert_eq!(w.subscriber_takes_all(), ["once"]);
}

/// A QoS 2 message from this node's stream (another node's publisher), as the bridge
/// hands it to core A: routed there and carried to the subscriber's core.
fn from_stream(w: &mut World, stream_seq: u64, qos: QoS, payload: &'static [u8]) {
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: "t/x".into(),
        packet_id: Some(PacketId::new(1).unwrap()),
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    };
    let effects = w.cores[A].publish_from_node(&id("far"), publish, Some(stream_seq), &[], w.now);
    assert!(effects.to_nodes.is_empty(), "sent back to the cluster");
    w.carry(effects.to_cores);
}

#[test]
fn a_stream_message_delivered_again_after_a_crash_is_taken_once() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    from_stream(&mut w, 5, QoS::ExactlyOnce, b"five");
    // Killed before the stream heard the acknowledgement: it delivers 5 again, then 6.
    w.crash_and_restart();
    from_stream(&mut w, 5, QoS::ExactlyOnce, b"five");
    from_stream(&mut w, 6, QoS::ExactlyOnce, b"six");
    assert_eq!(w.cores[B].counters.duplicates_skipped, 1);
    assert_eq!(w.subscriber_takes_all(), ["five", "six"]);
}

#[test]
fn a_stream_message_delivered_again_after_a_checkpoint_is_taken_once() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    from_stream(&mut w, 9, QoS::ExactlyOnce, b"nine");
    assert_eq!(w.subscriber_takes_all(), ["nine"]);
    w.cores[B].disconnect(&id("sub"), None, w.now);
    let now = w.now;
    w.cores[A].checkpoint(now).expect("checkpoint A");
    w.cores[B].checkpoint(now).expect("checkpoint B");
    w.crash_and_restart();
    from_stream(&mut w, 9, QoS::ExactlyOnce, b"nine");
    assert_eq!(w.cores[B].counters.duplicates_skipped, 1);
    assert_eq!(w.subscriber_takes_all(), Vec::<Bytes>::new());
}

#[test]
fn stream_qos1_is_at_least_once_and_stream_origins_never_clash_with_a_cores() {
    let mut w = World::new();
    w.setup(QoS::ExactlyOnce);
    // A local QoS 2 message takes origin (core A, seq n); stream sequence n is another origin.
    let effects = w.publish();
    w.carry(effects.to_cores);
    for seq in 1..=4 {
        from_stream(&mut w, seq, QoS::ExactlyOnce, b"two");
    }
    from_stream(&mut w, 20, QoS::AtLeastOnce, b"one");
    from_stream(&mut w, 20, QoS::AtLeastOnce, b"one");
    assert_eq!(w.cores[B].counters.duplicates_skipped, 0);
    let got = w.subscriber_takes_all();
    assert_eq!(got.len(), 7, "{got:?}");
}
