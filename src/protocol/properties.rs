//! MQTT 5.0 properties (section 2.2.2.2).
//!
//! One struct, [`PropertyValues`], holds every property any packet can carry; the codec
//! checks on decode that a packet carries only the properties the specification allows for
//! it, and at most once each unless the specification says otherwise (User Property, and
//! Subscription Identifier in a server-to-client PUBLISH).
//!
//! Packets hold them as [`Properties`]: one pointer, null while there are none. All of a
//! 3.1.1 client's packets and most of a 5.0 client's carry none, and a packet moves several
//! times between the socket and the writer (decode, engine, outbox); with the 400 bytes of
//! values inline every packet was 472 bytes and those moves were the broker's largest
//! single cost under load (`memmove` 15% of a QoS 1 profile). Reading a property through
//! an empty `Properties` reads the shared empty set; writing one allocates the set, so code
//! on a hot path that only clears uses [`Properties::values_mut`], which never allocates.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use bytestring::ByteString;

/// A packet's properties: [`PropertyValues`] behind one pointer, none while empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(Option<Box<PropertyValues>>);

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(|v| *v == EMPTY)
    }

    /// The values, by value.
    pub fn into_values(self) -> PropertyValues {
        self.0.map(|b| *b).unwrap_or_default()
    }

    /// The values, if any were ever set; unlike `DerefMut`, never allocates.
    pub fn values_mut(&mut self) -> Option<&mut PropertyValues> {
        self.0.as_deref_mut()
    }
}

impl Deref for Properties {
    type Target = PropertyValues;

    #[inline]
    fn deref(&self) -> &PropertyValues {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Properties {
    #[inline]
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Properties {
        if values == EMPTY {
            Properties(None)
        } else {
            Properties(Some(Box::new(values)))
        }
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// What an empty [`Properties`] reads as.
static EMPTY: PropertyValues = PropertyValues {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

/// Every property of section 2.2.2.2, each `None` (or empty) when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyValues {
    /// 0x01, byte (0 or 1).
    pub payload_format_indicator: Option<u8>,
    /// 0x02, four-byte integer, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, UTF-8 string.
    pub content_type: Option<ByteString>,
    /// 0x08, UTF-8 string (a topic name: no wildcards).
    pub response_topic: Option<ByteString>,
    /// 0x09, binary data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, variable byte integer 1..=268,435,455. Several only in a PUBLISH sent by the server.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, four-byte integer, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, UTF-8 string.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13, two-byte integer, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15, UTF-8 string.
    pub authentication_method: Option<ByteString>,
    /// 0x16, binary data.
    pub authentication_data: Option<Bytes>,
    /// 0x17, byte (0 or 1).
    pub request_problem_information: Option<u8>,
    /// 0x18, four-byte integer, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, byte (0 or 1).
    pub request_response_information: Option<u8>,
    /// 0x1A, UTF-8 string.
    pub response_information: Option<ByteString>,
    /// 0x1C, UTF-8 string.
    pub server_reference: Option<ByteString>,
    /// 0x1F, UTF-8 string.
    pub reason_string: Option<ByteString>,
    /// 0x21, two-byte integer, never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22, two-byte integer.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, two-byte integer, never 0.
    pub topic_alias: Option<u16>,
    /// 0x24, byte (0 or 1).
    pub maximum_qos: Option<u8>,
    /// 0x25, byte (0 or 1).
    pub retain_available: Option<u8>,
    /// 0x26, UTF-8 string pair; any number, order kept.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27, four-byte integer, never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, byte (0 or 1).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, byte (0 or 1).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, byte (0 or 1).
    pub shared_subscription_available: Option<u8>,
}
