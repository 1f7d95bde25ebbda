//! The syntax rules of section 4.7, and the checked newtypes built on them.
//!
//! A [`TopicName`] or [`TopicFilter`] can only be made by passing its validation, so code
//! that holds one (the tree, the router) never checks again. Both wrap a `ByteString`
//! as given: when that is a slice of a receive buffer, it keeps the buffer alive, so a
//! holder that stores one for long (a session's subscription list) may want to copy it.

use super::{TopicError, TopicKind, MAX_TOPIC_LEN};
use bytestring::ByteString;
use std::fmt;
use std::ops::Deref;

/// Checks the rules every Topic Name and Topic Filter share: at least one character
/// [MQTT-4.7.3-1], at most 65,535 bytes [MQTT-4.7.3-3]. U+0000 is checked by the callers'
/// own byte scan, so that each string is read once.
fn check_length(s: &str, kind: TopicKind) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty(kind));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { kind, len: s.len() });
    }
    Ok(())
}

/// Checks a Topic Name, as carried by PUBLISH or a Will: non-empty, at most 65,535 bytes,
/// no U+0000 and no wildcard. Empty levels (`a//b`, `/a`, `a/`) and a leading `$` are valid.
///
/// 5.0 lets a PUBLISH carry an empty Topic Name when a Topic Alias stands for it; the
/// protocol layer resolves the alias before asking here.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_length(name, TopicKind::Name)?;
    for &b in name.as_bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter(TopicKind::Name)),
            b'+' => return Err(TopicError::WildcardInName('+')),
            b'#' => return Err(TopicError::WildcardInName('#')),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a Topic Filter, as carried by SUBSCRIBE or UNSUBSCRIBE (after any
/// `$share/{ShareName}/` prefix has been taken off): non-empty, at most 65,535 bytes, no
/// U+0000, `#` alone in the last level, `+` alone in its level. Empty levels are valid.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_length(filter, TopicKind::Filter)?;
    let bytes = filter.as_bytes();
    // Scanning bytes rather than splitting on `/` keeps this one pass with no allocation;
    // multi-byte UTF-8 never contains these ASCII bytes, so byte positions are safe.
    let mut level_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(TopicError::NullCharacter(TopicKind::Filter)),
            b'/' => level_start = i + 1,
            b'+' if i != level_start || !matches!(bytes.get(i + 1), None | Some(b'/')) => {
                return Err(TopicError::SingleLevelWildcardMisplaced);
            }
            b'#' if i != level_start || i + 1 != bytes.len() => {
                return Err(TopicError::MultiLevelWildcardMisplaced);
            }
            _ => {}
        }
    }
    Ok(())
}

macro_rules! checked_topic {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ByteString);

        impl $name {
            /// Validates `s` and wraps it without copying.
            pub fn new(s: impl Into<ByteString>) -> Result<Self, TopicError> {
                let s = s.into();
                $validate(&s)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn as_byte_string(&self) -> &ByteString {
                &self.0
            }

            pub fn into_inner(self) -> ByteString {
                self.0
            }

            /// Whether it starts with `$`: such Topic Names are reserved for the server
            /// (`$SYS/...`) and escape filters that start with a wildcard [MQTT-4.7.2-1].
            pub fn is_dollar(&self) -> bool {
                self.0.starts_with('$')
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                $validate(s)?;
                Ok($name(ByteString::from(s)))
            }
        }

        impl TryFrom<String> for $name {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                $name::new(s)
            }
        }

        impl TryFrom<ByteString> for $name {
            type Error = TopicError;
            fn try_from(s: ByteString) -> Result<Self, TopicError> {
                $name::new(s)
            }
        }

        impl From<$name> for ByteString {
            fn from(t: $name) -> ByteString {
                t.0
            }
        }
    };
}

checked_topic!(
    /// A Topic Name that passed [`validate_topic_name`]: what a PUBLISH is addressed to.
    TopicName,
    validate_topic_name
);

checked_topic!(
    /// A Topic Filter that passed [`validate_topic_filter`]: what a subscription matches.
    ///
    /// This is the 4.7 syntax only. A filter starting with `$share/` is still a valid
    /// `TopicFilter` (it would match the literal name); SUBSCRIBE handling goes through
    /// [`ParsedFilter::parse`](super::ParsedFilter::parse), which recognises shared ones.
    TopicFilter,
    validate_topic_filter
);

