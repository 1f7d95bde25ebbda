//! SUBSCRIBE, UNSUBSCRIBE and PUBLISH on one core, and the messages other cores send it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::exactly_once::Routing;
use super::journal::{self, MessageRecord, Record, Target};
use super::messages::{Entry, Lookup};
use super::sys::is_sys_topic;
use super::{Broker, CoreMsg, Effects, Outgoing, SharedPublish};
use crate::ownership::CoreId;
use crate::protocol::{
    PacketId, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::session::state::{copy_topic_and_payload, publish_of, Delivery, Origin, Queued};
use crate::session::{Message, Subscription};
use crate::topic::{ParsedFilter, TopicFilter, TopicName};

/// What [`Broker::add_subscription`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The session already had this subscription (it was replaced [MQTT-3.8.4-3]).
    pub existed: bool,
    /// The other cores' view changed: a SUBACK should wait until they have seen it.
    pub interest_changed: bool,
}

pub struct SubscribeOutcome {
    pub sub_ack: SubAck,
    pub effects: Effects,
    /// Whether the interest of this core changed: the SUBACK should wait until every
    /// other core has seen the change, so that a publish that follows it is routed here.
    pub interest_changed: bool,
}

impl Broker {
    pub fn subscribe(
        &mut self,
        client_id: &ByteString,
        subscribe: Subscribe,
        now: Instant,
    ) -> SubscribeOutcome {
        let mut effects = Effects::default();
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut interest_changed = false;
        let identifier = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        for (raw, options) in subscribe.filters {
            // Kept for the life of the session: copied out of the read buffer it is a
            // slice of, and parsed from the copy, so it pins a few bytes, not the buffer.
            let raw = ByteString::from(&*raw);
            let Ok(parsed) = ParsedFilter::parse(raw.clone()) else {
                reason_codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            };
            if self.subscriptions_full(client_id, &raw) {
                self.counters.subscriptions_refused += 1;
                reason_codes.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            let subscription = Subscription {
                options,
                identifier,
            };
            let added =
                self.add_subscription(client_id, &raw, &parsed, subscription.clone(), &mut effects);
            interest_changed |= added.interest_changed;
            if let ParsedFilter::Plain(filter) = &parsed {
                self.send_retained(
                    client_id,
                    filter,
                    &subscription,
                    added.existed,
                    now,
                    &mut effects,
                );
            }
            reason_codes.push(ReasonCode(options.qos as u8));
        }
        let sub_ack = SubAck {
            packet_id: subscribe.packet_id,
            properties: Default::default(),
            reason_codes,
        };
        SubscribeOutcome {
            sub_ack,
            effects,
            interest_changed,
        }
    }

    /// Whether a new subscription to `raw` would take `client_id`'s session past
    /// `max_subscriptions`. Subscribing again to a filter it holds replaces that
    /// subscription [MQTT-3.8.4-3], so it is never refused. Only SUBSCRIBE asks: a
    /// restored subscription was granted already and comes back whatever the limit is now.
    fn subscriptions_full(&self, client_id: &ByteString, raw: &str) -> bool {
        self.sessions.get(client_id).is_some_and(|slot| {
            let held = &slot.session.subscriptions;
            held.len() >= self.policy.max_subscriptions && !held.contains(raw)
        })
    }

    /// Adds a subscription of `client_id` (plain or shared) to this core's tables and to
    /// its session, announcing to the other cores what they must know. Also the way back
    /// in for a subscription restored from storage.
    pub fn add_subscription(
        &mut self,
        client_id: &ByteString,
        raw: &ByteString,
        parsed: &ParsedFilter,
        subscription: Subscription,
        effects: &mut Effects,
    ) -> Added {
        let added = match parsed {
            ParsedFilter::Plain(filter) => {
                let inserted =
                    self.subscriptions
                        .insert(filter, client_id.clone(), subscription.clone());
                if inserted.filter_added {
                    self.broadcast(effects, |from| CoreMsg::Interest {
                        from,
                        filter: raw.clone(),
                        present: true,
                    });
                }
                Added {
                    existed: inserted.replaced.is_some(),
                    interest_changed: inserted.filter_added,
                }
            }
            ParsedFilter::Shared(group) => {
                let new = self.add_shared(client_id, group, subscription.clone(), effects);
                // Every new member changes the weights the other cores pick by.
                Added {
                    existed: !new,
                    interest_changed: new,
                }
            }
        };
        if let Some(slot) = self.sessions.get_mut(client_id) {
            let (options, identifier) = (subscription.options, subscription.identifier);
            slot.session.subscriptions.insert(raw.clone(), subscription);
            if let Some(sid) = slot.sid {
                self.journal(&Record::Subscribe {
                    sid,
                    filter: raw.clone(),
                    options,
                    identifier: identifier.unwrap_or(0),
                });
            }
        }
        added
    }

    /// The retained messages a new plain subscription releases, as its Retain Handling
    /// asks [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
    fn send_retained(
        &mut self,
        client_id: &ByteString,
        filter: &TopicFilter,
        subscription: &Subscription,
        existed: bool,
        now: Instant,
        effects: &mut Effects,
    ) {
        if !self.sessions.contains_key(client_id) {
            return;
        }
        let send = match subscription.options.retain_handling {
            RetainHandling::OnSubscribe => true,
            RetainHandling::OnNewSubscribe => !existed,
            RetainHandling::Never => false,
        };
        if !send {
            return;
        }
        let mut matching: Vec<Arc<Message>> = self
            .retained
            .values()
            .filter(|m| filter_matches(filter, &m.topic))
            .cloned()
            .collect();
        matching.sort_by(|a, b| a.topic.cmp(&b.topic));
        for message in matching {
            // [MQTT-3.3.1-8] retain set on messages sent for a new subscription.
            let target = (
                client_id.clone(),
                message.qos.min(subscription.options.qos),
                true,
                subscription.identifier.into_iter().collect(),
            );
            self.deliver_to(&message, vec![target], None, now, effects);
        }
    }

    pub fn unsubscribe(
        &mut self,
        client_id: &ByteString,
        unsubscribe: Unsubscribe,
    ) -> (UnsubAck, Effects) {
        let mut effects = Effects::default();
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for raw in unsubscribe.filters {
            let removed = self
                .sessions
                .get_mut(client_id)
                .and_then(|slot| slot.session.subscriptions.remove(&raw))
                .is_some();
            if removed {
                self.remove_subscription(client_id, &raw, &mut effects);
                if let Some(sid) = self.sessions.get(client_id).and_then(|slot| slot.sid) {
                    self.journal(&Record::Unsubscribe {
                        sid,
                        filter: raw.clone(),
                    });
                }
                reason_codes.push(ReasonCode::SUCCESS);
            } else if ParsedFilter::parse(raw.clone()).is_err() {
                reason_codes.push(ReasonCode::TOPIC_FILTER_INVALID);
            } else {
                reason_codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        (
            UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: Default::default(),
                reason_codes,
            },
            effects,
        )
    }

    pub(super) fn remove_subscription(
        &mut self,
        client_id: &ByteString,
        raw: &ByteString,
        effects: &mut Effects,
    ) {
        let filter = match ParsedFilter::parse(raw.clone()) {
            Ok(ParsedFilter::Plain(filter)) => filter,
            Ok(ParsedFilter::Shared(group)) => {
                return self.remove_shared(client_id, &group, effects)
            }
            Err(_) => return,
        };
        if self.subscriptions.remove(&filter, client_id).filter_removed {
            self.broadcast(effects, |from| CoreMsg::Interest {
                from,
                filter: raw.clone(),
                present: false,
            });
        }
    }

    pub(super) fn broadcast(&self, effects: &mut Effects, msg: impl Fn(CoreId) -> CoreMsg) {
        for core in (0..self.cores).map(CoreId).filter(|&c| c != self.id) {
            effects.to_cores.push((core, msg(self.id)));
        }
    }

    /// A PUBLISH from a client of this core (or its will). The topic is already valid.
    pub fn publish(&mut self, publisher: &ByteString, publish: Publish, now: Instant) -> Effects {
        self.publish_from(publisher, publish, None, now)
    }

    /// An inbound QoS 2 PUBLISH with a new packet id. For a persistent session it is
    /// journaled (QOS2_ROUTING, with an origin id) before it is routed, so that a crash
    /// before its PUBREC is journaled routes it again at recovery, and every core skips it
    /// if it already took it: exactly once across the crash.
    pub fn publish_exactly_once(
        &mut self,
        publisher: &ByteString,
        packet_id: PacketId,
        publish: Publish,
        now: Instant,
    ) -> Effects {
        let Some(sid) = self.sessions.get(publisher).and_then(|slot| slot.sid) else {
            return self.publish(publisher, publish, now);
        };
        let origin_seq = self.messages.allocate();
        let expires_ms = publish.properties.message_expiry_interval.map_or(0, |s| {
            self.clock.unix_ms(now + Duration::from_secs(u64::from(s)))
        });
        let routing = Routing {
            sid,
            packet_id: packet_id.get(),
            origin_seq,
            expires_ms,
            publisher: publisher.clone(),
            publish: journal::encode_publish(&publish),
        };
        if self.journal(&routing.record()).is_none() {
            // Not routed: without the record a crash before PUBREC could not tell whether
            // it had been. The PUBREC refuses it (the connection reads `store_refused`).
            self.counters.store_refused += 1;
            return Effects::default();
        }
        self.routing.insert((sid, routing.packet_id), routing);
        let origin = Origin {
            core: self.id.0 as u16,
            seq: origin_seq,
        };
        self.publish_from(publisher, publish, Some(origin), now)
    }

    pub(super) fn publish_from(
        &mut self,
        publisher: &ByteString,
        publish: Publish,
        origin: Option<Origin>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        if !publisher.is_empty() && is_sys_topic(&publish.topic) {
            // Only the broker writes `$SYS`; a client's PUBLISH was refused (0x87) in its Link.
            return effects;
        }
        self.counters.messages_received += 1;
        let mut properties = publish.properties;
        if let Some(values) = properties.values_mut() {
            values.topic_alias = None;
            values.subscription_identifiers.clear();
        }
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let (topic, payload) = own_small(publish.topic, publish.payload);
        let message = Arc::new(Message {
            topic,
            payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher: publisher.clone(),
            expires_at,
            origin,
        });
        if message.retain {
            self.set_retained(&message);
            self.broadcast(&mut effects, |_| CoreMsg::Retain(message.clone()));
        }
        let Ok(topic) = TopicName::new(message.topic.clone()) else {
            return effects;
        };
        let mut cores = [false; 64];
        let mut extra_cores = Vec::new();
        self.interest
            .matches(&topic, |core, _| match cores.get_mut(core.0) {
                Some(seen) => *seen = true,
                None => extra_cores.push(*core),
            });
        extra_cores.sort_unstable();
        extra_cores.dedup();
        for core in cores
            .iter()
            .enumerate()
            .filter(|(_, &seen)| seen)
            .map(|(i, _)| CoreId(i))
            .chain(extra_cores)
        {
            effects
                .to_cores
                .push((core, CoreMsg::Publish(message.clone())));
        }
        self.deliver_local(&topic, &message, false, now, &mut effects);
        self.route_shared(&topic, &message, now, &mut effects);
        effects
    }

    /// A message from another core.
    pub fn on_core_msg(&mut self, msg: CoreMsg, now: Instant) -> Effects {
        let mut effects = Effects::default();
        match msg {
            CoreMsg::Publish(message) => {
                if let Ok(topic) = TopicName::new(message.topic.clone()) {
                    self.deliver_local(&topic, &message, true, now, &mut effects);
                }
            }
            CoreMsg::Interest {
                from,
                filter,
                present,
            } => {
                if let Ok(filter) = TopicFilter::new(filter) {
                    if present {
                        let _ = self.interest.insert(&filter, from, ());
                    } else {
                        let _ = self.interest.remove(&filter, &from);
                    }
                }
            }
            CoreMsg::Retain(message) => self.set_retained(&message),
            CoreMsg::Shared {
                message,
                groups,
                redirected,
            } => {
                for group in &groups {
                    self.deliver_shared(&message, group, redirected, now, &mut effects);
                }
            }
            CoreMsg::ShareCount {
                from,
                group,
                members,
                online,
            } => self.shares.set_count(from, &group, members, online),
            CoreMsg::Stats { from, stats } => self.record_stats(from, stats),
        }
        effects
    }

    fn set_retained(&mut self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            // [MQTT-3.3.1-10] an empty retained message clears the topic.
            if self.retained.remove(&message.topic).is_some() {
                self.journal(&Record::RetainedClear {
                    topic: message.topic.clone(),
                });
            }
        } else {
            // Retained messages live long: keep them in one allocation of their own, not
            // as slices of the publisher's read buffer.
            let publish = journal::encode_publish(&publish_for_log(message));
            let kept = match journal::decode_publish(journal::kind::RETAINED, &publish) {
                Ok(p) => Arc::new(Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: message.qos,
                    retain: message.retain,
                    properties: p.properties,
                    publisher: ByteString::from(&*message.publisher),
                    expires_at: message.expires_at,
                    origin: message.origin,
                }),
                Err(_) => message.clone(),
            };
            self.retained.insert(kept.topic.clone(), kept);
            if !outlives_restart(&message.topic) {
                return;
            }
            let record = Record::Retained {
                expires_ms: message.expires_at.map_or(0, |at| self.clock.unix_ms(at)),
                publisher: message.publisher.clone(),
                publish,
            };
            if self.journal(&record).is_none() {
                self.counters.store_refused += 1;
            }
        }
    }

