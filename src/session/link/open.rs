//! From CONNECT to CONNACK: acceptance (`session::connect`), then the session, the will
//! held, and the CONNACK's v5 properties.
//!
//! A v5 CONNACK tells the Session Expiry granted when it is less than asked (MQTT 5.0
//! 3.2.2.3.2; 0xFFFFFFFF asks for a session that never expires, so any cap is less), that
//! retained messages, wildcards, Subscription Identifiers and shared subscriptions are
//! available, and Response Information when asked for (3.2.2.3.15). Under
//! `connack_debug_properties` (off by default: they are internals) it also tells which core
//! owns the client and which accepted it (User Properties `berth-shard`, `berth-accepted-on`),
//! and in a cluster which node (`berth-node`),
//! left out when they would push the CONNACK past the client's Maximum Packet Size
//! [MQTT-3.2.2-20] (the writer would drop the whole CONNACK).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::{ClientLimits, Engine, Link};
use crate::broker::Effects;
use crate::ownership::CoreId;
use crate::protocol::{self, Connect, Packet, Properties, ProtocolVersion, Publish, ReasonCode};
pub use crate::session::connect::Refusal;
use crate::session::connect::{accept_connect, requested_expiry, Accepted, ConnectPolicy};

/// Response Information given to a v5 client that asks for it: this, its client id, `/`.
const RESPONSE_PREFIX: &str = "berth/response/";

/// An accepted CONNECT, waiting for the driver to register its client id.
#[derive(Debug)]
pub struct Opening {
    connect: Box<Connect>,
    accepted: Accepted,
    /// A copy of its own: the decoded id is a slice of the read buffer, and a session
    /// outlives its connection (an idle session would otherwise pin a whole buffer).
    client_id: ByteString,
    receive_maximum: u16,
    topic_alias_maximum: u16,
    max_session_expiry: Duration,
    max_inflight_messages: u16,
}

/// What a started link hands the driver, to be carried out in this order: apply
/// `effects`; start the writer with `limits`; queue `conn_ack`, then `resume`.
#[derive(Debug)]
pub struct Started {
    pub session_present: bool,
    pub effects: Effects,
    pub limits: ClientLimits,
    pub conn_ack: Packet,
    pub resume: Vec<Packet>,
}

impl Link {
    /// Decides on a decoded CONNECT. `assigned_id` gives an id to a client that sent
    /// none; `owner` is the core serving it, `accepted_on` the core that accepted it.
    pub fn open(
        connect: Box<Connect>,
        policy: &ConnectPolicy,
        assigned_id: impl FnOnce() -> ByteString,
        (owner, accepted_on): (CoreId, CoreId),
    ) -> Result<Opening, Refusal> {
        let mut accepted = accept_connect(&connect, policy, assigned_id)
            .map_err(|conn_ack| Refusal::new(conn_ack, ClientLimits::of(&connect)))?;
        let version = connect.protocol;
        if version.is_v5() && policy.connack_debug_properties {
            let props = &mut accepted.conn_ack.properties.user_properties;
            props.push(("berth-shard".into(), ByteString::from(owner.to_string())));
            props.push((
                "berth-accepted-on".into(),
                ByteString::from(accepted_on.to_string()),
            ));
            if let Some(node) = &policy.node {
                props.push(("berth-node".into(), node.clone()));
            }
            let conn_ack = Packet::ConnAck(accepted.conn_ack.clone());
            if let Some(max) = accepted.client_max_packet_size {
                if protocol::encoded_len(&conn_ack, version) > max as usize {
                    accepted.conn_ack.properties.user_properties.clear();
                }
            }
        }
        let client_id = ByteString::from(&*accepted.client_id);
        Ok(Opening {
            connect,
            accepted,
            client_id,
            receive_maximum: policy.receive_maximum,
            topic_alias_maximum: policy.topic_alias_maximum,
            max_session_expiry: policy.max_session_expiry,
            max_inflight_messages: policy.max_inflight_messages,
        })
    }
}

