//! Topic Names, Topic Filters and the per-core subscription tree (MQTT 3.1.1 and 5.0, 4.7 and 4.8).
//!
//! Three things live here, all pure: no I/O, no clock, no locks, no interior mutability.
//!
//! * **Validation** ([`validate_topic_name`], [`validate_topic_filter`], and the checked
//!   newtypes [`TopicName`] and [`TopicFilter`]). Every rule of section 4.7 is enforced and
//!   every [`TopicError`] cites the rule it breaks; [`TopicError::reason_code`] says whether
//!   the broker answers 0x8F Topic Filter Invalid or 0x90 Topic Name Invalid.
//! * **Shared subscriptions** ([`ParsedFilter`], [`SharedFilter`], [`ShareName`]): a
//!   SUBSCRIBE or UNSUBSCRIBE filter is parsed once into either a plain filter or
//!   `$share/{ShareName}/{filter}` (5.0 section 4.8.2).
//! * **Matching** ([`SubscriptionTree`], [`SharedSubscriptions`]): a level trie that one core
//!   owns. A publish visits every subscription whose filter matches its Topic Name; the
//!   shared variant picks one member per share group, round-robin.
//!
//! Invariants: a Topic Name never matches a filter that starts with a wildcard when the name
//! starts with `$` [MQTT-4.7.2-1]; names and filters are compared byte for byte, never
//! normalised [MQTT-4.7.3-4]; matching allocates nothing unless a walk holds more than
//! [`WALK_INLINE`] pending branches at once.
//!
//! Rule numbers are those of MQTT 5.0. Where 3.1.1 numbers a rule differently the message
//! gives both: 5.0 inserted [MQTT-4.7.0-1] (no wildcards in a Topic Name), which 3.1.1 calls
//! [MQTT-4.7.1-1], so 3.1.1's [MQTT-4.7.1-2] and [MQTT-4.7.1-3] are 5.0's -1 and -2.

mod group;
mod node;
mod shared;
mod subs;
mod tree;
mod validate;

#[cfg(test)]
mod tree_tests;

pub use group::{GroupPlacement, ShareGroup, SharedSubscriptions};
pub use shared::{ParsedFilter, ShareName, SharedFilter, SHARE_PREFIX};
pub use tree::{Inserted, Removed, SubscriptionTree, WALK_INLINE};
pub use validate::{validate_topic_filter, validate_topic_name, TopicFilter, TopicName};

use crate::protocol::ReasonCode;
use std::fmt;

/// Where the broker publishes its own figures; clients may subscribe there, not publish.
pub const SYS_PREFIX: &str = "$SYS";

/// Whether `topic` is the broker's own: `$SYS` or anything starting with it (Mosquitto
/// refuses client writes to the same set).
pub fn is_sys_topic(topic: &str) -> bool {
    topic.starts_with(SYS_PREFIX)
}

/// The most bytes a Topic Name or Topic Filter may encode to [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Whether a [`TopicError`] is about a Topic Name (PUBLISH, Will) or a Topic Filter
/// (SUBSCRIBE, UNSUBSCRIBE): the two are answered with different reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Name,
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicKind::Name => "topic name",
            TopicKind::Filter => "topic filter",
        })
    }
}

/// Why a Topic Name or Topic Filter is invalid. Each message cites the rule it enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("[MQTT-4.7.3-1] a {0} must be at least one character long")]
    Empty(TopicKind),
    #[error("[MQTT-4.7.3-3] a {kind} of {len} bytes is longer than 65,535 bytes")]
    TooLong { kind: TopicKind, len: usize },
    #[error("[MQTT-4.7.3-2] a {0} must not contain the null character U+0000")]
    NullCharacter(TopicKind),
    #[error(
        "[MQTT-4.7.0-1] a topic name must not contain the wildcard `{0}` (3.1.1: [MQTT-4.7.1-1])"
    )]
    WildcardInName(char),
    #[error(
        "[MQTT-4.7.1-1] the multi-level wildcard `#` must be alone in the last level of a \
         topic filter (3.1.1: [MQTT-4.7.1-2])"
    )]
    MultiLevelWildcardMisplaced,
    #[error(
        "[MQTT-4.7.1-2] the single-level wildcard `+` must occupy a whole level of a topic \
         filter (3.1.1: [MQTT-4.7.1-3])"
    )]
    SingleLevelWildcardMisplaced,
    #[error("[MQTT-4.8.2-1] a shared subscription needs a ShareName of at least one character")]
    ShareNameEmpty,
    #[error("[MQTT-4.8.2-2] a ShareName must not contain `{0}`")]
    ShareNameWildcard(char),
    #[error("[MQTT-4.8.2-2] a ShareName must be followed by `/` and a topic filter")]
    SharedFilterMissing,
}

impl TopicError {
    /// Whether the offending string was a Topic Name or a Topic Filter.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty(kind) | TopicError::NullCharacter(kind) => *kind,
            TopicError::TooLong { kind, .. } => *kind,
            TopicError::WildcardInName(_) => TopicKind::Name,
            TopicError::MultiLevelWildcardMisplaced
            | TopicError::SingleLevelWildcardMisplaced
            | TopicError::ShareNameEmpty
            | TopicError::ShareNameWildcard(_)
            | TopicError::SharedFilterMissing => TopicKind::Filter,
        }
    }

    /// The 5.0 reason code to answer with: 0x90 in a PUBACK/PUBREC/DISCONNECT for a bad
    /// Topic Name, 0x8F in a SUBACK/UNSUBACK for a bad Topic Filter.
    pub fn reason_code(&self) -> ReasonCode {
        match self.kind() {
            TopicKind::Name => ReasonCode::TOPIC_NAME_INVALID,
            TopicKind::Filter => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }
}