    /// Hands a message to every local session with a matching subscription: one copy per
    /// session, at the highest QoS of its matching subscriptions, carrying all of their
    /// Subscription Identifiers (MQTT 5.0 4.8.1 allows either this or one copy each).
    /// `from_other_core`: the message arrived over a channel (see [`LOCAL_COPY_FANOUT`]).
    fn deliver_local(
        &mut self,
        topic: &TopicName,
        message: &Arc<Message>,
        from_other_core: bool,
        now: Instant,
        effects: &mut Effects,
    ) {
        if let Some(origin) = message.origin {
            if !self.origins.admit(origin) {
                // Routed again by a recovery, and this core took it before the crash.
                self.counters.duplicates_skipped += 1;
                return;
            }
        }
        // Reused between publishes: a fan-out to hundreds of sessions otherwise regrows
        // (rehashes) a fresh map every time.
        let mut targets = std::mem::take(&mut self.targets);
        self.subscriptions.matches(topic, |client, subscription| {
            if subscription.options.no_local && *client == message.publisher {
                return; // [MQTT-3.8.3-3] No Local
            }
            let entry = targets
                .entry(client.clone())
                .or_insert_with(|| (subscription.clone(), Vec::new()));
            if subscription.options.qos > entry.0.options.qos {
                entry.0.options = subscription.options;
            }
            entry.1.extend(subscription.identifier);
        });
        let list: Vec<_> = targets
            .drain()
            .map(|(client, (subscription, ids))| {
                let qos = message.qos.min(subscription.options.qos);
                let retain = subscription.options.retain_as_published && message.retain;
                (client, qos, retain, ids)
            })
            .collect();
        if targets.capacity() > 1 << 16 {
            targets.shrink_to(1 << 10); // one huge fan-out should not pin its map
        }
        self.targets = targets;
        let local;
        let message = if from_other_core
            && list.len() >= LOCAL_COPY_FANOUT
            && message.payload.len() <= LOCAL_COPY_MAX_BYTES
        {
            local = Arc::new(message.local_copy());
            &local
        } else {
            message
        };
        self.deliver_to(message, list, message.origin, now, effects);
    }

