//! Test model: a client that drives one session through a sequence of steps (deliveries
//! while connected or not, acknowledgements, refused PUBRECs, reconnects with another
//! Receive Maximum), checks what the specification lets it see after every packet, and
//! keeps the log records the broker would have written, for the restore tests.
//!
//! Checked on every packet: a QoS 1/2 PUBLISH never reuses an id the client still owes an
//! answer for [MQTT-2.2.1-3]; no more PUBLISH on one connection than its Receive Maximum
//! await PUBACK, PUBCOMP or a refusing PUBREC [MQTT-3.3.4-9]; new (not DUP) QoS 1/2
//! messages arrive in the order they were delivered to the session [MQTT-4.6.0-6].

use proptest::prelude::*;

use super::tests::Fixture;
use super::*;
use crate::protocol::ReasonCode;

#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A message for the session at this QoS (its subscription is QoS 2).
    Deliver(QoS),
    /// The client answers the nth packet it owes an answer for (PUBACK, PUBREC, PUBCOMP).
    Answer(usize),
    /// The client refuses the nth QoS 2 PUBLISH it holds with PUBREC 0x80.
    Refuse(usize),
    Disconnect,
    /// The client connects (taking over its connection if it has one) with this Receive
    /// Maximum.
    Connect(u16),
}

pub(super) fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0u8..3).prop_map(|q| Step::Deliver(match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        })),
        4 => (0usize..8).prop_map(Step::Answer),
        1 => (0usize..8).prop_map(Step::Refuse),
        1 => Just(Step::Disconnect),
        1 => (1u16..5).prop_map(Step::Connect),
    ];
    prop::collection::vec(step, 0..80)
}

/// A log record about this one session, as recovery reads it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Record {
    Message(Queued),
    Sent(Seq, Option<PacketId>),
    Received(Seq),
    Done(Seq),
}

/// The payload size of message `seq` (the fixture's payloads are `m{seq}`).
pub(super) fn size_of(seq: Seq) -> usize {
    format!("m{seq}").len()
}

/// A QoS 1/2 packet id the client owes an answer for on this connection.
struct Owed {
    packet_id: PacketId,
    qos: QoS,
    /// PUBREL received: PUBCOMP owed.
    released: bool,
    /// Its PUBLISH came on this connection (and counts against its Receive Maximum).
    published_here: bool,
}

pub(super) struct Run {
    pub(super) f: Fixture,
    pub(super) log: Vec<Record>,
    connected: bool,
    receive_maximum: u16,
    owed: Vec<Owed>,
    /// The newest message a new QoS 1/2 PUBLISH carried.
    newest: Seq,
}

impl Run {
    /// A session with a queue of `max_messages`, its client not connected yet.
    pub(super) fn new(max_messages: usize) -> Run {
        Run {
            f: Fixture::new(max_messages),
            log: Vec::new(),
            connected: false,
            receive_maximum: 0,
            owed: Vec::new(),
            newest: 0,
        }
    }

