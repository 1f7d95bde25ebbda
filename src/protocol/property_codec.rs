//! The wire form of MQTT 5.0 properties (section 2.2.2) and the rules on them.
//!
//! A property list is a Variable Byte Integer length followed by identifier/value pairs.
//! Decoding rejects an identifier that is unknown or not allowed in the packet at hand
//! (Malformed Packet, 2.2.2.2), a property given twice where the specification allows it
//! once (Protocol Error; User Property may repeat, and Subscription Identifier may repeat in
//! a PUBLISH only), and values out of their range. Encoding runs the same rules first, so
//! what we send is what a strict receiver, us included, accepts. Properties are written in
//! identifier order; User Properties keep their order [MQTT-3.3.2-18].

use bytes::{BufMut, BytesMut};

use super::wire::{self, check_binary, check_str, field_len, put_field, Reader, MAX_VARIABLE_INT};
#[cfg(test)]
use super::PropertyValues;
use super::{DecodeError, EncodeError, Properties};

/// Where a property list sits; each allows its own set of properties (table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A set of property identifiers; every identifier is below 64.
const fn set(ids: &[u8]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < ids.len() {
        mask |= 1 << ids[i];
        i += 1;
    }
    mask
}

impl Context {
    /// The properties table 2-4 allows here.
    fn allowed(self) -> u64 {
        const REASON_AND_USER: u64 = set(&[REASON_STRING, USER_PROPERTY]);
        match self {
            Context::Connect => set(&[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ]),
            Context::Will => set(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                WILL_DELAY_INTERVAL,
                USER_PROPERTY,
            ]),
            Context::ConnAck => set(&[
                SESSION_EXPIRY_INTERVAL,
                ASSIGNED_CLIENT_IDENTIFIER,
                SERVER_KEEP_ALIVE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                REASON_STRING,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            Context::Publish => set(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ]),
            Context::Ack | Context::SubAck | Context::UnsubAck => REASON_AND_USER,
            Context::Subscribe => set(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
            Context::Unsubscribe => set(&[USER_PROPERTY]),
            Context::Disconnect => set(&[
                SESSION_EXPIRY_INTERVAL,
                SERVER_REFERENCE,
                REASON_STRING,
                USER_PROPERTY,
            ]),
            Context::Auth => set(&[
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REASON_STRING,
                USER_PROPERTY,
            ]),
        }
    }

    fn packet(self) -> &'static str {
        match self {
            Context::Connect => "CONNECT",
            Context::Will => "the Will Properties",
            Context::ConnAck => "CONNACK",
            Context::Publish => "PUBLISH",
            Context::Ack => "PUBACK, PUBREC, PUBREL or PUBCOMP",
            Context::Subscribe => "SUBSCRIBE",
            Context::SubAck => "SUBACK",
            Context::Unsubscribe => "UNSUBSCRIBE",
            Context::UnsubAck => "UNSUBACK",
            Context::Disconnect => "DISCONNECT",
            Context::Auth => "AUTH",
        }
    }
}

fn name(id: u8) -> &'static str {
    match id {
        PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        CONTENT_TYPE => "Content Type",
        RESPONSE_TOPIC => "Response Topic",
        CORRELATION_DATA => "Correlation Data",
        SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        ASSIGNED_CLIENT_IDENTIFIER => "Assigned Client Identifier",
        SERVER_KEEP_ALIVE => "Server Keep Alive",
        AUTHENTICATION_METHOD => "Authentication Method",
        AUTHENTICATION_DATA => "Authentication Data",
        REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        WILL_DELAY_INTERVAL => "Will Delay Interval",
        REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        RESPONSE_INFORMATION => "Response Information",
        SERVER_REFERENCE => "Server Reference",
        REASON_STRING => "Reason String",
        RECEIVE_MAXIMUM => "Receive Maximum",
        TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        TOPIC_ALIAS => "Topic Alias",
        MAXIMUM_QOS => "Maximum QoS",
        RETAIN_AVAILABLE => "Retain Available",
        USER_PROPERTY => "User Property",
        MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        WILDCARD_SUBSCRIPTION_AVAILABLE => "Wildcard Subscription Available",
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => "Subscription Identifier Available",
        SHARED_SUBSCRIPTION_AVAILABLE => "Shared Subscription Available",
        _ => UNKNOWN,
    }
}