    /// Gives `message` to each target session (client, delivery QoS, retain flag,
    /// Subscription Identifiers). The message is stored once however many sessions take
    /// it; if any of them is persistent it is journaled once, naming every persistent
    /// session that took a reference, before anything is sent.
    /// `origin` goes into the MESSAGE record (plain subscriptions only: shared and
    /// retained deliveries are not deduplicated).
    pub(super) fn deliver_to(
        &mut self,
        message: &Arc<Message>,
        mut targets: Vec<(ByteString, QoS, bool, Vec<u32>)>,
        origin: Option<Origin>,
        now: Instant,
        effects: &mut Effects,
    ) {
        if targets.is_empty() || message.expires_at.is_some_and(|at| at <= now) {
            return;
        }
        let logged = match self.journal.room_for_messages() {
            None => None,
            Some(room) => match self.fit_in_reserve(message, &targets, room) {
                Some(publish) => Some(publish),
                None if message.qos == QoS::AtMostOnce => {
                    // QoS 0 goes on to whoever needs no record: the online sessions.
                    let before = targets.len();
                    let sessions = &self.sessions;
                    targets.retain(|(client, ..)| {
                        sessions
                            .get(client)
                            .is_some_and(|slot| slot.online || slot.sid.is_none())
                    });
                    self.counters.dropped += (before - targets.len()) as u64;
                    None
                }
                None => {
                    // A message this core cannot store, it does not take: the publisher
                    // is refused (`store_refused`), no session here holds it.
                    self.counters.store_refused += 1;
                    return;
                }
            },
        };
        let seq = self.messages.allocate();
        // The QoS 0 PUBLISH for every online target without Subscription Identifiers or
        // Retain As Published: the same packet for all of them, made once (see `outgoing`).
        let mut plain_qos0: Option<Rc<SharedPublish>> = None;
        let mut persistent = Vec::new();
        let (mut refs, mut memory_refs) = (0u32, 0u32);
        let mut settled = Vec::new();
        let Broker {
            sessions,
            messages,
            journal,
            clock,
            policy,
            counters,
            ..
        } = self;
        let lookup = Lookup {
            table: messages,
            journal: journal.as_ref(),
            clock: *clock,
        };
        for (client, qos, retain, ids) in targets {
            let Some(slot) = sessions.get_mut(&client) else {
                continue;
            };
            if slot.online && qos == QoS::AtMostOnce && !retain && ids.is_empty() {
                // Touches no session state: a QoS 0 delivery to an online session is sent
                // or lost, never held (MQTT 5.0 4.3.1).
                let shared = plain_qos0.get_or_insert_with(|| {
                    let entry = Queued::new(seq, qos, false);
                    Rc::new(SharedPublish::new(publish_of(
                        message,
                        entry,
                        None,
                        Vec::new(),
                        now,
                    )))
                });
                counters.messages_sent += 1;
                effects
                    .to_clients
                    .push((client, Outgoing::Shared(shared.clone())));
                continue;
            }
            let mut changes = Vec::new();
            let delivery = slot.session.deliver(
                Queued::new(seq, qos, retain),
                message,
                ids.clone(),
                slot.online,
                &policy.limits,
                &lookup,
                now,
                &mut changes,
            );
            let took = match delivery {
                Delivery::Sent(packet) => {
                    counters.messages_sent += 1;
                    effects.to_clients.push((client, packet.into()));
                    false
                }
                Delivery::InFlight(packet) => {
                    counters.messages_sent += 1;
                    effects.to_clients.push((client, packet.into()));
                    true
                }
                Delivery::Queued => true,
                Delivery::Skipped { refused } => {
                    counters.dropped += u64::from(refused);
                    false
                }
            };
            if took {
                refs += 1;
                match slot.sid {
                    Some(sid) => persistent.push(Target {
                        sid,
                        qos,
                        retain,
                        ids,
                    }),
                    None => memory_refs += 1,
                }
            }
            if !changes.is_empty() {
                settled.push((slot.sid, changes));
            }
        }
        if refs > 0 {
            let pos = if persistent.is_empty() {
                None
            } else {
                let publish =
                    logged.unwrap_or_else(|| journal::encode_publish(&publish_for_log(message)));
                let record = Record::Message(MessageRecord::new(
                    seq, origin, message, self.clock, persistent, publish,
                ));
                let pos = self.journal(&record);
                if pos.is_none() {
                    // Taken in memory but not stored: the publisher is refused all the
                    // same (at worst it publishes again and some sessions get it twice).
                    self.counters.store_refused += 1;
                }
                pos
            };
            self.messages.insert(
                seq,
                Entry {
                    pos,
                    refs,
                    size: message.payload.len() as u32,
                    message: (memory_refs > 0 || pos.is_none()).then(|| message.clone()),
                },
            );
        }
        for (sid, mut changes) in settled {
            self.settle(sid, &mut changes);
        }
    }
}

