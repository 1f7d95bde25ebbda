//! Retained messages on one core: [`Retained`], its replica of every retained message of
//! the server, and how a retained PUBLISH changes it.
//!
//! Invariants: each change is broadcast to every core as `CoreMsg::Retain` and applied in
//! the order each channel delivers it, so the replicas converge; a topic holds at most one
//! message, never an empty one [MQTT-3.3.1-10]; a kept message is an allocation of its own,
//! never a slice of a publisher's read buffer; every change is journaled except those of
//! the broker's own `$SYS` figures ([`outlives_restart`]).

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use super::journal::{self, Record};
use super::publish::publish_for_log;
use super::sys::is_sys_topic;
use super::Broker;
use crate::hash::FastMap;
use crate::session::Message;

/// One core's replica of the retained messages: topic -> message.
#[derive(Default)]
pub(crate) struct Retained {
    by_topic: FastMap<ByteString, Arc<Message>>,
}

impl Retained {
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.by_topic.get(topic)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.by_topic.values()
    }

    /// The retained messages whose topics `filter` matches, by topic.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let mut matching: Vec<Arc<Message>> = self
            .by_topic
            .values()
            .filter(|m| filter_matches(filter, &m.topic))
            .cloned()
            .collect();
        matching.sort_by(|a, b| a.topic.cmp(&b.topic));
        matching
    }

    /// Clears `topic`; returns whether it held a message.
    fn clear(&mut self, topic: &str) -> bool {
        self.by_topic.remove(topic).is_some()
    }

    /// Keeps `message` for its topic, in one allocation of its own: decoded from
    /// `publish`, the message as its RETAINED record carries it.
    fn keep(&mut self, message: &Arc<Message>, publish: &Bytes) {
        let kept = match journal::decode_publish(journal::kind::RETAINED, publish) {
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
        self.by_topic.insert(kept.topic.clone(), kept);
    }
}

impl FromIterator<(ByteString, Arc<Message>)> for Retained {
    fn from_iter<I: IntoIterator<Item = (ByteString, Arc<Message>)>>(iter: I) -> Retained {
        Retained {
            by_topic: iter.into_iter().collect(),
        }
    }
}

impl Broker {
    /// A retained message from a PUBLISH of this core or another: sets, or with an empty
    /// payload clears, its topic's retained message.
    pub(super) fn set_retained(&mut self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            // [MQTT-3.3.1-10] an empty retained message clears the topic.
            if self.retained.clear(&message.topic) {
                self.journal(&Record::RetainedClear {
                    topic: message.topic.clone(),
                });
            }
        } else {
            // Retained messages live long: keep them in one allocation of their own, not
            // as slices of the publisher's read buffer.
            let publish = journal::encode_publish(&publish_for_log(message));
            self.retained.keep(message, &publish);
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
