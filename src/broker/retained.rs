//! Retained messages on one core: its replica of every retained message of the server
//! (each change is broadcast to every core as `CoreMsg::Retain`, so the replicas converge),
//! kept in allocations of their own and journaled unless they are `$SYS` figures.

use std::sync::Arc;

use bytestring::ByteString;

use super::journal::{self, Record};
use super::publish::publish_for_log;
use super::sys::is_sys_topic;
use super::Broker;
use crate::session::Message;

impl Broker {
    pub(super) fn set_retained(&mut self, message: &Arc<Message>) {
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
