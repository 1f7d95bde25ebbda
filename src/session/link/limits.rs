//! The limits one connection is held to on its own: PUBLISH packets a second
//! (`max_publish_rate`) and the levels of a topic name or filter (`max_topic_levels`).
//!
//! - **Publish rate**: a token bucket per connection (one second's worth of burst),
//!   started full at the first PUBLISH. A PUBLISH over it is dropped: at QoS 0 silently (as
//!   EMQX does), at QoS 1/2 a v5 client is told 0x97 Quota exceeded in its PUBACK/PUBREC,
//!   with a Reason String saying it was the rate (0x96 Message rate too high is a
//!   DISCONNECT code only: PUBACK and PUBREC may not carry it, MQTT 5.0 table 3-4; EMQX
//!   answers 0x97 too); a 3.1.1 client, which has no negative acknowledgement (acking would
//!   say the message was taken), is disconnected. The message is never routed.
//! - **Topic levels**: a deeper topic name ends the connection (v5 DISCONNECT 0x90 Topic
//!   Name invalid; 3.1.1 closes); a deeper filter gets its own failure code in SUBACK (v5
//!   0x8F Topic Filter invalid, 3.1.1 0x80) while the SUBSCRIBE's other filters go on. A
//!   shared subscription's levels are those of its filter, after `$share/<group>/`.
//!
//! The session state machine calls this; counting a hit is the engine's
//! ([`Engine::count_limit`](super::Engine::count_limit)).

use std::time::Instant;

use crate::auth::TokenBucket;
use crate::protocol::{Packet, PacketId, ReasonCode, SubAck, Subscribe};
use crate::topic::SHARE_PREFIX;

/// A limit a client ran into, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A PUBLISH over `max_publish_rate`, dropped.
    PublishRate,
    /// A PUBLISH whose topic has more than `max_topic_levels` levels.
    TopicLevels,
    /// A SUBSCRIBE filter with more than `max_topic_levels` levels.
    FilterLevels,
}

/// One connection's limits and its publish-rate bucket.
#[derive(Debug)]
pub struct LinkLimits {
    /// PUBLISH packets a second; 0: no limit.
    max_publish_rate: u32,
    max_topic_levels: usize,
    bucket: Option<TokenBucket>,
}

impl LinkLimits {
    pub fn new(max_publish_rate: u32, max_topic_levels: usize) -> LinkLimits {
        LinkLimits {
            max_publish_rate,
            max_topic_levels: max_topic_levels.max(1),
            bucket: None,
        }
    }

    /// No limit at all (what a link has until its driver sets the configured ones).
    pub fn unlimited() -> LinkLimits {
        LinkLimits::new(0, usize::MAX)
    }

    /// Whether a PUBLISH read at `now` is within the rate.
    pub fn admit_publish(&mut self, now: Instant) -> bool {
        if self.max_publish_rate == 0 {
            return true;
        }
        let rate = f64::from(self.max_publish_rate);
        self.bucket
            .get_or_insert_with(|| TokenBucket::new(rate, rate, now))
            .take(now)
    }

    /// Whether a topic name has no more levels than allowed.
    pub fn topic_fits(&self, topic: &str) -> bool {
        levels(topic) <= self.max_topic_levels
    }

    /// Takes the filters that are too deep out of `subscribe`, returning their positions
    /// (in the SUBSCRIBE's order) for [`LinkLimits::merge_refused`].
    pub fn take_deep_filters(&self, subscribe: &mut Subscribe) -> Vec<usize> {
        let mut deep = Vec::new();
        let mut index = 0;
        subscribe.filters.retain(|(filter, _)| {
            let fits = filter_levels(filter) <= self.max_topic_levels;
            if !fits {
                deep.push(index);
            }
            index += 1;
            fits
        });
        deep
    }
}

/// The SUBACK for a SUBSCRIBE all of whose filters were too deep.
pub fn all_refused(packet_id: PacketId, count: usize) -> Packet {
    Packet::SubAck(SubAck {
        packet_id,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::TOPIC_FILTER_INVALID; count],
    })
}

/// Puts 0x8F Topic Filter invalid back into `sub_ack` at the positions `deep` names, so
/// that its codes follow the SUBSCRIBE's filters again [MQTT-3.9.3-1].
pub fn merge_refused(sub_ack: &mut SubAck, deep: &[usize]) {
    for &at in deep {
        let at = at.min(sub_ack.reason_codes.len());
        sub_ack
            .reason_codes
            .insert(at, ReasonCode::TOPIC_FILTER_INVALID);
    }
}

fn levels(topic: &str) -> usize {
    topic.split('/').count()
}

/// A filter's levels; a shared subscription's are those after `$share/<group>/`.
fn filter_levels(filter: &str) -> usize {
    match filter
        .strip_prefix(SHARE_PREFIX)
        .and_then(|rest| rest.split_once('/'))
    {
        Some((_group, filter)) => levels(filter),
        None => levels(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use std::time::Duration;

    #[test]
    fn the_publish_rate_is_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limits = LinkLimits::new(5, 128);
        assert_eq!((0..10).filter(|_| limits.admit_publish(t0)).count(), 5);
        assert!(limits.admit_publish(t0 + Duration::from_millis(200)));
        assert!(!limits.admit_publish(t0 + Duration::from_millis(250)));
        let mut unlimited = LinkLimits::new(0, 128);
        assert!((0..10_000).all(|_| unlimited.admit_publish(t0)));
    }

    #[test]
    fn levels_count_slashes_and_shares_count_after_the_group() {
        let limits = LinkLimits::new(0, 3);
        assert!(limits.topic_fits("a/b/c"));
        assert!(limits.topic_fits("/b/"), "three levels, two of them empty");
        assert!(!limits.topic_fits("a/b/c/d"));
        assert_eq!(filter_levels("$share/g/a/b/c"), 3);
        assert_eq!(
            filter_levels("$share/g"),
            2,
            "no filter: counted as written"
        );
    }

    #[test]
    fn deep_filters_are_taken_out_and_put_back_in_order() {
        let limits = LinkLimits::new(0, 2);
        let id = PacketId::new(1).unwrap();
        let mut subscribe = Subscribe::one(id, "a/b/c", QoS::AtMostOnce);
        subscribe
            .filters
            .push(("ok".into(), subscribe.filters[0].1));
        subscribe
            .filters
            .push(("$share/g/x/y/z".into(), subscribe.filters[0].1));
        subscribe
            .filters
            .push(("$share/g/x/y".into(), subscribe.filters[0].1));
        let deep = limits.take_deep_filters(&mut subscribe);
        assert_eq!(deep, vec![0, 2]);
        assert_eq!(subscribe.filters.len(), 2);
        let mut sub_ack = SubAck {
            packet_id: id,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::SUCCESS, ReasonCode(1)],
        };
        merge_refused(&mut sub_ack, &deep);
        assert_eq!(
            sub_ack.reason_codes,
            vec![
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::SUCCESS,
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode(1)
            ]
        );
    }
}
