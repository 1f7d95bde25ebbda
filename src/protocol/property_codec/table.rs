//! Table 2-4 of MQTT 5.0 (section 2.2.2.2) as one declaration: each property's identifier,
//! field, wire type, name, the packets that allow it, those where it may repeat, and the rule
//! on its value.
//!
//! `properties!` turns the rows into [`PROPERTIES`] (the table as data, for the allowed sets
//! and the tests) and into the per-field code the codec needs: reading one property into
//! [`PropertyValues`], which are present, writing them in identifier order, their size, and
//! the checks on encode. Nothing about a single property is written anywhere else; the one
//! rule that joins two properties (Authentication Data needs an Authentication Method) lives
//! in the codec.
//!
//! Invariant: rows are in identifier order and every identifier is below 64 (the allowed sets
//! are `u64` masks), both checked at compile time; a property that may repeat anywhere has a
//! `Vec` field and a rule fits its wire type (the tests check these).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{has_wildcard, Context};
use crate::protocol::wire::{
    self, check_binary, check_str, field_len, put_field, Reader, MAX_VARIABLE_INT,
};
use crate::protocol::{DecodeError, EncodeError, PropertyValues};

/// The data types of section 1.5 that property values are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireType {
    Byte,
    TwoByteInteger,
    FourByteInteger,
    VariableByteInteger,
    Utf8String,
    BinaryData,
    Utf8StringPair,
}

/// What a property's value must satisfy beyond its wire type; breaking it is the error given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Any,
    /// A Byte that is 0 or 1; otherwise a Protocol Error citing the rule.
    ZeroOrOne(&'static str),
    /// An integer that is not 0.
    NonZero(&'static DecodeError),
    /// A topic name: not empty [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-14].
    TopicName,
}

/// One row of table 2-4.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PropertyDef {
    pub id: u8,
    pub name: &'static str,
    // Read by the tests that hold the table against the specification.
    #[cfg_attr(not(test), allow(dead_code))]
    pub wire: WireType,
    /// The [`Context`]s that allow it, as a set of `1 << context`.
    pub allowed: u16,
    /// The contexts where it may appear more than once; elsewhere a second one is a Protocol
    /// Error.
    pub repeats: u16,
    pub rule: Rule,
}

/// A set of contexts.
const fn contexts(list: &[Context]) -> u16 {
    let mut set = 0;
    let mut i = 0;
    while i < list.len() {
        set |= list[i].bit();
        i += 1;
    }
    set
}