const UNKNOWN: &str = "an unknown property";

/// Stores a property that may appear once.
fn once<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(name(id)));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a property list (length included) from the front of `r`.
pub(crate) fn decode(r: &mut Reader, context: Context) -> Result<Properties, DecodeError> {
    let len = r.var_int()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Malformed(
            "property length runs past the end of the packet",
        ));
    }
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        // Identifiers are Variable Byte Integers, but all known ones fit in one byte; a
        // continuation bit therefore means an unknown identifier, rejected just below.
        let id = r.u8()?;
        if id >= 64 || context.allowed() & (1 << id) == 0 {
            return Err(if name(id) == UNKNOWN {
                DecodeError::Malformed("[MQTT-2.2.2] unknown property identifier")
            } else {
                DecodeError::PropertyNotAllowed {
                    property: name(id),
                    packet: context.packet(),
                }
            });
        }
        match id {
            PAYLOAD_FORMAT_INDICATOR => once(&mut p.payload_format_indicator, r.u8()?, id)?,
            MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, r.u32()?, id)?,
            CONTENT_TYPE => once(&mut p.content_type, r.string()?, id)?,
            RESPONSE_TOPIC => once(&mut p.response_topic, r.string()?, id)?,
            CORRELATION_DATA => once(&mut p.correlation_data, r.binary()?, id)?,
            SUBSCRIPTION_IDENTIFIER => {
                let value = r.var_int()?;
                if context != Context::Publish && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty(name(id)));
                }
                p.subscription_identifiers.push(value);
            }
            SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, r.u32()?, id)?,
            ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, r.string()?, id)?,
            SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?, id)?,
            AUTHENTICATION_METHOD => once(&mut p.authentication_method, r.string()?, id)?,
            AUTHENTICATION_DATA => once(&mut p.authentication_data, r.binary()?, id)?,
            REQUEST_PROBLEM_INFORMATION => once(&mut p.request_problem_information, r.u8()?, id)?,
            WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, r.u32()?, id)?,
            REQUEST_RESPONSE_INFORMATION => once(&mut p.request_response_information, r.u8()?, id)?,
            RESPONSE_INFORMATION => once(&mut p.response_information, r.string()?, id)?,
            SERVER_REFERENCE => once(&mut p.server_reference, r.string()?, id)?,
            REASON_STRING => once(&mut p.reason_string, r.string()?, id)?,
            RECEIVE_MAXIMUM => once(&mut p.receive_maximum, r.u16()?, id)?,
            TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?, id)?,
            TOPIC_ALIAS => once(&mut p.topic_alias, r.u16()?, id)?,
            MAXIMUM_QOS => once(&mut p.maximum_qos, r.u8()?, id)?,
            RETAIN_AVAILABLE => once(&mut p.retain_available, r.u8()?, id)?,
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => once(&mut p.maximum_packet_size, r.u32()?, id)?,
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.wildcard_subscription_available, r.u8()?, id)?
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                once(&mut p.subscription_identifier_available, r.u8()?, id)?
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.shared_subscription_available, r.u8()?, id)?
            }
            _ => {
                return Err(DecodeError::Malformed(
                    "[MQTT-2.2.2] unknown property identifier",
                ))
            }
        }
    }
    check_values(&p)?;
    Ok(p)
}

