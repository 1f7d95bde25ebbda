//! The fuzz input's reading: each operation is a tag byte (kind and client) and one
//! argument byte; bytes missing at the end read as 0. The constants say what the few
//! clients, topics and filters are, so that sequences collide often.

pub(super) const CLIENTS: usize = 3;
/// Client `c` is owned by core `c % CORES`: c0 and c2 share a core, c1 is on the other.
pub(super) const CORES: usize = 2;
pub(super) const TOPICS: [&str; 3] = ["a", "a/b", "b/c"];
pub(super) const FILTERS: [&str; 5] = ["a", "a/#", "+/b", "#", "b/+"];
pub(super) const EXPIRIES: [u64; 4] = [0, 5, 60, 100_000];
pub(super) const RECEIVE_MAXIMA: [u16; 4] = [1, 2, 3, u16::MAX];
/// Fewer operations than a session's queue holds (1,000): no message is dropped for
/// space, so every one is owed.
pub(super) const MAX_OPS: usize = 400;

/// One client action, decoded from the fuzz input. Public so that seeds can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect {
        client: u8,
        clean: bool,
        expiry: u8,
        receive_maximum: u8,
    },
    /// `expiry`: 0 keeps the session's expiry, 1 sets it to 0, 2 to 5 seconds (only when
    /// it was not 0 [MQTT-3.14.2-2]).
    Disconnect {
        client: u8,
        expiry: u8,
    },
    Subscribe {
        client: u8,
        filter: u8,
        qos: u8,
    },
    Unsubscribe {
        client: u8,
        filter: u8,
    },
    Publish {
        client: u8,
        topic: u8,
        qos: u8,
        retain: bool,
    },
    /// The client acknowledges the `nth` message it holds unacknowledged (PUBACK, PUBREC,
    /// PUBREC with an error code, or PUBCOMP, as its state calls for).
    Ack {
        client: u8,
        nth: u8,
        refuse: bool,
    },
    /// An inbound QoS 2 PUBLISH with packet id `id` (1-4), new or retransmitted.
    PublishQos2 {
        client: u8,
        id: u8,
        topic: u8,
    },
    /// PUBREL for inbound packet id `id` (1-4), known or not.
    PubRel {
        client: u8,
        id: u8,
    },
    /// An acknowledgement for a packet id the client does not hold.
    StrayAck {
        client: u8,
        kind: u8,
        id: u8,
    },
    /// Time passes (1, 6, 61 or 7,201 seconds) and the engine's timers run.
    Wait {
        step: u8,
    },
    /// Every core crashes and recovers from its log: `keep` below 128 keeps every record
    /// (a process crash), from 128 each core loses a part of what followed its last
    /// durable point (an OS crash under `fsync = always`).
    Crash {
        keep: u8,
    },
}

pub(super) const OP_KINDS: u8 = 10;

impl Op {
    /// Reads one operation from the front of `data`; missing bytes read as 0.
    fn read(data: &mut &[u8]) -> Option<Op> {
        let (&tag, rest) = data.split_first()?;
        *data = rest;
        let mut next = || match data.split_first() {
            Some((&b, rest)) => {
                *data = rest;
                b
            }
            None => 0,
        };
        let client = tag / OP_KINDS % CLIENTS as u8;
        Some(match tag % OP_KINDS {
            0 => {
                let b = next();
                Op::Connect {
                    client,
                    clean: b & 1 != 0,
                    expiry: (b >> 1) % 4,
                    receive_maximum: (b >> 3) % 4,
                }
            }
            1 => Op::Disconnect {
                client,
                expiry: next() % 3,
            },
            2 => {
                let b = next();
                Op::Subscribe {
                    client,
                    filter: b % 5,
                    qos: b / 5 % 3,
                }
            }
            3 => Op::Unsubscribe {
                client,
                filter: next() % 5,
            },
            4 => {
                let b = next();
                Op::Publish {
                    client,
                    topic: b % 3,
                    qos: b / 3 % 3,
                    retain: b / 9 % 2 == 1,
                }
            }
            5 => {
                let b = next();
                Op::Ack {
                    client,
                    nth: b % 8,
                    refuse: b / 8 % 4 == 3,
                }
            }
            6 => {
                let b = next();
                Op::PublishQos2 {
                    client,
                    id: b % 4 + 1,
                    topic: b / 4 % 3,
                }
            }
            7 => Op::PubRel {
                client,
                id: next() % 4 + 1,
            },
            8 => {
                let b = next();
                Op::StrayAck {
                    client,
                    kind: b % 4,
                    id: b / 4 % 16 + 1,
                }
            }
            // The Wait kind's tags of client 1: no saved input had one.
            _ if client == 1 => Op::Crash { keep: next() },
            _ => Op::Wait { step: next() % 4 },
        })
    }

    /// The bytes that read back as this operation (for writing seeds).
    pub fn encode(self, out: &mut Vec<u8>) {
        let tag = |kind: u8, client: u8| kind + OP_KINDS * client;
        let (t, b) = match self {
            Op::Connect {
                client,
                clean,
                expiry,
                receive_maximum,
            } => (
                tag(0, client),
                u8::from(clean) | expiry << 1 | receive_maximum << 3,
            ),
            Op::Disconnect { client, expiry } => (tag(1, client), expiry),
            Op::Subscribe {
                client,
                filter,
                qos,
            } => (tag(2, client), filter + 5 * qos),
            Op::Unsubscribe { client, filter } => (tag(3, client), filter),
            Op::Publish {
                client,
                topic,
                qos,
                retain,
            } => (tag(4, client), topic + 3 * qos + 9 * u8::from(retain)),
            Op::Ack {
                client,
                nth,
                refuse,
            } => (tag(5, client), nth + if refuse { 24 } else { 0 }),
            Op::PublishQos2 { client, id, topic } => (tag(6, client), (id - 1) + 4 * topic),
            Op::PubRel { client, id } => (tag(7, client), id - 1),
            Op::StrayAck { client, kind, id } => (tag(8, client), kind + 4 * (id - 1)),
            Op::Wait { step } => (tag(9, 0), step),
            Op::Crash { keep } => (tag(9, 1), keep),
        };
        out.extend([t, b]);
    }
}

/// The operations `data` reads as, at most [`MAX_OPS`].
pub fn ops(mut data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match Op::read(&mut data) {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}