macro_rules! properties {
    ($(
        $id:literal $field:ident: $wire:ident, $name:literal,
            in [$($ctx:ident),*] $(, repeats in [$($rep:ident),*])? $(, rule $rule:expr)?;
    )*) => {
        /// Table 2-4, in identifier order.
        pub(crate) const PROPERTIES: &[PropertyDef] = &[$(
            PropertyDef {
                id: $id,
                name: $name,
                wire: WireType::$wire,
                allowed: contexts(&[$(Context::$ctx),*]),
                repeats: contexts(&[$($(Context::$rep),*)?]),
                rule: rule(&[$({ use Rule::*; $rule })?]),
            },
        )*];

        /// Reads the value of property `id`, allowed in `context`, into `p`. A second value
        /// is refused where the property may not repeat, after the value itself was read (so
        /// a value cut short is Malformed first).
        #[inline]
        pub(crate) fn read(
            id: u8,
            r: &mut Reader,
            p: &mut PropertyValues,
            context: Context,
        ) -> Result<(), DecodeError> {
            match id {
                $($id => {
                    let value = <$wire as Wire>::read(r)?;
                    const REPEATS: u16 = PROPERTIES_BY_ID[$id].repeats;
                    if !may_repeat(REPEATS, context) && Slot::is_set(&p.$field) {
                        return Err(DecodeError::DuplicateProperty($name));
                    }
                    Slot::store(&mut p.$field, value);
                })*
                _ => return Err(UNKNOWN_ID),
            }
            Ok(())
        }

        /// Which properties are present, as a set of identifiers.
        pub(crate) fn present(p: &PropertyValues) -> u64 {
            0 $(| if Slot::is_set(&p.$field) { 1 << $id } else { 0 })*
        }

        /// The first property given more than once where `context` allows it once.
        pub(crate) fn repeated(p: &PropertyValues, context: Context) -> Option<&'static str> {
            $({
                const REPEATS: u16 = PROPERTIES_BY_ID[$id].repeats;
                if Slot::count(&p.$field) > 1 && !may_repeat(REPEATS, context) {
                    return Some($name);
                }
            })*
            None
        }

        /// Checks that every value can be written and obeys its rule, in identifier order.
        pub(crate) fn check_values(p: &PropertyValues) -> Result<(), EncodeError> {
            $(for v in p.$field.iter() {
                const RULE: Rule = PROPERTIES_BY_ID[$id].rule;
                <$wire as Wire>::check(v)?;
                <$wire as Wire>::obey(&RULE, v)?;
            })*
            Ok(())
        }

        /// Checks the value rules only (what decode needs: the wire form was just read).
        pub(crate) fn check_rules(p: &PropertyValues) -> Result<(), DecodeError> {
            $(for v in p.$field.iter() {
                const RULE: Rule = PROPERTIES_BY_ID[$id].rule;
                <$wire as Wire>::obey(&RULE, v)?;
            })*
            Ok(())
        }

        /// The size of the properties, without the length in front of them.
        pub(crate) fn content_len(p: &PropertyValues) -> usize {
            0 $(+ p.$field.iter().map(|v| 1 + <$wire as Wire>::len(v)).sum::<usize>())*
        }

        /// Writes every property present, in identifier order, repeated ones in their order.
        pub(crate) fn write(p: &PropertyValues, buf: &mut BytesMut) {
            $(for v in p.$field.iter() {
                buf.put_u8($id);
                <$wire as Wire>::put(v, buf);
            })*
        }

        /// `p` without the properties outside `allowed` (a set of identifiers).
        #[cfg(test)]
        pub(crate) fn retain(p: &mut PropertyValues, allowed: u64) {
            $(if allowed & (1 << $id) == 0 {
                p.$field = Default::default();
            })*
        }

        /// Whether each row's field holds a list, by identifier.
        #[cfg(test)]
        pub(crate) fn field_is_list(id: u8) -> Option<bool> {
            fn is_list<S: Slot>(_: &S) -> bool {
                S::LIST
            }
            let p = PropertyValues::default();
            match id {
                $($id => Some(is_list(&p.$field)),)*
                _ => None,
            }
        }
    };
}