impl TopicFilter {
    /// Whether the filter contains `+` or `#` (5.0 servers may refuse those with 0xA2
    /// Wildcard Subscriptions not supported).
    pub fn has_wildcard(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReasonCode;

    #[test]
    fn valid_topic_names() {
        for name in [
            "a",
            "/",
            "//",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/finance",
            "finance/",
            "a//b",
            "$SYS/broker/load",
            "$",
            "topic name with spaces",
            "ünïcødé/主题",
            "\u{FEFF}bom",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
            assert!(TopicName::try_from(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn mqtt_4_7_3_1_names_and_filters_are_at_least_one_character() {
        assert_eq!(
            validate_topic_name(""),
            Err(TopicError::Empty(TopicKind::Name))
        );
        assert_eq!(
            validate_topic_filter(""),
            Err(TopicError::Empty(TopicKind::Filter))
        );
    }

    #[test]
    fn mqtt_4_7_3_2_names_and_filters_exclude_the_null_character() {
        for s in ["\0", "a\0b", "a/\0", "\0/#"] {
            assert_eq!(
                validate_topic_filter(s),
                Err(TopicError::NullCharacter(TopicKind::Filter))
            );
        }
        for s in ["\0", "a\0b", "a/\0"] {
            assert_eq!(
                validate_topic_name(s),
                Err(TopicError::NullCharacter(TopicKind::Name))
            );
        }
    }

    #[test]
    fn mqtt_4_7_3_3_names_and_filters_are_at_most_65535_bytes() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        let kind = TopicKind::Name;
        assert_eq!(
            validate_topic_name(&over),
            Err(TopicError::TooLong { kind, len: 65_536 })
        );
        let kind = TopicKind::Filter;
        assert_eq!(
            validate_topic_filter(&over),
            Err(TopicError::TooLong { kind, len: 65_536 })
        );
        // Bytes, not characters: three-byte characters reach the limit three times sooner.
        assert!(validate_topic_name(&"主".repeat(21_845)).is_ok());
        assert!(validate_topic_name(&"主".repeat(21_846)).is_err());
    }

    #[test]
    fn mqtt_4_7_0_1_topic_names_have_no_wildcards() {
        for (name, wildcard) in [
            ("#", '#'),
            ("+", '+'),
            ("a/#", '#'),
            ("a/+/b", '+'),
            ("a+", '+'),
            ("a#", '#'),
        ] {
            assert_eq!(
                validate_topic_name(name),
                Err(TopicError::WildcardInName(wildcard))
            );
        }
    }

    #[test]
    fn valid_topic_filters() {
        for filter in [
            "#",
            "+",
            "/",
            "/#",
            "+/#",
            "sport",
            "sport/#",
            "sport/tennis/#",
            "sport/tennis/player1/#",
            "sport/+/player1",
            "sport/tennis/+",
            "+/tennis/#",
            "+/+",
            "/+",
            "+/",
            "a//b",
            "//",
            "$SYS/#",
            "$SYS/monitor/+",
            "$share/g/x",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn mqtt_4_7_1_1_multi_level_wildcard_is_alone_in_the_last_level() {
        for filter in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "##",
            "a/#b",
            "#a",
            "/#/",
        ] {
            let got = validate_topic_filter(filter);
            assert_eq!(
                got,
                Err(TopicError::MultiLevelWildcardMisplaced),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn mqtt_4_7_1_2_single_level_wildcard_occupies_a_whole_level() {
        for filter in [
            "sport+",
            "+sport",
            "sport/+tennis",
            "a/b+/c",
            "++",
            "+#",
            "/++",
        ] {
            let got = validate_topic_filter(filter);
            assert_eq!(
                got,
                Err(TopicError::SingleLevelWildcardMisplaced),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn errors_tell_names_from_filters() {
        let name = validate_topic_name("a/+").unwrap_err();
        assert_eq!(name.kind(), TopicKind::Name);
        assert_eq!(name.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
        let filter = validate_topic_filter("a/b#").unwrap_err();
        assert_eq!(filter.kind(), TopicKind::Filter);
        assert_eq!(filter.reason_code(), ReasonCode::TOPIC_FILTER_INVALID);
        assert!(filter.to_string().starts_with("[MQTT-4.7.1-1]"), "{filter}");
    }

    #[test]
    fn newtypes_wrap_without_copying_and_expose_the_str() {
        let raw = ByteString::from_static("sport/tennis/+");
        let filter = TopicFilter::new(raw.clone()).unwrap();
        assert_eq!(filter.as_str(), "sport/tennis/+");
        assert_eq!(
            filter.as_byte_string().as_bytes().as_ptr(),
            raw.as_bytes().as_ptr()
        );
        assert!(filter.has_wildcard());
        assert!(!TopicFilter::try_from("a/b").unwrap().has_wildcard());
        assert!(TopicName::try_from("$SYS/x").unwrap().is_dollar());
        assert!(TopicName::new(String::from("a/#")).is_err());
    }
}
