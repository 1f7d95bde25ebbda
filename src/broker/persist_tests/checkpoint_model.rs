//! Crashes at every point of a checkpoint that runs a step at a time. Random traffic
//! (sessions opening, taken over, cleanly restarted, ending, expiring; subscriptions;
//! QoS 1/2 deliveries and their acknowledgements; inbound QoS 2 at each stage; retained
//! messages set and cleared; wills) runs between the steps of checkpoints begun at random
//! moments, with steps of one or two records. After every operation, and after every
//! record a step writes, the log as it stands then is recovered in a copy and must give
//! exactly the live engine's persistent state: sessions, subscriptions, windows, queues
//! (with every queued message readable), inbound QoS 2 ids, wills, unconfirmed inbound
//! QoS 2 messages and retained messages. Now and then the recovered engine runs a
//! checkpoint of its own and is recovered again.

use std::collections::BTreeMap;

use super::*;
use crate::broker::journal::{self, Journal};
use crate::broker::messages::Lookup;
use crate::broker::CheckpointLimits;
use crate::broker::Effects;
use crate::session::state::Messages;
use crate::store::Position;

/// Records per segment of the in-memory log: small, so checkpoints delete segments.
const SEGMENT: u32 = 6;
const CLIENTS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const FILTERS: [&str; 3] = ["t/#", "t/x", "t/+"];
const TOPICS: [&str; 3] = ["t/x", "t/y", "u/z"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Everything persistent about an engine, with the payload of every message it holds
/// read back the way a resume reads it.
fn describe(b: &Broker) -> String {
    let lookup = Lookup {
        table: &b.messages,
        journal: b.journal.as_ref(),
        clock: b.clock,
    };
    let payload = |seq| match lookup.get(seq) {
        Some(m) => format!(
            "{}:{}",
            String::from_utf8_lossy(&m.payload[..m.payload.len().min(6)]),
            m.payload.len()
        ),
        None => "UNREADABLE".to_string(),
    };
    let mut lines = Vec::new();
    let mut ids: Vec<_> = b.sessions.keys().cloned().collect();
    ids.sort();
    for id in ids {
        let slot = &b.sessions[&id];
        let Some(sid) = slot.sid else {
            continue;
        };
        let session = &slot.session;
        let mut subs: Vec<_> = session
            .subscriptions
            .iter()
            .map(|(f, s)| format!("{f}:{}", s.options.qos as u8))
            .collect();
        subs.sort();
        let window: Vec<_> = session
            .in_flight_entries()
            .map(|f| {
                let seq = f.entry.seq();
                format!("{seq}@{}{:?}={}", f.packet_id.get(), f.state, payload(seq))
            })
            .collect();
        let queue: Vec<_> = session
            .queued_entries()
            .map(|q| format!("{}={}", q.seq(), payload(q.seq())))
            .collect();
        let mut rel: Vec<_> = session.awaiting_release_ids().collect();
        rel.sort();
        let will = b.wills.logged(sid).map(|(delay, publish)| {
            let will = journal::decode_publish(kind::WILL, publish).unwrap();
            format!("{}+{delay}", will.topic)
        });
        lines.push(format!(
            "{id}#{sid} expiry={:?} subs={subs:?} window={window:?} queue={queue:?} rel={rel:?} will={will:?}",
            slot.expiry
        ));
    }
    let mut retained: Vec<_> = b
        .retained
        .values()
        .map(|m| format!("{}={:?}", m.topic, m.payload))
        .collect();
    retained.sort();
    lines.push(format!("retained={retained:?}"));
    let mut routing: Vec<_> = b.exactly_once.unconfirmed().collect();
    routing.sort();
    lines.push(format!("routing={routing:?}"));
    lines.join("\n")
}

type Records = BTreeMap<Position, (u8, Bytes)>;

struct Model {
    h: Harness,
    rng: Rng,
    online: [bool; CLIENTS.len()],
    /// Packets the engine sent each online client that want an answer.
    inbox: Vec<Vec<Packet>>,
    /// Inbound QoS 2 ids of each client: routed (false) or PUBREC journaled (true).
    inbound: Vec<Vec<(u16, bool)>>,
    next_payload: u64,
    /// Records written by checkpoints: (copies, kept in place).
    copied: usize,
    kept: usize,
    recoveries: usize,
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut h = Harness::new(SEGMENT);
        h.broker.set_checkpoint_limits(CheckpointLimits {
            sessions: 2,
            bytes: 1,
            walk: 2,
        });
        Model {
            h,
            rng: Rng(seed | 1),
            online: [false; CLIENTS.len()],
            inbox: vec![Vec::new(); CLIENTS.len()],
            inbound: vec![Vec::new(); CLIENTS.len()],
            next_payload: 0,
            copied: 0,
            kept: 0,
            recoveries: 0,
        }
    }

    fn name(c: usize) -> ByteString {
        ByteString::from(CLIENTS[c])
    }

    fn records(&self) -> Records {
        self.h.journal.records.borrow().clone()
    }

    /// The engine recovered from `records`, as a restart after a crash would see them.
    fn recover(&self, records: Records) -> (Broker, MemJournal) {
        let journal = MemJournal::with_records(SEGMENT, records);
        let mut rebuild = Rebuild::new(self.h.clock);
        journal.replay(|pos, kind, body| rebuild.visit(pos, kind, body));
        let (broker, _) = Broker::recover(
            CoreId(0),
            1,
            policy(),
            Box::new(journal.clone()),
            rebuild,
            self.h.now,
        );
        (broker, journal)
    }

    /// A crash with the log holding `records` recovers `live`.
    fn check(&mut self, records: Records, live: &str, what: &str) {
        self.recoveries += 1;
        let (mut broker, _) = self.recover(records);
        assert_eq!(describe(&broker), live, "after {what}");
        if self.rng.percent(5) {
            // The recovered engine checkpoints (a whole one) and crashes again.
            broker
                .checkpoint(self.h.now)
                .expect("checkpoint after recovery");
            let records = broker_records(&broker);
            let (again, _) = self.recover(records);
            assert_eq!(
                describe(&again),
                live,
                "after {what}, a recovery and a checkpoint"
            );
        }
    }

    fn deliver(&mut self, effects: Effects) {
        for (client, out) in effects.to_clients {
            let Some(c) = CLIENTS.iter().position(|n| client == *n) else {
                continue;
            };
            let packet = out.into_packet();
            match &packet {
                Packet::Publish(p) if p.qos != QoS::AtMostOnce => self.inbox[c].push(packet),
                Packet::PubRel(_) => self.inbox[c].push(packet),
                _ => {}
            }
        }
    }

    fn publish(&mut self, publisher: &str, topic: &str, qos: QoS, retain: bool, empty: bool) {
        self.next_payload += 1;
        let payload = if empty {
            Bytes::new()
        } else {
            let mut text = format!("m{}.", self.next_payload).into_bytes();
            if self.rng.percent(35) {
                text.resize(1500, b'x'); // big: its segments are worth keeping
            }
            Bytes::from(text)
        };
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(1).unwrap()),
            properties: Properties::default(),
            payload,
        };
        let effects = self
            .h
            .broker
            .publish(&ByteString::from(publisher), publish, self.h.now);
        self.deliver(effects);
    }

    /// One random operation; returns what it was.
    fn operate(&mut self) -> String {
        let c = self.rng.below(CLIENTS.len());
        let id = Model::name(c);
        let now = self.h.now;
        match self.rng.below(16) {
            0 | 1 => {
                let clean = self.rng.percent(15);
                let expiry = [0, 300, 300, 3600][self.rng.below(4)];
                let (_, _, resume, effects) = self
                    .h
                    .broker
                    .connect(&id, clean, Duration::from_secs(expiry), 4, now)
                    .unwrap();
                self.deliver(effects);
                self.online[c] = true;
                self.inbox[c].clear();
                self.inbound[c].clear();
                for packet in resume {
                    if matches!(packet, Packet::Publish(_) | Packet::PubRel(_)) {
                        self.inbox[c].push(packet);
                    }
                }
                format!("connect {id} clean={clean} expiry={expiry}")
            }
            2 if self.online[c] => {
                let expiry = self.rng.percent(15).then_some(Duration::ZERO);
                let effects = self.h.broker.disconnect(&id, expiry, now);
                self.deliver(effects);
                self.online[c] = false;
                self.inbox[c].clear();
                self.inbound[c].clear();
                format!("disconnect {id} {expiry:?}")
            }
            3 if self.online[c] => {
                let filter = FILTERS[self.rng.below(FILTERS.len())];
                let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][self.rng.below(2)];
                self.h.subscribe(CLIENTS[c], filter, qos);
                format!("subscribe {id} {filter}")
            }
            4 if self.online[c] => {
                let filter = FILTERS[self.rng.below(FILTERS.len())];
                let unsubscribe = crate::protocol::Unsubscribe {
                    packet_id: PacketId::new(1).unwrap(),
                    properties: Properties::default(),
                    filters: vec![filter.into()],
                };
                self.h.broker.unsubscribe(&id, unsubscribe);
                format!("unsubscribe {id} {filter}")
            }
            5..=7 => {
                let topic = TOPICS[self.rng.below(TOPICS.len())];
                let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][self.rng.below(2)];
                let retain = self.rng.percent(20);
                let empty = retain && self.rng.percent(30);
                self.publish("pub", topic, qos, retain, empty);
                format!("publish {topic} retain={retain} empty={empty}")
            }
            8 | 9 if !self.inbox[c].is_empty() => {
                let i = self.rng.below(self.inbox[c].len());
                let packet = self.inbox[c].swap_remove(i);
                let answer = match packet {
                    Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                        Packet::PubAck(ack(p.packet_id.unwrap().get()))
                    }
                    Packet::Publish(p) => Packet::PubRec(ack(p.packet_id.unwrap().get())),
                    Packet::PubRel(a) => Packet::PubComp(ack(a.packet_id.get())),
                    _ => return "nothing".into(),
                };
                let effects = self.h.broker.on_ack(&id, answer.clone(), now);
                self.deliver(effects);
                format!("{id} answers {answer:?}")
            }
            10 if self.online[c] => {
                let pid = 1 + self.rng.below(3) as u16;
                let packet_id = PacketId::new(pid).unwrap();
                if !self.h.broker.receive_qos2(&id, packet_id) {
                    return format!("{id} qos2 {pid} again");
                }
                let publish = Publish {
                    dup: false,
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    topic: "t/y".into(),
                    packet_id: Some(packet_id),
                    properties: Properties::default(),
                    payload: Bytes::from(format!("in{pid}")),
                };
                let effects = self
                    .h
                    .broker
                    .publish_exactly_once(&id, packet_id, publish, now);
                self.deliver(effects);
                self.inbound[c].push((pid, false));
                format!("{id} qos2 in {pid}")
            }
            11 if !self.inbound[c].is_empty() => {
                let i = self.rng.below(self.inbound[c].len());
                let (pid, confirmed) = self.inbound[c][i];
                let packet_id = PacketId::new(pid).unwrap();
                if confirmed {
                    self.inbound[c].swap_remove(i);
                    let effects = self.h.broker.on_ack(&id, Packet::PubRel(ack(pid)), now);
                    self.deliver(effects);
                    format!("{id} pubrel {pid}")
                } else {
                    self.inbound[c][i].1 = true;
                    self.h.broker.journal_qos2_received(&id, packet_id);
                    format!("{id} pubrec {pid}")
                }
            }
            12 if self.online[c] => {
                if self.rng.percent(50) {
                    let delay = [0, 30][self.rng.below(2)];
                    self.h
                        .broker
                        .hold_will(&id, &will(&format!("w/{id}")), delay);
                    format!("{id} will")
                } else {
                    self.h.broker.drop_will(&id);
                    format!("{id} drops its will")
                }
            }
            13 => {
                self.h.now += Duration::from_secs([1, 40, 400][self.rng.below(3)]);
                let effects = self.h.broker.expire(self.h.now);
                self.deliver(effects);
                for c in 0..CLIENTS.len() {
                    if !self.h.broker.sessions.contains_key(&Model::name(c)) {
                        self.online[c] = false;
                    }
                }
                "time passes".into()
            }
            _ => {
                self.step();
                "checkpoint step".into()
            }
        }
    }

    /// One step of a checkpoint (beginning one if none runs), checking a crash after
    /// each record it writes.
    fn step(&mut self) {
        let live = describe(&self.h.broker);
        let before = self.records();
        let head = self.h.journal.head();
        let report = self.h.broker.checkpoint_step(self.h.now).expect("step");
        let written: Vec<_> = self
            .h
            .journal
            .records
            .borrow()
            .range(head..)
            .map(|(p, r)| (*p, r.clone()))
            .collect();
        for cut in 1..written.len() {
            let mut records = before.clone();
            records.extend(written[..cut].iter().cloned());
            self.check(records, &live, &format!("{cut} records of a step"));
        }
        if let Some(report) = report {
            self.copied += report.messages;
            self.kept += report.kept;
            // Crashed after END, before the old segments went.
            let mut records = before;
            records.extend(written);
            self.check(records, &live, "END, before the deletion");
        }
    }
}