properties! {
    0x01 payload_format_indicator: Byte, "Payload Format Indicator", in [Publish, Will],
        rule ZeroOrOne("[MQTT-2.2.2.2] Payload Format Indicator other than 0 or 1");
    0x02 message_expiry_interval: FourByteInteger, "Message Expiry Interval", in [Publish, Will];
    0x03 content_type: Utf8String, "Content Type", in [Publish, Will];
    0x08 response_topic: Utf8String, "Response Topic", in [Publish, Will], rule TopicName;
    0x09 correlation_data: BinaryData, "Correlation Data", in [Publish, Will];
    // Several only in a PUBLISH, where the server gives one per matching subscription.
    0x0B subscription_identifiers: VariableByteInteger, "Subscription Identifier",
        in [Publish, Subscribe], repeats in [Publish],
        rule NonZero(&DecodeError::Protocol("[MQTT-3.3.2.3.8] Subscription Identifier of 0"));
    0x11 session_expiry_interval: FourByteInteger, "Session Expiry Interval",
        in [Connect, ConnAck, Disconnect];
    0x12 assigned_client_identifier: Utf8String, "Assigned Client Identifier", in [ConnAck];
    0x13 server_keep_alive: TwoByteInteger, "Server Keep Alive", in [ConnAck];
    0x15 authentication_method: Utf8String, "Authentication Method",
        in [Connect, ConnAck, Auth];
    0x16 authentication_data: BinaryData, "Authentication Data", in [Connect, ConnAck, Auth];
    0x17 request_problem_information: Byte, "Request Problem Information", in [Connect],
        rule ZeroOrOne("[MQTT-3.1.2.11.7] Request Problem Information other than 0 or 1");
    0x18 will_delay_interval: FourByteInteger, "Will Delay Interval", in [Will];
    0x19 request_response_information: Byte, "Request Response Information", in [Connect],
        rule ZeroOrOne("[MQTT-3.1.2.11.6] Request Response Information other than 0 or 1");
    0x1A response_information: Utf8String, "Response Information", in [ConnAck];
    0x1C server_reference: Utf8String, "Server Reference", in [ConnAck, Disconnect];
    0x1F reason_string: Utf8String, "Reason String",
        in [ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth];
    0x21 receive_maximum: TwoByteInteger, "Receive Maximum", in [Connect, ConnAck],
        rule NonZero(&DecodeError::Protocol("[MQTT-3.1.2.11.3] Receive Maximum of 0"));
    0x22 topic_alias_maximum: TwoByteInteger, "Topic Alias Maximum", in [Connect, ConnAck];
    0x23 topic_alias: TwoByteInteger, "Topic Alias", in [Publish],
        rule NonZero(&DecodeError::TopicAliasInvalid("[MQTT-3.3.2-8] Topic Alias of 0"));
    0x24 maximum_qos: Byte, "Maximum QoS", in [ConnAck],
        rule ZeroOrOne("[MQTT-3.2.2.3.4] Maximum QoS other than 0 or 1");
    0x25 retain_available: Byte, "Retain Available", in [ConnAck],
        rule ZeroOrOne("[MQTT-3.2.2.3.5] Retain Available other than 0 or 1");
    // Any number, order kept [MQTT-3.3.2-18].
    0x26 user_properties: Utf8StringPair, "User Property",
        in [Connect, Will, ConnAck, Publish, Ack, Subscribe, SubAck, Unsubscribe, UnsubAck,
            Disconnect, Auth],
        repeats in [Connect, Will, ConnAck, Publish, Ack, Subscribe, SubAck, Unsubscribe,
            UnsubAck, Disconnect, Auth];
    0x27 maximum_packet_size: FourByteInteger, "Maximum Packet Size", in [Connect, ConnAck],
        rule NonZero(&DecodeError::Protocol("[MQTT-3.1.2.11.4] Maximum Packet Size of 0"));
    0x28 wildcard_subscription_available: Byte, "Wildcard Subscription Available",
        in [ConnAck],
        rule ZeroOrOne("[MQTT-3.2.2.3.11] Wildcard Subscription Available other than 0 or 1");
    0x29 subscription_identifier_available: Byte, "Subscription Identifier Available",
        in [ConnAck],
        rule ZeroOrOne("[MQTT-3.2.2.3.12] Subscription Identifier Available other than 0 or 1");
    0x2A shared_subscription_available: Byte, "Shared Subscription Available", in [ConnAck],
        rule ZeroOrOne("[MQTT-3.2.2.3.13] Shared Subscription Available other than 0 or 1");
}

pub(crate) const UNKNOWN: &str = "an unknown property";

/// The property's name, for errors; [`UNKNOWN`] for an identifier the table lacks.
pub(crate) fn name(id: u8) -> &'static str {
    PROPERTIES_BY_ID
        .get(usize::from(id))
        .map_or(UNKNOWN, |def| def.name)
}

const UNKNOWN_ID: DecodeError = DecodeError::Malformed("[MQTT-2.2.2] unknown property identifier");

