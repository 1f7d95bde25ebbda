//! CONNECT (section 3.1 of 5.0 and of 3.1.1; MQTT 3.1's CONNECT has the same layout).
//!
//! The body is: protocol name and level, which give the version ("MQIsdp" 3, "MQTT" 4 or
//! 5); the Connect Flags; Keep Alive; properties (5.0); then the payload: Client Identifier,
//! Will Properties (5.0), Will Topic and Will Payload when the Will Flag is set, User Name
//! and Password when their flags are set. Unlike every other packet, a CONNECT is decoded
//! and encoded in the version it names itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::property_codec::{self as props, has_wildcard, Context};
use crate::protocol::wire::{check_binary, check_str, field_len, put_field, Reader};
use crate::protocol::{
    Connect, DecodeError, EncodeError, LastWill, Properties, ProtocolVersion, QoS,
};

const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USER_NAME: u8 = 0b1000_0000;

fn protocol_name(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

/// Decodes a CONNECT body. `minimal_length` says whether the Remaining Length was in its
/// shortest form, which only a 5.0 CONNECT must honour.
pub(crate) fn decode(body: Bytes, minimal_length: bool) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::BadProtocolName),
    };
    if protocol.is_v5() && !minimal_length {
        return Err(DecodeError::Malformed(
            "[MQTT-1.5.5-1] Remaining Length not in its shortest form",
        ));
    }
    let flags = r.u8()?;
    check_flags(flags, protocol)?;
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        props::decode(&mut r, Context::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if flags & WILL != 0 {
        let properties = if protocol.is_v5() {
            props::decode(&mut r, Context::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        check_will_topic(&topic)?;
        let payload = r.binary()?;
        // check_flags has refused QoS 3.
        let qos = QoS::from_u8((flags >> WILL_QOS_SHIFT) & 0b11)
            .ok_or(DecodeError::Malformed("[MQTT-3.1.2-12] Will QoS 3"))?;
        Some(LastWill {
            topic,
            payload,
            qos,
            retain: flags & WILL_RETAIN != 0,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USER_NAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn check_flags(flags: u8, protocol: ProtocolVersion) -> Result<(), DecodeError> {
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-3] reserved Connect Flag is set",
        ));
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    if will_qos == 3 {
        return Err(DecodeError::Malformed("[MQTT-3.1.2-12] Will QoS 3"));
    }
    if flags & WILL == 0 && will_qos != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-11] Will QoS set without the Will Flag",
        ));
    }
    if flags & WILL == 0 && flags & WILL_RETAIN != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-13] Will Retain set without the Will Flag",
        ));
    }
    if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USER_NAME == 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-22] Password Flag set without the User Name Flag",
        ));
    }
    Ok(())
}

/// The Will Topic is a topic name: not empty, no wildcards.
fn check_will_topic(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::TopicNameInvalid(
            "[MQTT-4.7.3-1] Will Topic is empty",
        ));
    }
    if has_wildcard(topic) {
        return Err(DecodeError::TopicNameInvalid(
            "[MQTT-3.3.2-2] Will Topic contains a wildcard",
        ));
    }
    Ok(())
}

pub(crate) fn check(c: &Connect) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    if v5 {
        props::check(&c.properties, Context::Connect)?;
    }
    check_str(&c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            props::check(&will.properties, Context::Will)?;
        }
        check_str(&will.topic)?;
        check_will_topic(&will.topic)?;
        check_binary(&will.payload)?;
    }
    if let Some(username) = &c.username {
        check_str(username)?;
    }
    if let Some(password) = &c.password {
        check_binary(password)?;
        if !v5 && c.username.is_none() {
            return Err(
                DecodeError::Malformed("[MQTT-3.1.2-22] Password without User Name").into(),
            );
        }
    }
    Ok(())
}

pub(crate) fn body_len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let mut len =
        field_len(protocol_name(c.protocol)) + 1 + 1 + 2 + field_len(c.client_id.as_bytes());
    if v5 {
        len += props::encoded_len(&c.properties);
    }
    if let Some(will) = &c.will {
        len += field_len(will.topic.as_bytes()) + field_len(&will.payload);
        if v5 {
            len += props::encoded_len(&will.properties);
        }
    }
    len + c.username.as_ref().map_or(0, |u| field_len(u.as_bytes()))
        + c.password.as_ref().map_or(0, |p| field_len(p))
}

pub(crate) fn write(c: &Connect, buf: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_field(buf, protocol_name(c.protocol));
    buf.put_u8(c.protocol.level());
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(will) = &c.will {
        flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USER_NAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        props::write(&c.properties, buf);
    }
    put_field(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            props::write(&will.properties, buf);
        }
        put_field(buf, will.topic.as_bytes());
        put_field(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_field(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_field(buf, password);
    }
}

#[cfg(test)]
mod tests;
