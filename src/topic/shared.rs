//! Parsing `$share/{ShareName}/{filter}` (MQTT 5.0 section 4.8.2).
//!
//! Every filter of a SUBSCRIBE or UNSUBSCRIBE goes through [`ParsedFilter::parse`] once, so
//! that the rest of the broker never looks for the `$share/` prefix again. The parts are
//! slices of the input `ByteString`, not copies.

use super::validate::{validate_topic_filter, TopicFilter};
use super::{TopicError, TopicKind, MAX_TOPIC_LEN};
use bytestring::ByteString;
use std::fmt;

/// What a Topic Filter starts with to name a shared subscription [MQTT-4.8.2-1].
pub const SHARE_PREFIX: &str = "$share/";

/// The ShareName of a shared subscription: at least one character, no `/`, `+` or `#`
/// [MQTT-4.8.2-1] [MQTT-4.8.2-2]. Sessions subscribing with the same ShareName and filter
/// form one group, and each matching message goes to one member of it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareName(ByteString);

impl ShareName {
    /// Validates `name` as a ShareName and wraps it without copying.
    pub fn new(name: impl Into<ByteString>) -> Result<Self, TopicError> {
        let name = name.into();
        validate_share_name(&name)?;
        Ok(ShareName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ShareName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ShareName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for ShareName {
    type Error = TopicError;
    fn try_from(name: &str) -> Result<Self, TopicError> {
        ShareName::new(ByteString::from(name))
    }
}

fn validate_share_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::ShareNameEmpty);
    }
    for &b in name.as_bytes() {
        match b {
            b'/' | b'+' | b'#' => return Err(TopicError::ShareNameWildcard(char::from(b))),
            0 => return Err(TopicError::NullCharacter(TopicKind::Filter)),
            _ => {}
        }
    }
    Ok(())
}

/// A shared subscription's filter split into its group and the filter its members match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFilter {
    pub group: ShareName,
    pub filter: TopicFilter,
}

impl fmt::Display for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHARE_PREFIX}{}/{}", self.group, self.filter)
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE Topic Filter, told apart into plain and shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParsedFilter {
    /// A non-shared subscription: each subscribing session gets its own copy (4.8.1).
    Plain(TopicFilter),
    /// `$share/{ShareName}/{filter}`: one member of the group gets each message (4.8.2).
    Shared(SharedFilter),
}

impl ParsedFilter {
    /// Parses a filter as received. A filter starting with `$share/` is a shared
    /// subscription and must be complete: `$share/`, `$share/g` and `$share/g/` are
    /// invalid. `$share` alone, or `$shared/x`, are ordinary filters.
    ///
    /// Version gating (3.1.1 has no shared subscriptions; a 5.0 server may refuse them
    /// with 0x9E) is the caller's: this only applies the syntax.
    pub fn parse(raw: impl Into<ByteString>) -> Result<Self, TopicError> {
        let raw = raw.into();
        let Some(rest) = raw.strip_prefix(SHARE_PREFIX) else {
            return TopicFilter::new(raw).map(ParsedFilter::Plain);
        };
        // The whole string's length is checked first so that the error names the real size.
        if raw.len() > MAX_TOPIC_LEN {
            let len = raw.len();
            return Err(TopicError::TooLong {
                kind: TopicKind::Filter,
                len,
            });
        }
        let Some((group, filter)) = rest.split_once('/') else {
            // `$share/` or `$share/group`: either the name or the filter is missing.
            validate_share_name(rest)?;
            return Err(TopicError::SharedFilterMissing);
        };
        validate_share_name(group)?;
        if filter.is_empty() {
            return Err(TopicError::SharedFilterMissing);
        }
        validate_topic_filter(filter)?;
        let group = ShareName(raw.slice_ref(group));
        let filter = TopicFilter::new(raw.slice_ref(filter))?;
        Ok(ParsedFilter::Shared(SharedFilter { group, filter }))
    }

    /// The filter that topic matching uses: the plain filter, or the shared one's part
    /// after `$share/{ShareName}/`.
    pub fn topic_filter(&self) -> &TopicFilter {
        match self {
            ParsedFilter::Plain(filter) => filter,
            ParsedFilter::Shared(shared) => &shared.filter,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, ParsedFilter::Shared(_))
    }
}

impl TryFrom<&str> for ParsedFilter {
    type Error = TopicError;
    fn try_from(raw: &str) -> Result<Self, TopicError> {
        ParsedFilter::parse(ByteString::from(raw))
    }
}