    pub(super) fn step(&mut self, step: &Step) {
        let mut out = Vec::new();
        match *step {
            Step::Deliver(qos) => {
                let seq = self.f.next;
                match self.f.deliver(qos, QoS::ExactlyOnce, self.connected) {
                    Delivery::Sent(packet) => out.push(packet),
                    Delivery::InFlight(packet) => {
                        self.log.push(Record::Message(Queued::new(seq, qos, false)));
                        out.push(packet);
                    }
                    Delivery::Queued => {
                        self.log.push(Record::Message(Queued::new(seq, qos, false)));
                    }
                    Delivery::Skipped { .. } => {}
                }
            }
            Step::Answer(n) if self.connected && !self.owed.is_empty() => {
                let i = n % self.owed.len();
                let o = &self.owed[i];
                let packet_id = o.packet_id;
                if o.qos == QoS::AtLeastOnce || o.released {
                    self.owed.remove(i);
                    out = self.f.complete(packet_id);
                } else {
                    let f = &mut self.f;
                    let (table, now) = (&f.table, f.now);
                    f.session.on_pub_rec(
                        packet_id,
                        ReasonCode::SUCCESS,
                        table,
                        now,
                        &mut out,
                        &mut f.changes,
                    );
                }
            }
            Step::Refuse(n) if self.connected => {
                let unreleased: Vec<usize> = (0..self.owed.len())
                    .filter(|&i| self.owed[i].qos == QoS::ExactlyOnce && !self.owed[i].released)
                    .collect();
                if !unreleased.is_empty() {
                    let o = self.owed.remove(unreleased[n % unreleased.len()]);
                    let f = &mut self.f;
                    let (table, now) = (&f.table, f.now);
                    f.session.on_pub_rec(
                        o.packet_id,
                        ReasonCode::UNSPECIFIED_ERROR,
                        table,
                        now,
                        &mut out,
                        &mut f.changes,
                    );
                }
            }
            Step::Disconnect => self.disconnect(),
            Step::Connect(receive_maximum) => {
                self.disconnect();
                self.connected = true;
                self.receive_maximum = receive_maximum;
                out = self.f.resume(receive_maximum);
            }
            Step::Answer(_) | Step::Refuse(_) => {}
        }
        for packet in out {
            self.receive(packet);
        }
        self.log_changes();
        let ids: Vec<PacketId> = self
            .f
            .session
            .in_flight_entries()
            .map(|f| f.packet_id)
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ids.len(),
            "[MQTT-2.2.1-3] ids in flight: {ids:?}"
        );
    }

    fn disconnect(&mut self) {
        if self.connected {
            self.connected = false;
            self.owed.clear();
            self.f.session.compact();
        }
    }

    /// The records the broker writes for the session's changes.
    fn log_changes(&mut self) {
        for change in self.f.changes.drain(..) {
            self.log.push(match change {
                Change::Sent { seq, packet_id } => Record::Sent(seq, packet_id),
                Change::Received { seq } => Record::Received(seq),
                Change::Done { seq } | Change::Dropped { seq } | Change::Expired { seq } => {
                    Record::Done(seq)
                }
            });
        }
    }

    fn receive(&mut self, packet: Packet) {
        assert!(self.connected, "a packet for a client not connected");
        match packet {
            Packet::Publish(p) if p.qos == QoS::AtMostOnce => {}
            Packet::Publish(p) => {
                let Some(packet_id) = p.packet_id else {
                    panic!("a QoS {} PUBLISH without packet id", p.qos as u8)
                };
                assert!(
                    !self.owed.iter().any(|o| o.packet_id == packet_id),
                    "[MQTT-2.2.1-3] {packet_id:?} reused"
                );
                if !p.dup {
                    let seq: Seq = std::str::from_utf8(&p.payload[1..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    assert!(
                        seq > self.newest,
                        "[MQTT-4.6.0-6] #{seq} after #{}",
                        self.newest
                    );
                    self.newest = seq;
                }
                self.owed.push(Owed {
                    packet_id,
                    qos: p.qos,
                    released: false,
                    published_here: true,
                });
                let awaiting = self.owed.iter().filter(|o| o.published_here).count();
                assert!(
                    awaiting <= usize::from(self.receive_maximum),
                    "[MQTT-3.3.4-9] {awaiting} PUBLISH unacknowledged, Receive Maximum {}",
                    self.receive_maximum
                );
            }
            Packet::PubRel(a) => match self.owed.iter_mut().find(|o| o.packet_id == a.packet_id) {
                Some(o) => o.released = true,
                None => self.owed.push(Owed {
                    packet_id: a.packet_id,
                    qos: QoS::ExactlyOnce,
                    released: true,
                    published_here: false,
                }),
            },
            other => panic!("not for a subscriber: {other:?}"),
        }
    }
}

/// What a session holds, comparably: its window (id, message, QoS, state), its queue and
/// the queue's payload bytes.
pub(super) type Holdings = (Vec<(u16, Seq, u8, Outbound)>, Vec<Seq>, usize);

pub(super) fn holdings(session: &Session) -> Holdings {
    let window = session
        .in_flight_entries()
        .map(|f| {
            (
                f.packet_id.get(),
                f.entry.seq(),
                f.entry.qos() as u8,
                f.state,
            )
        })
        .collect();
    let queue = session.queued_entries().map(Queued::seq).collect();
    (window, queue, session.held().queued_bytes)
}
