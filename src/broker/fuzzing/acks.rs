//! The model's acknowledgements: the client's PUBACK, PUBREC, PUBCOMP for what it holds,
//! stray ones for ids it does not hold, and the inbound QoS 2 exchange (PUBLISH, its
//! retransmissions, PUBREL), each checked against what the engine answers.

use crate::protocol::{Packet, QoS, ReasonCode};

use super::client::Held;
use super::ops::CORES;
use super::{ack, id, World};

impl World {
    pub(super) fn publish_qos2(&mut self, c: usize, packet_id: u16, topic: &'static str) {
        if !self.clients[c].online {
            return;
        }
        let fresh = self.brokers[c % CORES].receive_qos2(&self.names[c], id(packet_id));
        let client = &mut self.clients[c];
        assert_eq!(
            fresh,
            !client.awaiting_rel.contains(&packet_id),
            "inbound QoS 2 id {packet_id} routed twice or not at all"
        );
        if fresh {
            client.awaiting_rel.push(packet_id);
            self.publish_as(c, topic, QoS::ExactlyOnce, false, Some(packet_id));
        } else {
            // The PUBREC answering a retransmission waits for the log too.
            self.made_durable(c % CORES);
        }
    }

    pub(super) fn pub_rel(&mut self, c: usize, packet_id: u16) {
        if !self.clients[c].online {
            return;
        }
        let effects = self.brokers[c % CORES].on_ack(
            &self.names[c],
            Packet::PubRel(ack(packet_id, ReasonCode::SUCCESS)),
            self.now,
        );
        let client = &mut self.clients[c];
        let known = client.awaiting_rel.contains(&packet_id);
        client.awaiting_rel.retain(|id| *id != packet_id);
        let expected = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let name = self.names[c].clone();
        let comp = Packet::PubComp(ack(packet_id, expected));
        assert_eq!(
            effects.to_clients,
            [(name, comp.into())],
            "the answer to PUBREL"
        );
        assert!(effects.to_cores.is_empty());
    }

    pub(super) fn ack(&mut self, c: usize, nth: usize, refuse: bool) {
        let client = &self.clients[c];
        if !client.online || client.held.is_empty() {
            return;
        }
        let nth = nth % client.held.len();
        let (packet_id, held) = client.held[nth];
        let packet = match held {
            Held::Published {
                qos: QoS::AtLeastOnce,
                ..
            } => {
                self.clients[c].release(packet_id);
                Packet::PubAck(ack(packet_id, ReasonCode::SUCCESS))
            }
            Held::Published { .. } if refuse => {
                // MQTT 5.0 4.3.3: a PUBREC with an error code ends the delivery.
                self.clients[c].release(packet_id);
                Packet::PubRec(ack(packet_id, ReasonCode::UNSPECIFIED_ERROR))
            }
            Held::Published { .. } => {
                // Still counts against Receive Maximum until PUBCOMP [MQTT-4.9.0-1].
                let client = &mut self.clients[c];
                client.held[nth].1 = Held::Received;
                Packet::PubRec(ack(packet_id, ReasonCode::SUCCESS))
            }
            Held::Received => return,
            Held::Released => {
                self.clients[c].release(packet_id);
                Packet::PubComp(ack(packet_id, ReasonCode::SUCCESS))
            }
        };
        let effects = self.brokers[c % CORES].on_ack(&self.names[c], packet, self.now);
        self.deliver(effects, c % CORES);
    }

    pub(super) fn stray_ack(&mut self, c: usize, kind: u8, packet_id: u16) {
        let client = &self.clients[c];
        if !client.online || client.held.iter().any(|(id, _)| *id == packet_id) {
            return;
        }
        let a = ack(packet_id, ReasonCode::SUCCESS);
        let packet = match kind {
            0 => Packet::PubAck(a),
            1 => Packet::PubRec(a),
            _ => Packet::PubComp(a),
        };
        let is_rec = matches!(packet, Packet::PubRec(_));
        let effects = self.brokers[c % CORES].on_ack(&self.names[c], packet, self.now);
        if is_rec {
            // [MQTT-4.3.3] PUBREL answers even an unknown PUBREC, with 0x92 in 5.0.
            let rel = Packet::PubRel(ack(packet_id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
            assert_eq!(effects.to_clients, [(self.names[c].clone(), rel.into())]);
        } else {
            assert!(
                effects.to_clients.is_empty(),
                "an unknown ack sent {effects:?}"
            );
        }
    }
}