/// Whether a property with the `repeats` set may appear more than once in `context`.
#[inline]
fn may_repeat(repeats: u16, context: Context) -> bool {
    repeats & context.bit() != 0
}

/// A row's rule column: its one rule, or none.
const fn rule(given: &[Rule]) -> Rule {
    match given {
        [rule] => *rule,
        _ => Rule::Any,
    }
}

/// The rows by identifier, for the lookups the macro emits (all at compile time). Building
/// it also enforces the table's invariant: identifiers below 64, in increasing order.
const PROPERTIES_BY_ID: [PropertyDef; 64] = {
    let mut by_id = [PropertyDef {
        id: 0,
        name: UNKNOWN,
        wire: WireType::Byte,
        allowed: 0,
        repeats: 0,
        rule: Rule::Any,
    }; 64];
    let mut i = 0;
    while i < PROPERTIES.len() {
        assert!(PROPERTIES[i].id < 64);
        assert!(i == 0 || PROPERTIES[i - 1].id < PROPERTIES[i].id);
        by_id[PROPERTIES[i].id as usize] = PROPERTIES[i];
        i += 1;
    }
    by_id
};

/// The properties each context allows, as sets of identifiers, indexed by context.
pub(crate) const ALLOWED: [u64; Context::COUNT] = {
    let mut sets = [0u64; Context::COUNT];
    let mut i = 0;
    while i < PROPERTIES.len() {
        let mut c = 0;
        while c < Context::COUNT {
            if PROPERTIES[i].allowed & (1 << c) != 0 {
                sets[c] |= 1 << PROPERTIES[i].id;
            }
            c += 1;
        }
        i += 1;
    }
    sets
};

/// How a field holds its property: `Option` for one value, `Vec` for several.
pub(crate) trait Slot {
    type Item;
    #[cfg(test)]
    const LIST: bool;
    fn is_set(&self) -> bool;
    fn count(&self) -> usize;
    fn store(&mut self, value: Self::Item);
}

impl<T> Slot for Option<T> {
    type Item = T;
    #[cfg(test)]
    const LIST: bool = false;
    #[inline]
    fn is_set(&self) -> bool {
        self.is_some()
    }
    fn count(&self) -> usize {
        usize::from(self.is_some())
    }
    #[inline]
    fn store(&mut self, value: T) {
        *self = Some(value);
    }
}

impl<T> Slot for Vec<T> {
    type Item = T;
    #[cfg(test)]
    const LIST: bool = true;
    #[inline]
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn store(&mut self, value: T) {
        self.push(value);
    }
}