impl Broker {
    /// While the log is down to its reserve (disk full): the message as the MESSAGE record
    /// would carry it when that record, at its largest for these targets, fits in the
    /// `room` left for messages (or no target needs it stored: clean sessions, QoS 0 to
    /// online ones); `None` when it does not fit.
    fn fit_in_reserve(
        &self,
        message: &Message,
        targets: &[(ByteString, QoS, bool, Vec<u32>)],
        room: usize,
    ) -> Option<Bytes> {
        let publish = journal::encode_publish(&publish_for_log(message));
        let per_target: usize = targets
            .iter()
            .filter(|(client, qos, ..)| {
                self.sessions.get(client).is_some_and(|slot| {
                    slot.sid.is_some() && (*qos != QoS::AtMostOnce || !slot.online)
                })
            })
            .map(|(_, _, _, ids)| 8 + 1 + 1 + 4 * ids.len())
            .sum();
        if per_target == 0 {
            return Some(publish); // Nothing to store.
        }
        let bound =
            journal::MESSAGE_RECORD_OVERHEAD + message.publisher.len() + publish.len() + per_target;
        (bound <= room).then_some(publish)
    }
}

/// Payloads up to this size are copied out of the publisher's read buffer when a message
/// is made; larger ones stay slices of it (zero copy).
const OWN_COPY_MAX_BYTES: usize = 4 * 1024;

