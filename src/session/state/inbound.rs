//! Inbound QoS 2: the packet ids a session's client has published under and not yet
//! released (MQTT 5.0 section 4.3.3).
//!
//! Guarantee: a QoS 2 message received is routed once, however often its PUBLISH is
//! retransmitted, until its PUBREL [MQTT-4.3.3-10]; PUBREL is always answered with
//! PUBCOMP under the same id [MQTT-4.3.3-11], 0x92 (Packet Identifier not found) for an
//! id not held.

use super::{ack, Session};
use crate::protocol::{Packet, PacketId, ReasonCode};

impl Session {
    /// An inbound QoS 2 PUBLISH: returns whether to route it (false for a retransmission
    /// of one not yet released) [MQTT-4.3.3-10].
    pub fn receive_qos2(&mut self, packet_id: PacketId) -> bool {
        if self.held().awaiting_rel.contains(&packet_id.get()) {
            return false;
        }
        self.held_mut().awaiting_rel.push(packet_id.get());
        true
    }

    pub fn awaiting_release(&self) -> usize {
        self.held().awaiting_rel.len()
    }

    pub fn awaiting_release_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.held().awaiting_rel.iter().copied()
    }

    /// PUBREL for an inbound QoS 2 message: answer PUBCOMP. Returns whether it was known.
    pub fn on_pub_rel(&mut self, packet_id: PacketId) -> (Packet, bool) {
        let known = self.forget_awaiting(packet_id.get());
        let reason = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        (Packet::PubComp(ack(packet_id, reason)), known)
    }

    /// Recovery: QOS2_IN (`awaiting`) or QOS2_RELEASED, as the log recorded it.
    pub fn restore_awaiting_release(&mut self, packet_id: u16, awaiting: bool) {
        if awaiting {
            let held = self.held_mut();
            if !held.awaiting_rel.contains(&packet_id) {
                held.awaiting_rel.push(packet_id);
            }
        } else {
            self.forget_awaiting(packet_id);
        }
    }

    fn forget_awaiting(&mut self, packet_id: u16) -> bool {
        let Some(held) = self.held.as_deref_mut() else {
            return false;
        };
        match held.awaiting_rel.iter().position(|id| *id == packet_id) {
            Some(pos) => {
                held.awaiting_rel.swap_remove(pos);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_4_3_3_10_inbound_qos2_routes_once_until_released() {
        let mut s = Session::new("c".into());
        let id = PacketId::new(7).unwrap();
        assert!(s.receive_qos2(id));
        assert!(!s.receive_qos2(id));
        assert!(
            matches!(s.on_pub_rel(id), (Packet::PubComp(a), true) if a.reason_code == ReasonCode::SUCCESS)
        );
        assert!(s.receive_qos2(id));
        assert!(matches!(
            s.on_pub_rel(PacketId::new(8).unwrap()),
            (Packet::PubComp(a), false) if a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        ));
    }

    #[test]
    fn restored_ids_are_held_once_and_released() {
        let mut s = Session::new("c".into());
        s.restore_awaiting_release(3, true);
        s.restore_awaiting_release(3, true);
        s.restore_awaiting_release(4, true);
        s.restore_awaiting_release(4, false);
        assert_eq!(s.awaiting_release_ids().collect::<Vec<_>>(), [3]);
        assert!(!s.receive_qos2(PacketId::new(3).unwrap()));
    }
}