/// The records of an engine's in-memory journal (the harness gives it a `MemJournal`).
fn broker_records(b: &Broker) -> Records {
    let mut records = Records::new();
    let head = b.journal.head();
    let mut pos = Position {
        segment: 0,
        offset: 0,
    };
    // Walk every position up to the head: the journal reads back what it holds.
    while pos < head {
        if let Ok(record) = b.journal.read(pos) {
            records.insert(pos, record);
        }
        pos.offset += 1;
        if pos.offset >= SEGMENT {
            pos = Position {
                segment: pos.segment + 1,
                offset: 0,
            };
        }
    }
    records
}

fn run(seed: u64, operations: usize) -> Model {
    let mut m = Model::new(seed);
    for _ in 0..operations {
        let what = m.operate();
        let live = describe(&m.h.broker);
        let records = m.records();
        m.check(records, &live, &what);
    }
    // Every checkpoint left running finishes, with traffic between its steps.
    while m.h.broker.checkpoint_running() {
        m.step();
        let what = m.operate();
        let live = describe(&m.h.broker);
        let records = m.records();
        m.check(records, &live, &what);
    }
    m
}

#[test]
fn a_crash_anywhere_in_a_stepwise_checkpoint_recovers_the_live_state() {
    let (mut copied, mut kept, mut recoveries) = (0, 0, 0);
    for seed in 1..=24u64 {
        let m = run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 400);
        copied += m.copied;
        kept += m.kept;
        recoveries += m.recoveries;
    }
    // Both ways of restating a message were exercised.
    assert!(copied > 0 && kept > 0, "copied {copied}, kept {kept}");
    assert!(recoveries > 10_000, "{recoveries}");
}