/// `topic` and `payload` in one allocation of their own when the payload is small.
/// The decoder hands them out as slices of the connection's 16 KiB read buffer, and a
/// slice keeps the whole buffer alive: a message held in memory (in flight to a slow
/// subscriber, queued for a clean session) would pin up to 16 KiB whatever its size, and
/// the reader would allocate a fresh buffer for its next read.
fn own_small(topic: ByteString, payload: Bytes) -> (ByteString, Bytes) {
    if payload.len() > OWN_COPY_MAX_BYTES {
        return (topic, payload);
    }
    copy_topic_and_payload(&topic, &payload)
}

/// Fan-out from another core at or above which a core delivers from a copy of its own.
/// Every delivery takes and later drops a reference to the topic and payload; when two
/// cores do that hundreds of times per message on the same shared `Bytes`, the reference
/// count's cache line bounces between them: in a QoS 0 fan-out to 1,000 subscribers over
/// two cores that drop was 22% of the broker's CPU. One copy per core per message (never
/// per subscriber) ends the bouncing; small fan-outs and large payloads keep sharing.
const LOCAL_COPY_FANOUT: usize = 16;
/// Payloads above this stay shared whatever the fan-out.
const LOCAL_COPY_MAX_BYTES: usize = 16 * 1024;

/// The PUBLISH a message is journaled as.
pub(super) fn publish_for_log(message: &Message) -> Publish {
    Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id: None,
        properties: message.properties.clone(),
        payload: message.payload.clone(),
    }
}

