//! SUBSCRIBE and UNSUBSCRIBE on one core: a session's subscriptions enter (and leave) this
//! core's subscription tree or its share groups, the other cores hear of every filter this
//! core gains or loses, and a new plain subscription is sent the retained messages it asks for.
//!
//! Invariants: a filter is announced to the other cores (`CoreMsg::Interest`) exactly when the
//! first local subscription to it is added and when the last one is removed; every change to a
//! persistent session's subscriptions is journaled.

use std::time::Instant;

use bytestring::ByteString;

use super::journal::Record;
use super::publish::Recipient;
use super::{Broker, CoreMsg, Effects};
use crate::ownership::CoreId;
use crate::protocol::{ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe};
use crate::session::Subscription;
use crate::topic::{ParsedFilter, TopicFilter};

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
            let readable = match &parsed {
                ParsedFilter::Plain(filter) => self.may_subscribe(client_id, filter.as_str()),
                ParsedFilter::Shared(shared) => {
                    self.may_subscribe(client_id, shared.filter.as_str())
                }
            };
            if !readable {
                // 3.1.1 says 0x80 Failure (the encoder's mapping of every refusal).
                reason_codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
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
                    effects.node_interest.push((raw.clone(), true));
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
        for message in self.retained.matching(filter) {
            // [MQTT-3.3.1-8] retain set on messages sent for a new subscription.
            let target = Recipient {
                client_id: client_id.clone(),
                qos: message.qos.min(subscription.options.qos),
                retain: true,
                subscription_identifiers: subscription.identifier.into_iter().collect(),
            };
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
            effects.node_interest.push((raw.clone(), false));
        }
    }

    pub(super) fn broadcast(&self, effects: &mut Effects, msg: impl Fn(CoreId) -> CoreMsg) {
        for core in (0..self.cores).map(CoreId).filter(|&c| c != self.id) {
            effects.to_cores.push((core, msg(self.id)));
        }
    }
}
