//! The wire form of MQTT 5.0 properties (section 2.2.2) and the rules on them.
//!
//! A property list is a Variable Byte Integer length followed by identifier/value pairs.
//! Decoding rejects an identifier that is unknown or not allowed in the packet at hand
//! (Malformed Packet, 2.2.2.2), a property given twice where the specification allows it
//! once (Protocol Error; User Property may repeat, and Subscription Identifier may repeat in
//! a PUBLISH only), and values out of their range. Encoding runs the same rules first, so
//! what we send is what a strict receiver, us included, accepts. Properties are written in
//! identifier order; User Properties keep their order [MQTT-3.3.2-18].
//!
//! Everything about a single property comes from the one table in `table` (table 2-4 of the
//! specification); this module runs the list-level steps around it.

use bytes::BytesMut;

use super::wire::{self, Reader};
#[cfg(test)]
use super::PropertyValues;
use super::{DecodeError, EncodeError, Properties};

mod table;

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

impl Context {
    /// How many contexts there are.
    const COUNT: usize = 11;

    /// This context in a set of contexts.
    const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The properties table 2-4 allows here, as a set of identifiers.
    #[inline]
    fn allowed(self) -> u64 {
        table::ALLOWED[self as usize]
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
            let name = table::name(id);
            return Err(if name == table::UNKNOWN {
                DecodeError::Malformed("[MQTT-2.2.2] unknown property identifier")
            } else {
                DecodeError::PropertyNotAllowed {
                    property: name,
                    packet: context.packet(),
                }
            });
        }
        table::read(id, &mut r, &mut p, context)?;
    }
    table::check_rules(&p)?;
    check_joint(&p)?;
    Ok(p)
}

/// The one rule that joins two properties, shared by decode and encode.
fn check_joint(p: &Properties) -> Result<(), DecodeError> {
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.2.11.10] Authentication Data without Authentication Method",
        ));
    }
    Ok(())
}

/// Whether a topic name carries `+` or `#`, which only topic filters may [MQTT-3.3.2-2].
pub(crate) fn has_wildcard(topic: &str) -> bool {
    topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// Checks that `p` can be written in `context` and would be accepted there.
pub(crate) fn check(p: &Properties, context: Context) -> Result<(), EncodeError> {
    let extra = table::present(p) & !context.allowed();
    if extra != 0 {
        // trailing_zeros of a non-zero u64 is below 64.
        let id = extra.trailing_zeros() as u8;
        return Err(EncodeError::Invalid(DecodeError::PropertyNotAllowed {
            property: table::name(id),
            packet: context.packet(),
        }));
    }
    if let Some(name) = table::repeated(p, context) {
        return Err(EncodeError::Invalid(DecodeError::DuplicateProperty(name)));
    }
    table::check_values(p)?;
    check_joint(p)?;
    Ok(())
}

/// The size of the properties themselves, without the length in front of them.
pub(crate) fn content_len(p: &Properties) -> usize {
    table::content_len(p)
}

/// The size of a property list on the wire, its length included.
pub(crate) fn encoded_len(p: &Properties) -> usize {
    let len = content_len(p);
    wire::var_int_len(len) + len
}

/// Writes a property list, length first. [`check`] has passed.
pub(crate) fn write(p: &Properties, buf: &mut BytesMut) {
    wire::put_var_int(buf, content_len(p));
    table::write(p, buf);
}

/// `p` without the properties `context` does not allow, so that property tests can draw
/// one list and use it anywhere.
#[cfg(test)]
pub(crate) fn restrict(p: Properties, context: Context) -> Properties {
    let mut p = p.into_values();
    table::retain(&mut p, context.allowed());
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