impl fmt::Display for ParsedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsedFilter::Plain(filter) => fmt::Display::fmt(filter, f),
            ParsedFilter::Shared(shared) => fmt::Display::fmt(shared, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(group: &str, filter: &str) -> ParsedFilter {
        ParsedFilter::Shared(SharedFilter {
            group: ShareName::try_from(group).unwrap(),
            filter: TopicFilter::try_from(filter).unwrap(),
        })
    }

    #[test]
    fn plain_filters_stay_plain() {
        for raw in [
            "sport/#",
            "$share",
            "$sharex/g/f",
            "$SYS/#",
            "share/g/f",
            "+/g/f",
        ] {
            let parsed = ParsedFilter::try_from(raw).unwrap();
            assert_eq!(
                parsed,
                ParsedFilter::Plain(TopicFilter::try_from(raw).unwrap())
            );
            assert!(!parsed.is_shared());
        }
    }

    #[test]
    fn mqtt_4_8_2_valid_shared_filters() {
        for (raw, group, filter) in [
            (
                "$share/consumer1/sport/tennis/+",
                "consumer1",
                "sport/tennis/+",
            ),
            ("$share/consumer1//finance", "consumer1", "/finance"),
            ("$share/g/#", "g", "#"),
            ("$share/g/+", "g", "+"),
            ("$share/g//", "g", "/"),
            ("$share/$g/$SYS/#", "$g", "$SYS/#"),
            ("$share/g/$share/h/x", "g", "$share/h/x"),
        ] {
            let parsed = ParsedFilter::try_from(raw).unwrap();
            assert_eq!(parsed, shared(group, filter), "{raw:?}");
            assert_eq!(parsed.topic_filter().as_str(), filter);
            assert_eq!(parsed.to_string(), raw);
        }
    }

    #[test]
    fn mqtt_4_8_2_1_share_name_is_at_least_one_character() {
        assert_eq!(
            ParsedFilter::try_from("$share/"),
            Err(TopicError::ShareNameEmpty)
        );
        assert_eq!(
            ParsedFilter::try_from("$share//x"),
            Err(TopicError::ShareNameEmpty)
        );
    }

    #[test]
    fn mqtt_4_8_2_2_share_name_has_no_wildcards() {
        for (raw, c) in [
            ("$share/g+/x", '+'),
            ("$share/+/x", '+'),
            ("$share/#/x", '#'),
        ] {
            assert_eq!(
                ParsedFilter::try_from(raw),
                Err(TopicError::ShareNameWildcard(c))
            );
        }
        assert_eq!(
            ShareName::try_from("a/b"),
            Err(TopicError::ShareNameWildcard('/'))
        );
        assert_eq!(
            ParsedFilter::try_from("$share/#"),
            Err(TopicError::ShareNameWildcard('#'))
        );
    }

    #[test]
    fn mqtt_4_8_2_2_share_name_is_followed_by_a_filter() {
        for raw in ["$share/group", "$share/group/"] {
            assert_eq!(
                ParsedFilter::try_from(raw),
                Err(TopicError::SharedFilterMissing)
            );
        }
    }

    #[test]
    fn the_filter_of_a_shared_subscription_follows_section_4_7() {
        let got = ParsedFilter::try_from("$share/g/a#");
        assert_eq!(got, Err(TopicError::MultiLevelWildcardMisplaced));
        let got = ParsedFilter::try_from("$share/g/a+/b");
        assert_eq!(got, Err(TopicError::SingleLevelWildcardMisplaced));
        let got = ParsedFilter::try_from("$share/g/a\0");
        assert_eq!(got, Err(TopicError::NullCharacter(TopicKind::Filter)));
        let long = format!("$share/g/{}", "a".repeat(MAX_TOPIC_LEN));
        assert!(matches!(
            ParsedFilter::try_from(&*long),
            Err(TopicError::TooLong { .. })
        ));
        assert!(ParsedFilter::try_from("").is_err());
    }

    #[test]
    fn parts_are_slices_of_the_input() {
        let raw = ByteString::from_static("$share/g/a/b");
        let ParsedFilter::Shared(parsed) = ParsedFilter::parse(raw.clone()).unwrap() else {
            panic!("not shared");
        };
        let start = raw.as_bytes().as_ptr() as usize;
        assert_eq!(
            parsed.filter.as_byte_string().as_bytes().as_ptr() as usize,
            start + 9
        );
    }
}