impl Opening {
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    pub fn version(&self) -> ProtocolVersion {
        self.connect.protocol
    }

    pub fn connect(&self) -> &Connect {
        &self.connect
    }

    pub fn clean_start(&self) -> bool {
        self.connect.clean_start
    }

    pub fn keep_alive(&self) -> Duration {
        self.accepted.keep_alive
    }

    /// Starts the session (the driver has registered the client id, and any connection
    /// it took over has stopped). A refusal here means that this core holds its share of
    /// `max_sessions` already.
    pub fn start(self, now: Instant, engine: &mut impl Engine) -> Result<(Link, Started), Refusal> {
        let Opening {
            connect,
            accepted,
            client_id,
            ..
        } = &self;
        let version = connect.protocol;
        let requested = requested_expiry(connect, self.max_session_expiry);
        let receive_maximum = accepted
            .client_receive_maximum
            .min(self.max_inflight_messages);
        let connected = engine.connect(
            client_id,
            connect.username.as_deref(),
            connect.clean_start,
            requested,
            receive_maximum,
            now,
        );
        let Some((present, granted, resume, effects)) = connected else {
            let mut conn_ack = accepted.conn_ack.clone();
            // 3.1.1 has no quota code: the encoder sends 0x03 Server unavailable.
            conn_ack.reason_code = ReasonCode::QUOTA_EXCEEDED;
            conn_ack.properties = Properties::default();
            conn_ack.properties.reason_string = Some("session limit reached".into());
            return Err(Refusal::new(conn_ack, ClientLimits::of(connect)));
        };
        let will = will_of(connect);
        if let Some((will, delay)) = &will {
            engine.hold_will(client_id, will, *delay);
        }
        let mut conn_ack = accepted.conn_ack.clone();
        conn_ack.session_present = present;
        if version.is_v5() {
            let props = &mut conn_ack.properties;
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            if granted < requested || (asked == u32::MAX && granted.as_secs() < u64::from(u32::MAX))
            {
                props.session_expiry_interval =
                    Some(granted.as_secs().min(u64::from(u32::MAX)) as u32);
            }
            props.retain_available = Some(1);
            props.wildcard_subscription_available = Some(1);
            props.subscription_identifier_available = Some(1);
            props.shared_subscription_available = Some(1);
            if connect.properties.request_response_information == Some(1) {
                props.response_information =
                    Some(ByteString::from(format!("{RESPONSE_PREFIX}{client_id}/")));
            }
        }
        let limits = ClientLimits {
            version,
            max_packet_size: accepted.client_max_packet_size,
            topic_alias_maximum: accepted.client_topic_alias_maximum,
            request_problem_information: accepted.request_problem_information,
        };
        let link = Link {
            version,
            client_id: client_id.clone(),
            keep_alive: accepted.keep_alive,
            last_packet: now,
            aliases: vec![None; usize::from(self.topic_alias_maximum)],
            receive_maximum: self.receive_maximum,
            expiry: granted,
            max_session_expiry: self.max_session_expiry,
            zero_expiry_at_connect: requested.is_zero(),
            will,
            pending: Effects::default(),
            acks: Vec::new(),
            routed_on: false,
            refusals_before: None,
            release_before: None,
            steps: VecDeque::new(),
            end: None,
            limits: super::LinkLimits::unlimited(),
        };
        let started = Started {
            session_present: present,
            effects,
            limits,
            conn_ack: Packet::ConnAck(conn_ack),
            resume,
        };
        Ok((link, started))
    }
}

/// The CONNECT's will as the PUBLISH it becomes, and its Will Delay Interval.
fn will_of(connect: &Connect) -> Option<(Publish, u32)> {
    let will = connect.will.clone()?;
    let mut properties = will.properties;
    let delay = properties.will_delay_interval.take().unwrap_or(0);
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: None,
        properties,
        payload: will.payload,
    };
    Some((publish, delay))
}
