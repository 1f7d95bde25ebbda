//! PUBLISH on one core and the messages other cores send it: a message is routed to the
//! cores that announced interest in a matching filter, delivered to this core's matching
//! sessions and share groups, and stored once however many sessions take it.
//!
//! Invariants: a message crosses to another core at most once per core, whatever the number
//! of its matching sessions; a message that any persistent session took is journaled (one
//! MESSAGE record naming every such session) before anything is sent; a message this core
//! cannot store it does not take, and the publisher is refused (`store_refused`).

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
use crate::protocol::{PacketId, Publish, QoS};
use crate::session::state::{copy_topic_and_payload, publish_of, Delivery, Origin, Queued};
use crate::session::Message;
use crate::topic::{SharedFilter, TopicName};

/// Which of this node's share groups a message is for.
#[derive(Clone, Copy)]
pub(super) enum Groups<'a> {
    /// Every matching group but these (picked on another node: published here).
    Except(&'a [SharedFilter]),
    /// Only these (another node picked this one for them).
    Only(&'a [SharedFilter]),
}

impl Groups<'_> {
    pub fn takes(&self, group: &SharedFilter) -> bool {
        match self {
            Groups::Except(away) => !away.contains(group),
            Groups::Only(named) => named.contains(group),
        }
    }
}

/// One session a message is delivered to, and how: what [`Broker::deliver_to`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recipient {
    pub client_id: ByteString,
    /// The QoS it is delivered at: the message's, capped by the subscription's.
    pub qos: QoS,
    /// The PUBLISH's RETAIN flag: the message's under Retain As Published, always set for
    /// a retained message sent on subscribing [MQTT-3.3.1-8], otherwise clear.
    pub retain: bool,
    /// The Subscription Identifiers of every matching subscription of the session.
    pub subscription_identifiers: Vec<u32>,
}

impl Broker {
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
        self.exactly_once.routing(routing);
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
        self.route(publisher, publish, origin, None, now)
    }

    /// Routes a message to this core's sessions and the cores with interest. `from_node`:
    /// `None` when it was published on this node, so it also goes to the nodes with
    /// interest (`nodes`) and, retained, replaces the retained message; for a message from
    /// another node, the share groups that node picked this one for (no other group here
    /// gets it).
    pub(super) fn route(
        &mut self,
        publisher: &ByteString,
        publish: Publish,
        origin: Option<Origin>,
        from_node: Option<&[SharedFilter]>,
        now: Instant,
    ) -> Effects {
        let local = from_node.is_none();
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
        if message.retain && local {
            self.set_retained(&message);
            self.broadcast(&mut effects, |_| CoreMsg::Retain(message.clone()));
            self.retained_to_nodes(&message, &mut effects);
        }
        let Ok(topic) = TopicName::new(message.topic.clone()) else {
            return effects;
        };
        let mut elsewhere = false;
        self.interest.cores(&topic, |core| {
            elsewhere = true;
            effects
                .to_cores
                .push((core, CoreMsg::Publish(message.clone())));
        });
        let mut away = Vec::new();
        if local {
            elsewhere |= self.route_to_nodes(&topic, &message, &mut away, &mut effects);
        }
        let here = self.deliver_local(&topic, &message, false, now, &mut effects);
        let groups = match from_node {
            None => Groups::Except(&away),
            Some(named) => Groups::Only(named),
        };
        let shared = self.route_shared(&topic, &message, groups, now, &mut effects);
        // The broker's own `$SYS` figures often have no reader: they are not drops.
        if !(elsewhere || here || shared || message.retain || publisher.is_empty()) {
            self.counters.no_subscribers += 1;
        }
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
            } => self.interest.announced(from, filter, present),
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
            CoreMsg::Stats { from, stats } => self.record_stats(from, *stats),
        }
        effects
    }

    /// Hands a message to every local session with a matching subscription: one copy per
    /// session, at the highest QoS of its matching subscriptions, carrying all of their
    /// Subscription Identifiers (MQTT 5.0 4.8.1 allows either this or one copy each).
    /// `from_other_core`: the message arrived over a channel (see [`LOCAL_COPY_FANOUT`]).
    /// Returns whether any local subscription matched.
    fn deliver_local(
        &mut self,
        topic: &TopicName,
        message: &Arc<Message>,
        from_other_core: bool,
        now: Instant,
        effects: &mut Effects,
    ) -> bool {
        if let Some(origin) = message.origin {
            if !self.exactly_once.admit(origin) {
                // Routed again by a recovery, and this core took it before the crash.
                self.counters.duplicates_skipped += 1;
                return true;
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
            .map(|(client_id, (subscription, ids))| Recipient {
                client_id,
                qos: message.qos.min(subscription.options.qos),
                retain: subscription.options.retain_as_published && message.retain,
                subscription_identifiers: ids,
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
        let matched = !list.is_empty();
        self.deliver_to(message, list, message.origin, now, effects);
        matched
    }

    /// Gives `message` to each [`Recipient`]. The message is stored once however many sessions take
    /// it; if any of them is persistent it is journaled once, naming every persistent
    /// session that took a reference, before anything is sent.
    /// `origin` goes into the MESSAGE record (plain subscriptions only: shared and
    /// retained deliveries are not deduplicated).
    pub(super) fn deliver_to(
        &mut self,
        message: &Arc<Message>,
        mut targets: Vec<Recipient>,
        origin: Option<Origin>,
        now: Instant,
        effects: &mut Effects,
    ) {
        self.keep_readers(&mut targets, &message.topic);
        if targets.is_empty() {
            return;
        }
        if message.expires_at.is_some_and(|at| at <= now) {
            self.counters.expired += targets.len() as u64;
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
                    targets.retain(|target| {
                        sessions
                            .get(&target.client_id)
                            .is_some_and(|slot| slot.online || slot.sid.is_none())
                    });
                    let lost = (before - targets.len()) as u64;
                    self.counters.dropped += lost;
                    self.counters.dropped_disk_full += lost;
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
        for Recipient {
            client_id: client,
            qos,
            retain,
            subscription_identifiers: ids,
        } in targets
        {
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
                    counters.dropped_queue_full += u64::from(refused);
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
        targets: &[Recipient],
        room: usize,
    ) -> Option<Bytes> {
        let publish = journal::encode_publish(&publish_for_log(message));
        let per_target: usize = targets
            .iter()
            .filter(|target| {
                self.sessions.get(&target.client_id).is_some_and(|slot| {
                    slot.sid.is_some() && (target.qos != QoS::AtMostOnce || !slot.online)
                })
            })
            .map(|target| 8 + 1 + 1 + 4 * target.subscription_identifiers.len())
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
pub(super) fn own_small(topic: ByteString, payload: Bytes) -> (ByteString, Bytes) {
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
pub(super) const LOCAL_COPY_FANOUT: usize = 16;
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
