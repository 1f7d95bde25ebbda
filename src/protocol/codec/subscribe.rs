//! SUBSCRIBE and SUBACK (sections 3.8 and 3.9).
//!
//! SUBSCRIBE: Packet Identifier, properties (5.0), then at least one topic filter, each
//! followed by a Subscription Options byte (3.1.1: just the requested QoS, upper six bits
//! reserved). Only the shape of a filter is checked here (UTF-8, not empty); its levels and
//! wildcards are the topic module's concern. SUBACK: Packet Identifier, properties (5.0),
//! then one reason code per filter.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_reason_code, packet_id, reason_code};
use crate::protocol::property_codec::{self as props, Context};
use crate::protocol::wire::{check_str, field_len, put_field, Reader};
use crate::protocol::{
    DecodeError, EncodeError, Properties, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions,
};

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;

/// Table 3-8 of 5.0.
pub(crate) const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const BAD_SUBACK_V5: &str = "[MQTT-3.9.3] SUBACK reason code not in table 3-8";
const BAD_SUBACK_V3: &str = "[MQTT-3.9.3-2] SUBACK return code other than 0x00, 0x01, 0x02 or 0x80";

pub(crate) fn decode_subscribe(
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(r.u16()?)?;
    let properties = if version.is_v5() {
        props::decode(&mut r, Context::Subscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if filter.is_empty() {
            return Err(DecodeError::TopicFilterInvalid(
                "[MQTT-4.7.3-1] empty Topic Filter",
            ));
        }
        let options = decode_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.8.3-3] SUBSCRIBE without a Topic Filter",
        ));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    if !version.is_v5() {
        if byte & 0b1111_1100 != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.8.3-4] reserved bits of the requested QoS byte are set",
            ));
        }
        let qos =
            QoS::from_u8(byte).ok_or(DecodeError::Malformed("[MQTT-3.8.3-4] requested QoS 3"))?;
        return Ok(SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        });
    }
    if byte & 0b1100_0000 != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.8.3-5] reserved bits of the Subscription Options are set",
        ));
    }
    let qos =
        QoS::from_u8(byte & 0b11).ok_or(DecodeError::Protocol("[MQTT-3.8.3.1] Maximum QoS 3"))?;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::Protocol("[MQTT-3.8.3.1] Retain Handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn options_byte(o: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut byte = o.qos as u8;
    if version.is_v5() {
        byte |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        if o.no_local {
            byte |= NO_LOCAL;
        }
        if o.retain_as_published {
            byte |= RETAIN_AS_PUBLISHED;
        }
    }
    byte
}

pub(crate) fn check_subscribe(s: &Subscribe, version: ProtocolVersion) -> Result<(), EncodeError> {
    if version.is_v5() {
        props::check(&s.properties, Context::Subscribe)?;
    }
    if s.filters.is_empty() {
        return Err(
            DecodeError::Protocol("[MQTT-3.8.3-3] SUBSCRIBE without a Topic Filter").into(),
        );
    }
    for (filter, _) in &s.filters {
        check_str(filter)?;
        if filter.is_empty() {
            return Err(
                DecodeError::TopicFilterInvalid("[MQTT-4.7.3-1] empty Topic Filter").into(),
            );
        }
    }
    Ok(())
}

pub(crate) fn subscribe_len(s: &Subscribe, version: ProtocolVersion) -> usize {
    let properties = if version.is_v5() {
        props::encoded_len(&s.properties)
    } else {
        0
    };
    2 + properties
        + s.filters
            .iter()
            .map(|(f, _)| field_len(f.as_bytes()) + 1)
            .sum::<usize>()
}

pub(crate) fn write_subscribe(s: &Subscribe, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u16(s.packet_id.get());
    if version.is_v5() {
        props::write(&s.properties, buf);
    }
    for (filter, options) in &s.filters {
        put_field(buf, filter.as_bytes());
        buf.put_u8(options_byte(options, version));
    }
}

pub(crate) fn decode_suback(body: Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(r.u16()?)?;
    let properties = if version.is_v5() {
        props::decode(&mut r, Context::SubAck)?
    } else {
        Properties::default()
    };
    let (allowed, rule) = if version.is_v5() {
        (SUBACK_V5, BAD_SUBACK_V5)
    } else {
        (SUBACK_V3, BAD_SUBACK_V3)
    };
    let reason_codes = r
        .rest()
        .iter()
        .map(|&code| reason_code(code, allowed, rule))
        .collect::<Result<Vec<_>, _>>()?;
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.9.3-1] SUBACK without a reason code",
        ));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

/// The byte sent for `code`: 3.1.1 knows a single failure code.
fn suback_byte(code: ReasonCode, version: ProtocolVersion) -> u8 {
    if !version.is_v5() && code.is_error() {
        0x80
    } else {
        code.0
    }
}

pub(crate) fn check_suback(s: &SubAck, version: ProtocolVersion) -> Result<(), EncodeError> {
    if s.reason_codes.is_empty() {
        return Err(DecodeError::Protocol("[MQTT-3.9.3-1] SUBACK without a reason code").into());
    }
    let (allowed, rule) = if version.is_v5() {
        (SUBACK_V5, BAD_SUBACK_V5)
    } else {
        (SUBACK_V3, BAD_SUBACK_V3)
    };
    for &code in &s.reason_codes {
        check_reason_code(ReasonCode(suback_byte(code, version)), allowed, rule)?;
    }
    if version.is_v5() {
        props::check(&s.properties, Context::SubAck)?;
    }
    Ok(())
}

pub(crate) fn suback_len(s: &SubAck, version: ProtocolVersion) -> usize {
    let properties = if version.is_v5() {
        props::encoded_len(&s.properties)
    } else {
        0
    };
    2 + properties + s.reason_codes.len()
}

pub(crate) fn write_suback(s: &SubAck, version: ProtocolVersion, buf: &mut BytesMut) {
    buf.put_u16(s.packet_id.get());
    if version.is_v5() {
        props::write(&s.properties, buf);
    }
    for &code in &s.reason_codes {
        buf.put_u8(suback_byte(code, version));
    }
}

#[cfg(test)]
mod tests;