/// The rules on property values, shared by decode and encode.
fn check_values(p: &Properties) -> Result<(), DecodeError> {
    fn flag(value: Option<u8>, rule: &'static str) -> Result<(), DecodeError> {
        match value {
            Some(v) if v > 1 => Err(DecodeError::Protocol(rule)),
            _ => Ok(()),
        }
    }
    flag(
        p.payload_format_indicator,
        "[MQTT-2.2.2.2] Payload Format Indicator other than 0 or 1",
    )?;
    flag(
        p.request_problem_information,
        "[MQTT-3.1.2.11.7] Request Problem Information other than 0 or 1",
    )?;
    flag(
        p.request_response_information,
        "[MQTT-3.1.2.11.6] Request Response Information other than 0 or 1",
    )?;
    flag(
        p.maximum_qos,
        "[MQTT-3.2.2.3.4] Maximum QoS other than 0 or 1",
    )?;
    flag(
        p.retain_available,
        "[MQTT-3.2.2.3.5] Retain Available other than 0 or 1",
    )?;
    flag(
        p.wildcard_subscription_available,
        "[MQTT-3.2.2.3.11] Wildcard Subscription Available other than 0 or 1",
    )?;
    flag(
        p.subscription_identifier_available,
        "[MQTT-3.2.2.3.12] Subscription Identifier Available other than 0 or 1",
    )?;
    flag(
        p.shared_subscription_available,
        "[MQTT-3.2.2.3.13] Shared Subscription Available other than 0 or 1",
    )?;
    if p.receive_maximum == Some(0) {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.2.11.3] Receive Maximum of 0",
        ));
    }
    if p.maximum_packet_size == Some(0) {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.2.11.4] Maximum Packet Size of 0",
        ));
    }
    if p.topic_alias == Some(0) {
        return Err(DecodeError::TopicAliasInvalid(
            "[MQTT-3.3.2-8] Topic Alias of 0",
        ));
    }
    if p.subscription_identifiers.contains(&0) {
        return Err(DecodeError::Protocol(
            "[MQTT-3.3.2.3.8] Subscription Identifier of 0",
        ));
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.2.11.10] Authentication Data without Authentication Method",
        ));
    }
    if let Some(topic) = &p.response_topic {
        if topic.is_empty() {
            return Err(DecodeError::TopicNameInvalid(
                "[MQTT-4.7.3-1] Response Topic is empty",
            ));
        }
        if has_wildcard(topic) {
            return Err(DecodeError::TopicNameInvalid(
                "[MQTT-3.3.2-14] Response Topic contains a wildcard",
            ));
        }
    }
    Ok(())
}

