//! The CONNACK that refuses a CONNECT for one of the broker's admission limits:
//! a client id longer than `max_clientid_len` (v5 0x85 Client Identifier not valid,
//! 3.1.1 return code 2), or a client that is banned, by the ban file or for flapping (v5
//! 0x8A Banned, 3.1.1 return code 5, which `ReasonCode::to_v3_connack` maps it to).
//! In a cluster, a client id whose slot another node owns gets v5 0x9C Use another server
//! with the owner's address as Server Reference (MQTT 5.0 section 4.11; a client may
//! follow it), 3.1.1 return code 3 Server unavailable (3.1.1 has no redirection).
//! The server decides; this only writes the answer [MQTT-3.2.2-5].

use bytestring::ByteString;

use super::connect::Refusal;
use super::link::ClientLimits;
use crate::protocol::{ConnAck, Connect, Properties, ReasonCode};

/// Why a CONNECT is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The client id has more bytes than `max_clientid_len` allows.
    ClientIdTooLong { len: usize, max: usize },
    /// The ban file names the client (its id, username or network).
    Banned(&'static str),
    /// Flapping detection banned the client id; `secs` left of the ban.
    Flapping { secs: u64 },
    /// Another node of the cluster owns the client id's slot (or, for a client without
    /// an id, this node owns no slot to give it one from): go to `node` at `address`.
    OtherNode {
        slot: Option<u16>,
        node: String,
        address: String,
    },
}

impl NotAdmitted {
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            NotAdmitted::ClientIdTooLong { .. } => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            NotAdmitted::Banned(_) | NotAdmitted::Flapping { .. } => ReasonCode::BANNED,
            NotAdmitted::OtherNode { .. } => ReasonCode::USE_ANOTHER_SERVER,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            NotAdmitted::ClientIdTooLong { len, max } => {
                format!("the client id has {len} bytes, more than max_clientid_len {max}")
            }
            NotAdmitted::Banned(why) => format!("banned: {why}"),
            NotAdmitted::Flapping { secs } => {
                format!("banned for {secs} s more: the client id disconnected too often (flapping)")
            }
            NotAdmitted::OtherNode {
                slot: Some(slot),
                node,
                address,
            } => format!("the client id's slot {slot} lives on node {node} at {address}"),
            NotAdmitted::OtherNode {
                slot: None,
                node,
                address,
            } => format!(
                "this node owns no slot to assign a client id from: use node {node} at {address}"
            ),
        }
    }
}

/// The refusal for `why`, fitted to the client (a Reason String for v5 only).
pub fn refuse_admission(connect: &Connect, why: &NotAdmitted) -> Refusal {
    let reason = why.reason();
    let mut conn_ack = ConnAck {
        session_present: false,
        reason_code: why.reason_code(),
        properties: Properties::default(),
    };
    if connect.protocol.is_v5() {
        conn_ack.properties.reason_string = Some(ByteString::from(reason.clone()));
        if let NotAdmitted::OtherNode { address, .. } = why {
            conn_ack.properties.server_reference = Some(ByteString::from(address.as_str()));
        }
    }
    let mut refusal = Refusal::new(conn_ack, ClientLimits::of(connect));
    refusal.reason = reason;
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Packet, ProtocolVersion};

    #[test]
    fn each_refusal_has_its_code_in_both_versions() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let connect = Connect {
                protocol: version,
                clean_start: true,
                keep_alive: 10,
                client_id: "c".into(),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            };
            for (why, code, v3) in [
                (
                    NotAdmitted::ClientIdTooLong { len: 30, max: 23 },
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    2,
                ),
                (NotAdmitted::Banned("x"), ReasonCode::BANNED, 5),
                (NotAdmitted::Flapping { secs: 3 }, ReasonCode::BANNED, 5),
                (
                    NotAdmitted::OtherNode {
                        slot: Some(7),
                        node: "n2".into(),
                        address: "127.0.0.3:1883".into(),
                    },
                    ReasonCode::USE_ANOTHER_SERVER,
                    3,
                ),
            ] {
                let refusal = refuse_admission(&connect, &why);
                let Some(Packet::ConnAck(ack)) = refusal.conn_ack else {
                    panic!("a CONNACK");
                };
                assert_eq!(ack.reason_code, code);
                assert_eq!(code.to_v3_connack(), v3);
                assert_eq!(ack.properties.reason_string.is_some(), version.is_v5());
                let reference = ack.properties.server_reference.as_deref();
                match why {
                    NotAdmitted::OtherNode { .. } if version.is_v5() => {
                        assert_eq!(reference, Some("127.0.0.3:1883"))
                    }
                    _ => assert_eq!(reference, None),
                }
            }
        }
    }
}