/// Whether `filter` matches `topic` (section 4.7): used for the few retained messages a
/// new subscription must see, where building a tree would cost more than it saves.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false; // [MQTT-4.7.2-1]
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Whether a retained message on `topic` is journaled. The broker's own `$SYS` figures
/// are republished every interval and stale after a restart: logging them would only churn
/// segments.
pub(crate) fn outlives_restart(topic: &str) -> bool {
    !is_sys_topic(topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Packet, PacketId, Properties, Subscribe, SubscriptionOptions};
    use crate::session::state::Message;

    fn subscribe(filter: &str, qos: QoS) -> Subscribe {
        Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::default(),
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
        }
    }

    /// Plain QoS 0 subscribers of a message share one packet; a subscriber whose
    /// subscription carries an identifier, or that gets QoS 1, is sent a packet of its own.
    #[test]
    fn plain_qos0_subscribers_share_one_publish_and_the_rest_get_their_own() {
        let now = Instant::now();
        let mut core = Broker::new(
            CoreId(0),
            1,
            super::super::SessionPolicy::default(),
            crate::broker::WallClock::now_from_system(),
        );
        let mut with_id = subscribe("a/#", QoS::AtMostOnce);
        with_id.properties = crate::protocol::PropertyValues {
            subscription_identifiers: vec![7],
            ..Default::default()
        }
        .into();
        let clients: [(&str, Subscribe); 4] = [
            ("plain-1", subscribe("a/#", QoS::AtMostOnce)),
            ("plain-2", subscribe("a/b", QoS::AtLeastOnce)),
            ("with-id", with_id),
            ("qos1", subscribe("a/+", QoS::AtLeastOnce)),
        ];
        for (client, subscribe) in clients {
            let client = ByteString::from(client);
            core.connect(&client, true, Duration::ZERO, 10, now)
                .expect("accepted");
            core.subscribe(&client, subscribe, now);
        }
        let publish = |qos| Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b".into(),
            packet_id: PacketId::new(1),
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        };
        let effects = core.publish(&"pub".into(), publish(QoS::AtMostOnce), now);
        let mut shared = Vec::new();
        for (client, outgoing) in &effects.to_clients {
            let Packet::Publish(p) = outgoing.packet() else {
                panic!("not a PUBLISH")
            };
            assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None));
            match outgoing {
                Outgoing::Shared(s) => shared.push((client.to_string(), Rc::as_ptr(s))),
                Outgoing::Packet(_) => {
                    assert_eq!(client, "with-id");
                    assert_eq!(p.properties.subscription_identifiers, [7]);
                }
            }
        }
        shared.sort();
        assert_eq!(effects.to_clients.len(), 4);
        assert_eq!(
            shared.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            ["plain-1", "plain-2", "qos1"]
        );
        assert!(shared.windows(2).all(|w| w[0].1 == w[1].1), "one packet");
        // At QoS 1 only the subscription granted QoS 0 takes the shared packet.
        let effects = core.publish(&"pub".into(), publish(QoS::AtLeastOnce), now);
        let shared: Vec<_> = effects
            .to_clients
            .iter()
            .filter(|(_, o)| matches!(o, Outgoing::Shared(_)))
            .map(|(c, _)| c.to_string())
            .collect();
        assert_eq!(shared, ["plain-1"]);
    }

    /// A wide fan-out arriving from another core is delivered from that core's own copy
    /// of the message; every subscriber still gets exactly the topic, payload and QoS
    /// published, and small payloads no longer slice the publisher's buffer.
    #[test]
    fn fan_out_from_another_core_delivers_the_same_message_from_a_local_copy() {
        let now = Instant::now();
        let mut core = Broker::new(
            CoreId(1),
            2,
            super::super::SessionPolicy::default(),
            crate::broker::WallClock::now_from_system(),
        );
        let n = LOCAL_COPY_FANOUT + 4;
        for i in 0..n {
            let client = ByteString::from(format!("sub-{i}"));
            core.connect(&client, true, Duration::ZERO, 10, now)
                .expect("accepted");
            core.subscribe(&client, subscribe("fleet/+/cmd", QoS::AtLeastOnce), now);
        }
        let buffer = Bytes::from_static(b"fleet/7/cmdPAYLOAD and the rest of a read");
        let (topic, payload) = own_small(
            ByteString::try_from(buffer.slice(0..11)).unwrap(),
            buffer.slice(11..18),
        );
        assert_eq!((&*topic, &payload[..]), ("fleet/7/cmd", &b"PAYLOAD"[..]));
        assert_ne!(
            payload.as_ptr(),
            buffer.slice(11..18).as_ptr(),
            "copied out"
        );
        let message = Arc::new(Message {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
            publisher: "pub".into(),
            expires_at: None,
            origin: None,
        });
        let effects = core.on_core_msg(CoreMsg::Publish(message.clone()), now);
        assert_eq!(effects.to_clients.len(), n);
        let mut clients = std::collections::HashSet::new();
        for (client, packet) in effects.to_clients {
            let Packet::Publish(p) = packet.into_packet() else {
                panic!("not a PUBLISH")
            };
            assert_eq!(&*p.topic, "fleet/7/cmd");
            assert_eq!(&p.payload[..], b"PAYLOAD");
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert!(p.packet_id.is_some());
            assert_ne!(p.payload.as_ptr(), message.payload.as_ptr(), "a local copy");
            clients.insert(client);
        }
        assert_eq!(clients.len(), n, "one copy per subscriber");
        // A narrow fan-out keeps sharing the message it was sent.
        let mut narrow = Broker::new(
            CoreId(1),
            2,
            super::super::SessionPolicy::default(),
            crate::broker::WallClock::now_from_system(),
        );
        let client = ByteString::from("one");
        narrow
            .connect(&client, true, Duration::ZERO, 10, now)
            .expect("accepted");
        narrow.subscribe(&client, subscribe("fleet/#", QoS::AtMostOnce), now);
        let effects = narrow.on_core_msg(CoreMsg::Publish(message.clone()), now);
        let [(_, delivery)] = &effects.to_clients[..] else {
            panic!("one delivery")
        };
        let Packet::Publish(p) = delivery.packet() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.payload.as_ptr(), message.payload.as_ptr());
    }

    #[test]
    fn single_filter_matching_follows_section_4_7() {
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(filter_matches("sport/#", "sport"));
        assert!(!filter_matches("sport/+", "sport/tennis/player1"));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        assert!(!filter_matches("#", "$SYS/uptime"));
        assert!(filter_matches("$SYS/#", "$SYS/uptime"));
        assert!(filter_matches("a/+", "a/"));
    }
}