/// Whether a topic name carries `+` or `#`, which only topic filters may [MQTT-3.3.2-2].
pub(crate) fn has_wildcard(topic: &str) -> bool {
    topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// Which properties are present, as a set of identifiers.
fn present(p: &Properties) -> u64 {
    let mut mask = 0u64;
    let mut mark = |present: bool, id: u8| {
        if present {
            mask |= 1 << id;
        }
    };
    mark(
        p.payload_format_indicator.is_some(),
        PAYLOAD_FORMAT_INDICATOR,
    );
    mark(p.message_expiry_interval.is_some(), MESSAGE_EXPIRY_INTERVAL);
    mark(p.content_type.is_some(), CONTENT_TYPE);
    mark(p.response_topic.is_some(), RESPONSE_TOPIC);
    mark(p.correlation_data.is_some(), CORRELATION_DATA);
    mark(
        !p.subscription_identifiers.is_empty(),
        SUBSCRIPTION_IDENTIFIER,
    );
    mark(p.session_expiry_interval.is_some(), SESSION_EXPIRY_INTERVAL);
    mark(
        p.assigned_client_identifier.is_some(),
        ASSIGNED_CLIENT_IDENTIFIER,
    );
    mark(p.server_keep_alive.is_some(), SERVER_KEEP_ALIVE);
    mark(p.authentication_method.is_some(), AUTHENTICATION_METHOD);
    mark(p.authentication_data.is_some(), AUTHENTICATION_DATA);
    mark(
        p.request_problem_information.is_some(),
        REQUEST_PROBLEM_INFORMATION,
    );
    mark(p.will_delay_interval.is_some(), WILL_DELAY_INTERVAL);
    mark(
        p.request_response_information.is_some(),
        REQUEST_RESPONSE_INFORMATION,
    );
    mark(p.response_information.is_some(), RESPONSE_INFORMATION);
    mark(p.server_reference.is_some(), SERVER_REFERENCE);
    mark(p.reason_string.is_some(), REASON_STRING);
    mark(p.receive_maximum.is_some(), RECEIVE_MAXIMUM);
    mark(p.topic_alias_maximum.is_some(), TOPIC_ALIAS_MAXIMUM);
    mark(p.topic_alias.is_some(), TOPIC_ALIAS);
    mark(p.maximum_qos.is_some(), MAXIMUM_QOS);
    mark(p.retain_available.is_some(), RETAIN_AVAILABLE);
    mark(!p.user_properties.is_empty(), USER_PROPERTY);
    mark(p.maximum_packet_size.is_some(), MAXIMUM_PACKET_SIZE);
    mark(
        p.wildcard_subscription_available.is_some(),
        WILDCARD_SUBSCRIPTION_AVAILABLE,
    );
    mark(
        p.subscription_identifier_available.is_some(),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    );
    mark(
        p.shared_subscription_available.is_some(),
        SHARED_SUBSCRIPTION_AVAILABLE,
    );
    mask
}

/// Checks that `p` can be written in `context` and would be accepted there.
pub(crate) fn check(p: &Properties, context: Context) -> Result<(), EncodeError> {
    let extra = present(p) & !context.allowed();
    if extra != 0 {
        // trailing_zeros of a non-zero u64 is below 64.
        let id = extra.trailing_zeros() as u8;
        return Err(EncodeError::Invalid(DecodeError::PropertyNotAllowed {
            property: name(id),
            packet: context.packet(),
        }));
    }
    if context != Context::Publish && p.subscription_identifiers.len() > 1 {
        return Err(EncodeError::Invalid(DecodeError::DuplicateProperty(name(
            SUBSCRIPTION_IDENTIFIER,
        ))));
    }
    if p.subscription_identifiers
        .iter()
        .any(|&id| id > MAX_VARIABLE_INT)
    {
        return Err(EncodeError::OutOfRange(
            "Subscription Identifier above 268,435,455",
        ));
    }
    check_values(p)?;
    for s in [
        &p.content_type,
        &p.response_topic,
        &p.assigned_client_identifier,
        &p.authentication_method,
        &p.response_information,
        &p.server_reference,
        &p.reason_string,
    ]
    .into_iter()
    .flatten()
    {
        check_str(s)?;
    }
    for b in [&p.correlation_data, &p.authentication_data]
        .into_iter()
        .flatten()
    {
        check_binary(b)?;
    }
    for (key, value) in &p.user_properties {
        check_str(key)?;
        check_str(value)?;
    }
    Ok(())
}

/// The size of the properties themselves, without the length in front of them.
pub(crate) fn content_len(p: &Properties) -> usize {
    fn opt<T>(value: &Option<T>, size: impl Fn(&T) -> usize) -> usize {
        value.as_ref().map_or(0, |v| 1 + size(v))
    }
    let byte = |_: &u8| 1;
    let two = |_: &u16| 2;
    let four = |_: &u32| 4;
    let field = |s: &dyn AsRef<[u8]>| field_len(s.as_ref());
    opt(&p.payload_format_indicator, byte)
        + opt(&p.message_expiry_interval, four)
        + opt(&p.content_type, |s| field(s))
        + opt(&p.response_topic, |s| field(s))
        + opt(&p.correlation_data, |b| field(b))
        + p.subscription_identifiers
            .iter()
            .map(|&id| 1 + wire::var_int_len(id as usize))
            .sum::<usize>()
        + opt(&p.session_expiry_interval, four)
        + opt(&p.assigned_client_identifier, |s| field(s))
        + opt(&p.server_keep_alive, two)
        + opt(&p.authentication_method, |s| field(s))
        + opt(&p.authentication_data, |b| field(b))
        + opt(&p.request_problem_information, byte)
        + opt(&p.will_delay_interval, four)
        + opt(&p.request_response_information, byte)
        + opt(&p.response_information, |s| field(s))
        + opt(&p.server_reference, |s| field(s))
        + opt(&p.reason_string, |s| field(s))
        + opt(&p.receive_maximum, two)
        + opt(&p.topic_alias_maximum, two)
        + opt(&p.topic_alias, two)
        + opt(&p.maximum_qos, byte)
        + opt(&p.retain_available, byte)
        + p.user_properties
            .iter()
            .map(|(k, v)| 1 + field_len(k.as_bytes()) + field_len(v.as_bytes()))
            .sum::<usize>()
        + opt(&p.maximum_packet_size, four)
        + opt(&p.wildcard_subscription_available, byte)
        + opt(&p.subscription_identifier_available, byte)
        + opt(&p.shared_subscription_available, byte)
}

/// The size of a property list on the wire, its length included.
pub(crate) fn encoded_len(p: &Properties) -> usize {
    let len = content_len(p);
    wire::var_int_len(len) + len
}

/// Writes a property list, length first. [`check`] has passed.
pub(crate) fn write(p: &Properties, buf: &mut BytesMut) {
    wire::put_var_int(buf, content_len(p));
    let byte = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    };
    let two = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    };
    let four = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    };
    let field = |buf: &mut BytesMut, id: u8, v: Option<&[u8]>| {
        if let Some(v) = v {
            buf.put_u8(id);
            put_field(buf, v);
        }
    };
    byte(buf, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    four(buf, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    field(
        buf,
        CONTENT_TYPE,
        p.content_type.as_ref().map(|s| s.as_bytes().as_ref()),
    );
    field(
        buf,
        RESPONSE_TOPIC,
        p.response_topic.as_ref().map(|s| s.as_bytes().as_ref()),
    );
    field(buf, CORRELATION_DATA, p.correlation_data.as_deref());
    for &id in &p.subscription_identifiers {
        buf.put_u8(SUBSCRIPTION_IDENTIFIER);
        wire::put_var_int(buf, id as usize);
    }
    four(buf, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    field(
        buf,
        ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier
            .as_ref()
            .map(|s| s.as_bytes().as_ref()),
    );
    two(buf, SERVER_KEEP_ALIVE, p.server_keep_alive);
    field(
        buf,
        AUTHENTICATION_METHOD,
        p.authentication_method
            .as_ref()
            .map(|s| s.as_bytes().as_ref()),
    );
    field(buf, AUTHENTICATION_DATA, p.authentication_data.as_deref());
    byte(
        buf,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    four(buf, WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(
        buf,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    field(
        buf,
        RESPONSE_INFORMATION,
        p.response_information
            .as_ref()
            .map(|s| s.as_bytes().as_ref()),
    );
    field(
        buf,
        SERVER_REFERENCE,
        p.server_reference.as_ref().map(|s| s.as_bytes().as_ref()),
    );
    field(
        buf,
        REASON_STRING,
        p.reason_string.as_ref().map(|s| s.as_bytes().as_ref()),
    );
    two(buf, RECEIVE_MAXIMUM, p.receive_maximum);
    two(buf, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(buf, TOPIC_ALIAS, p.topic_alias);
    byte(buf, MAXIMUM_QOS, p.maximum_qos);
    byte(buf, RETAIN_AVAILABLE, p.retain_available);
    for (key, value) in &p.user_properties {
        buf.put_u8(USER_PROPERTY);
        put_field(buf, key.as_bytes());
        put_field(buf, value.as_bytes());
    }
    four(buf, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        buf,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        buf,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(
        buf,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
}

/// `p` without the properties `context` does not allow, so that property tests can draw
/// one list and use it anywhere.
#[cfg(test)]
pub(crate) fn restrict(p: Properties, context: Context) -> Properties {
    let allowed = context.allowed();
    let keep = |id: u8| allowed & (1 << id) != 0;
    let p = p.into_values();
    let mut p = PropertyValues {
        payload_format_indicator: p
            .payload_format_indicator
            .filter(|_| keep(PAYLOAD_FORMAT_INDICATOR)),
        message_expiry_interval: p
            .message_expiry_interval
            .filter(|_| keep(MESSAGE_EXPIRY_INTERVAL)),
        content_type: p.content_type.filter(|_| keep(CONTENT_TYPE)),
        response_topic: p.response_topic.filter(|_| keep(RESPONSE_TOPIC)),
        correlation_data: p.correlation_data.filter(|_| keep(CORRELATION_DATA)),
        subscription_identifiers: if keep(SUBSCRIPTION_IDENTIFIER) {
            p.subscription_identifiers
        } else {
            Vec::new()
        },
        session_expiry_interval: p
            .session_expiry_interval
            .filter(|_| keep(SESSION_EXPIRY_INTERVAL)),
        assigned_client_identifier: p
            .assigned_client_identifier
            .filter(|_| keep(ASSIGNED_CLIENT_IDENTIFIER)),
        server_keep_alive: p.server_keep_alive.filter(|_| keep(SERVER_KEEP_ALIVE)),
        authentication_method: p
            .authentication_method
            .filter(|_| keep(AUTHENTICATION_METHOD)),
        authentication_data: p.authentication_data.filter(|_| keep(AUTHENTICATION_DATA)),
        request_problem_information: p
            .request_problem_information
            .filter(|_| keep(REQUEST_PROBLEM_INFORMATION)),
        will_delay_interval: p.will_delay_interval.filter(|_| keep(WILL_DELAY_INTERVAL)),
        request_response_information: p
            .request_response_information
            .filter(|_| keep(REQUEST_RESPONSE_INFORMATION)),
        response_information: p
            .response_information
            .filter(|_| keep(RESPONSE_INFORMATION)),
        server_reference: p.server_reference.filter(|_| keep(SERVER_REFERENCE)),
        reason_string: p.reason_string.filter(|_| keep(REASON_STRING)),
        receive_maximum: p.receive_maximum.filter(|_| keep(RECEIVE_MAXIMUM)),
        topic_alias_maximum: p.topic_alias_maximum.filter(|_| keep(TOPIC_ALIAS_MAXIMUM)),
        topic_alias: p.topic_alias.filter(|_| keep(TOPIC_ALIAS)),
        maximum_qos: p.maximum_qos.filter(|_| keep(MAXIMUM_QOS)),
        retain_available: p.retain_available.filter(|_| keep(RETAIN_AVAILABLE)),
        user_properties: if keep(USER_PROPERTY) {
            p.user_properties
        } else {
            Vec::new()
        },
        maximum_packet_size: p.maximum_packet_size.filter(|_| keep(MAXIMUM_PACKET_SIZE)),
        wildcard_subscription_available: p
            .wildcard_subscription_available
            .filter(|_| keep(WILDCARD_SUBSCRIPTION_AVAILABLE)),
        subscription_identifier_available: p
            .subscription_identifier_available
            .filter(|_| keep(SUBSCRIPTION_IDENTIFIER_AVAILABLE)),
        shared_subscription_available: p
            .shared_subscription_available
            .filter(|_| keep(SHARED_SUBSCRIPTION_AVAILABLE)),
    };
    if context != Context::Publish {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p.into()
}

#[cfg(test)]
mod tests;
