//! MQTT 5.0 properties (section 2.2.2.2).
//!
//! One struct holds every property any packet can carry; the codec checks on decode that a
//! packet carries only the properties the specification allows for it, and at most once
//! each unless the specification says otherwise (User Property, and Subscription Identifier
//! in a server-to-client PUBLISH).

use bytes::Bytes;
use bytestring::ByteString;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
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
