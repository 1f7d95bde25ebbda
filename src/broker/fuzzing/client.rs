//! The model's view of one client: what it holds unacknowledged, what the server owes it,
//! and the checks made on every PUBLISH it receives.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::protocol::{Publish, QoS};

/// What the client holds for one packet id of a message sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// PUBLISH received, not yet acknowledged.
    Published { token: u64, qos: QoS, retain: bool },
    /// QoS 2: PUBREC sent, PUBREL not yet received.
    Received,
    /// QoS 2: PUBREL received, PUBCOMP not yet sent.
    Released,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Client {
    pub(super) online: bool,
    /// The session exists on the server (in the model's reckoning).
    pub(super) session: bool,
    pub(super) expiry: Duration,
    /// When the session ends, while offline.
    pub(super) expires_at: Option<Instant>,
    pub(super) receive_maximum: u16,
    pub(super) subscriptions: HashMap<&'static str, QoS>,
    /// Packet ids the client holds, in the order their PUBLISH first arrived.
    pub(super) held: Vec<(u16, Held)>,
    /// Packet ids sent (new or DUP) on this connection and not yet acknowledged.
    pub(super) sent_here: Vec<u16>,
    /// Messages owed to the session as new messages, in publish order: (token, QoS).
    pub(super) owed: VecDeque<(u64, QoS)>,
    /// Messages received as new messages, with their QoS.
    pub(super) received: HashMap<u64, QoS>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub(super) awaiting_rel: Vec<u16>,
    /// Counts the ends of the session's persistence (ended, or expiry 0): a crash check
    /// compares it with the count at the last durable point.
    pub(super) epoch: u64,
}

impl Client {
    pub(super) fn forget_session(&mut self) {
        self.epoch += 1;
        self.session = false;
        self.expires_at = None;
        self.subscriptions.clear();
        self.held.clear();
        self.sent_here.clear();
        self.owed.clear();
        self.awaiting_rel.clear();
    }

    pub(super) fn release(&mut self, packet_id: u16) {
        self.held.retain(|(id, _)| *id != packet_id);
        self.sent_here.retain(|id| *id != packet_id);
    }
}

pub(super) fn token_of(p: &Publish) -> u64 {
    let bytes: [u8; 8] = p.payload[..]
        .try_into()
        .unwrap_or_else(|_| panic!("a payload that was never published: {:?}", p.payload));
    u64::from_be_bytes(bytes)
}

pub(super) fn receive_publish(name: &ByteString, client: &mut Client, p: &Publish) {
    let token = token_of(p);
    if p.qos == QoS::AtMostOnce {
        assert!(p.packet_id.is_none() && !p.dup);
        return;
    }
    let packet_id = p
        .packet_id
        .expect("a QoS 1/2 PUBLISH has a packet id")
        .get();
    let pos = client.held.iter().position(|(id, _)| *id == packet_id);
    let here = client.sent_here.len() + usize::from(!client.sent_here.contains(&packet_id));
    assert!(
        here <= usize::from(client.receive_maximum),
        "{name}: {here} unacknowledged on this connection, Receive Maximum {}: {p:?} while holding {:?}, sent here {:?}",
        client.receive_maximum,
        client.held,
        client.sent_here,
    );
    if !client.sent_here.contains(&packet_id) {
        client.sent_here.push(packet_id);
    }
    let held = Held::Published {
        token,
        qos: p.qos,
        retain: p.retain,
    };
    if p.dup {
        let was = pos.map(|pos| client.held[pos].1);
        assert_eq!(
            was,
            Some(held),
            "{name}: DUP PUBLISH id {packet_id} is not the message held under that id"
        );
        return;
    }
    assert!(
        pos.is_none(),
        "{name}: new PUBLISH reuses packet id {packet_id} still in flight"
    );
    assert!(
        client.held.len() < usize::from(client.receive_maximum),
        "{name}: a new PUBLISH beyond Receive Maximum {} ({} held)",
        client.receive_maximum,
        client.held.len()
    );
    client.held.push((packet_id, held));
    if p.retain {
        return; // a retained message sent on SUBSCRIBE: owed to nobody in particular
    }
    if let Some(qos) = client.received.get(&token) {
        panic!(
            "{name}: message {token} received twice as new (QoS {qos:?}, now {:?})",
            p.qos
        );
    }
    let expected = client.owed.pop_front();
    assert_eq!(
        expected,
        Some((token, p.qos)),
        "{name}: message {token} at {:?} out of order",
        p.qos
    );
    client.received.insert(token, p.qos);
}