/// One wire type: how its values are read, sized, checked and written. The unit types
/// below carry the [`WireType`] names so that a row names both at once.
pub(crate) trait Wire {
    type Value;
    fn read(r: &mut Reader) -> Result<Self::Value, DecodeError>;
    /// The size of the value, without the identifier in front of it.
    fn len(value: &Self::Value) -> usize;
    fn put(value: &Self::Value, buf: &mut BytesMut);
    /// Whether the value can be written at all.
    fn check(_: &Self::Value) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Whether the value obeys `rule`. Only integers can break `ZeroOrOne`/`NonZero` and
    /// only strings `TopicName`; a row that pairs a rule with another type is a table
    /// error the tests catch.
    fn obey(_: &Rule, _: &Self::Value) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// The integer rules.
#[inline]
fn obey_integer(rule: &Rule, value: u32) -> Result<(), DecodeError> {
    match rule {
        Rule::ZeroOrOne(error) if value > 1 => Err(DecodeError::Protocol(error)),
        Rule::NonZero(error) if value == 0 => Err((*error).clone()),
        _ => Ok(()),
    }
}

macro_rules! integer {
    ($wire:ident, $value:ty, $read:ident, $put:ident, $len:literal) => {
        pub(crate) struct $wire;
        impl Wire for $wire {
            type Value = $value;
            #[inline]
            fn read(r: &mut Reader) -> Result<$value, DecodeError> {
                r.$read()
            }
            fn len(_: &$value) -> usize {
                $len
            }
            fn put(value: &$value, buf: &mut BytesMut) {
                buf.$put(*value);
            }
            #[inline]
            fn obey(rule: &Rule, value: &$value) -> Result<(), DecodeError> {
                obey_integer(rule, u32::from(*value))
            }
        }
    };
}

integer!(Byte, u8, u8, put_u8, 1);
integer!(TwoByteInteger, u16, u16, put_u16, 2);
integer!(FourByteInteger, u32, u32, put_u32, 4);

pub(crate) struct VariableByteInteger;
impl Wire for VariableByteInteger {
    type Value = u32;
    #[inline]
    fn read(r: &mut Reader) -> Result<u32, DecodeError> {
        r.var_int()
    }
    fn len(value: &u32) -> usize {
        wire::var_int_len(*value as usize)
    }
    fn put(value: &u32, buf: &mut BytesMut) {
        wire::put_var_int(buf, *value as usize);
    }
    fn check(value: &u32) -> Result<(), EncodeError> {
        if *value > MAX_VARIABLE_INT {
            return Err(EncodeError::OutOfRange(
                "Variable Byte Integer property above 268,435,455",
            ));
        }
        Ok(())
    }
    #[inline]
    fn obey(rule: &Rule, value: &u32) -> Result<(), DecodeError> {
        obey_integer(rule, *value)
    }
}

pub(crate) struct Utf8String;
impl Wire for Utf8String {
    type Value = ByteString;
    #[inline]
    fn read(r: &mut Reader) -> Result<ByteString, DecodeError> {
        r.string()
    }
    fn len(value: &ByteString) -> usize {
        field_len(value.as_bytes())
    }
    fn put(value: &ByteString, buf: &mut BytesMut) {
        put_field(buf, value.as_bytes());
    }
    fn check(value: &ByteString) -> Result<(), EncodeError> {
        check_str(value)
    }
    #[inline]
    fn obey(rule: &Rule, value: &ByteString) -> Result<(), DecodeError> {
        if *rule != Rule::TopicName {
            return Ok(());
        }
        if value.is_empty() {
            return Err(DecodeError::TopicNameInvalid(
                "[MQTT-4.7.3-1] Response Topic is empty",
            ));
        }
        if has_wildcard(value) {
            return Err(DecodeError::TopicNameInvalid(
                "[MQTT-3.3.2-14] Response Topic contains a wildcard",
            ));
        }
        Ok(())
    }
}

pub(crate) struct BinaryData;
impl Wire for BinaryData {
    type Value = Bytes;
    #[inline]
    fn read(r: &mut Reader) -> Result<Bytes, DecodeError> {
        r.binary()
    }
    fn len(value: &Bytes) -> usize {
        field_len(value)
    }
    fn put(value: &Bytes, buf: &mut BytesMut) {
        put_field(buf, value);
    }
    fn check(value: &Bytes) -> Result<(), EncodeError> {
        check_binary(value)
    }
}

pub(crate) struct Utf8StringPair;
impl Wire for Utf8StringPair {
    type Value = (ByteString, ByteString);
    #[inline]
    fn read(r: &mut Reader) -> Result<(ByteString, ByteString), DecodeError> {
        let key = r.string()?;
        let value = r.string()?;
        Ok((key, value))
    }
    fn len((key, value): &(ByteString, ByteString)) -> usize {
        field_len(key.as_bytes()) + field_len(value.as_bytes())
    }
    fn put((key, value): &(ByteString, ByteString), buf: &mut BytesMut) {
        put_field(buf, key.as_bytes());
        put_field(buf, value.as_bytes());
    }
    fn check((key, value): &(ByteString, ByteString)) -> Result<(), EncodeError> {
        check_str(key)?;
        check_str(value)
    }
}

#[cfg(test)]
mod tests;
