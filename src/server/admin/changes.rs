//! How a core carries out what the admin API asks of its sessions beyond looking: a
//! subscription added or removed, a message published, settings put in force.
//!
//! Each goes through the broker's own paths, so it is journaled, announced and routed as
//! the same packet from a client would be, and meets the limits a client's would: a filter
//! deeper than `max_topic_levels` is refused with 0x8F (and counted) as a client's is. Guarantees: an answer to a subscribe comes once
//! every other core has heard of the new interest (a publish made after it, on any core,
//! is routed to the session) and the SUBSCRIBE record is durable; an answer to a QoS 1/2
//! publish comes once the message is as durable as a client's is when its PUBACK leaves
//! (every core it crossed to has processed it and synced its log, then this core's).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::super::local::Core;
use super::cores::{Answer, Question};
use crate::broker::CoreMsg;
use crate::config::Settings;
use crate::protocol::{PacketId, Publish, QoS, ReasonCode, Subscribe, Unsubscribe};
use crate::session::link::{LimitHit, LinkLimits};
use crate::session::Subscription;

/// The client id the admin API publishes as (what No Local compares with).
pub const PUBLISHER: &str = "$admin";

/// Why a publish was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPublished {
    /// The store takes no new QoS 1/2 messages (disk full, or `max_stored_bytes`).
    StoreClosed,
    /// A core could not store it (its log refused the record).
    StoreRefused,
}

pub async fn answer(core: &Rc<Core>, question: Question) -> Answer {
    match question {
        Question::Subscriptions { client_id } => {
            Answer::Subscriptions(core.broker.borrow().subscriptions_of(&client_id))
        }
        Question::Subscribe {
            client_id,
            filter,
            subscription,
        } => Answer::Reason(subscribe(core, &client_id, filter, subscription).await),
        Question::Unsubscribe { client_id, filter } => {
            Answer::Reason(unsubscribe(core, &client_id, filter).await)
        }
        Question::Held {
            client_id,
            after,
            limit,
        } => Answer::Held(core.broker.borrow().held_messages(&client_id, after, limit)),
        Question::Publish(publish) => Answer::Published(publish_as_admin(core, publish).await),
        Question::Settings(settings) => {
            put_in_force(core, &settings);
            Answer::Done(true)
        }
        _ => unreachable!("cores::answer answers the other questions"),
    }
}

/// The packet id of the packets the admin API makes; no connection sees them.
fn packet_id() -> PacketId {
    PacketId::new(1).unwrap_or_else(|| unreachable!("1 is not 0"))
}

async fn subscribe(
    core: &Rc<Core>,
    client_id: &str,
    filter: String,
    subscription: Subscription,
) -> Option<ReasonCode> {
    let client_id = ByteString::from(client_id);
    if !core.broker.borrow().has_session(&client_id) {
        return None;
    }
    let mut packet = Subscribe::one(packet_id(), filter, subscription.options.qos);
    packet.filters[0].1 = subscription.options;
    let limits = LinkLimits::new(0, core.config.limits.max_topic_levels);
    if !limits.take_deep_filters(&mut packet).is_empty() {
        core.limits.count(LimitHit::FilterLevels);
        return Some(ReasonCode::TOPIC_FILTER_INVALID);
    }
    if let Some(identifier) = subscription.identifier {
        packet.properties.subscription_identifiers = vec![identifier];
    }
    let outcome = core
        .broker
        .borrow_mut()
        .subscribe(&client_id, packet, Instant::now());
    let owed = core.apply(outcome.effects).await;
    if outcome.interest_changed {
        core.sync_peers().await;
        core.sync_nodes_for(owed).await;
    }
    made_durable(core).await;
    outcome.sub_ack.reason_codes.first().copied()
}

async fn unsubscribe(core: &Rc<Core>, client_id: &str, filter: String) -> Option<ReasonCode> {
    let client_id = ByteString::from(client_id);
    if !core.broker.borrow().has_session(&client_id) {
        return None;
    }
    let packet = Unsubscribe {
        packet_id: packet_id(),
        properties: Default::default(),
        filters: vec![ByteString::from(filter)],
    };
    let (unsub_ack, effects) = core.broker.borrow_mut().unsubscribe(&client_id, packet);
    let announced = !effects.to_cores.is_empty();
    core.apply(effects).await;
    if announced {
        core.sync_peers().await;
    }
    made_durable(core).await;
    unsub_ack.reason_codes.first().copied()
}

/// As a client's PUBLISH on this core: the gate, the routing, then (QoS 1/2) what its
/// acknowledgement would wait for (`connection::carry_out`, `Step::Release`).
async fn publish_as_admin(core: &Rc<Core>, mut publish: Publish) -> Result<(), NotPublished> {
    let acknowledged = publish.qos != QoS::AtMostOnce;
    if acknowledged && core.gate.closed().is_some() {
        core.stats.publish_refused();
        return Err(NotPublished::StoreClosed);
    }
    publish.packet_id = acknowledged.then(packet_id);
    let before = core.refusals();
    let effects = core.broker.borrow_mut().publish(
        &ByteString::from_static(PUBLISHER),
        publish,
        Instant::now(),
    );
    let crossed = effects.to_cores.iter().any(|(_, msg)| match msg {
        CoreMsg::Publish(m) => m.qos != QoS::AtMostOnce,
        CoreMsg::Retain(_) => true,
        _ => false,
    });
    let owed = core.apply(effects).await;
    if !acknowledged {
        return Ok(());
    }
    if crossed {
        core.sync_peers().await;
    }
    core.sync_nodes_for(owed).await;
    made_durable(core).await;
    if core.refused_since(&before) {
        core.stats.publish_refused();
        return Err(NotPublished::StoreRefused);
    }
    Ok(())
}

async fn made_durable(core: &Core) {
    let durable = core.broker.borrow().durable();
    if let Some(durable) = durable {
        if let Err(error) = durable.await {
            tracing::error!(%error, "the log could not be made durable");
        }
    }
}

fn put_in_force(core: &Core, settings: &Settings) {
    let expiry = Duration::from_secs(settings.max_session_expiry);
    core.broker
        .borrow_mut()
        .set_session_limits(expiry, settings.queue_limits());
    core.policy.borrow_mut().max_session_expiry = expiry;
    core.publish_rate.set(settings.max_publish_rate);
    tracing::info!(core = %core.id, ?settings, "admin API: settings in force");
}
