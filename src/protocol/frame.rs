//! The fixed header (section 2.1) and the cutting of one whole packet out of the receive
//! buffer.
//!
//! Guarantees: the first byte's packet type and flags are checked as soon as that byte is
//! there, and the size limit as soon as the Remaining Length is complete, so a peer cannot
//! make us wait for (or buffer) a body we would reject anyway. Nothing is consumed until the
//! whole packet is present; then it is split off the buffer without copying.

use bytes::{Buf, Bytes, BytesMut};

use super::wire::parse_var_int;
use super::{DecodeError, ProtocolVersion};

pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
pub(crate) const AUTH: u8 = 15;

/// One whole packet, its fixed header already read.
#[derive(Debug)]
pub(crate) struct Frame {
    pub packet_type: u8,
    pub flags: u8,
    /// Whether the Remaining Length used the fewest bytes possible; only a 5.0 receiver cares
    /// [MQTT-1.5.5-1], and for a CONNECT the version is only known once its body is read.
    pub minimal_length: bool,
    /// The variable header and payload.
    pub body: Bytes,
}

/// Checks the first byte of a packet: a known type, and the flag bits that type requires
/// [MQTT-2.1.3-1]. PUBLISH flags are checked here too, so QoS 3 fails before its body arrives.
pub(crate) fn check_first_byte(byte: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let flags = byte & 0x0F;
    let expected = match byte >> 4 {
        0 => {
            return Err(DecodeError::Malformed(
                "[MQTT-2.1.2] packet type 0 is reserved",
            ))
        }
        AUTH if !version.is_v5() => {
            return Err(DecodeError::Malformed(
                "[MQTT-2.2.1] packet type 15 is reserved before MQTT 5.0",
            ))
        }
        PUBLISH => return check_publish_flags(flags),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::Malformed(
            "[MQTT-2.1.3-1] reserved fixed header flags have a wrong value",
        ));
    }
    Ok(())
}

fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        return Err(DecodeError::Malformed("[MQTT-3.3.1-4] PUBLISH with QoS 3"));
    }
    if qos == 0 && flags & 0b1000 != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH",
        ));
    }
    Ok(())
}

/// Splits the next whole packet off `buf`, whose first byte the caller has checked.
/// `Ok(None)` (nothing consumed) while bytes are missing.
pub(crate) fn take_frame(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Frame>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some(length) = parse_var_int(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    // At most 1 + 4 + 268,435,455: no overflow even on a 32-bit usize.
    let header_len = 1 + length.len;
    let size = header_len + length.value as usize;
    if size as u64 > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(header_len);
    Ok(Some(Frame {
        packet_type: first >> 4,
        flags: first & 0x0F,
        minimal_length: length.minimal,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_input_consumes_nothing() {
        for input in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0x05, 0x00, 0x01]] {
            let mut buf = BytesMut::from(input);
            assert!(take_frame(&mut buf, u32::MAX).unwrap().is_none());
            assert_eq!(&buf[..], input);
        }
    }

    #[test]
    fn splits_one_packet_and_leaves_the_next() {
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00][..]);
        let frame = take_frame(&mut buf, u32::MAX).unwrap().unwrap();
        assert_eq!(
            (frame.packet_type, frame.flags, frame.body.len()),
            (PINGREQ, 0, 0)
        );
        assert_eq!(&buf[..], &[0xD0, 0x00]);
    }

    #[test]
    fn too_large_is_reported_before_the_body_arrives() {
        // 2 + 200 bytes announced, only the header present.
        let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
        assert_eq!(
            take_frame(&mut buf, 100).unwrap_err(),
            DecodeError::PacketTooLarge {
                size: 203,
                max: 100
            }
        );
        // Exactly the maximum is fine.
        let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
        assert!(take_frame(&mut buf, 2).unwrap().is_some());
    }

    #[test]
    fn remaining_length_of_five_bytes_fails_at_once() {
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            take_frame(&mut buf, u32::MAX),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn first_byte_rules() {
        use ProtocolVersion::*;
        let ok = [
            0x10, 0x20, 0x30, 0x3B, 0x35, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0,
            0xD0, 0xE0,
        ];
        for byte in ok {
            assert!(check_first_byte(byte, V3_1_1).is_ok(), "{byte:#04x}");
        }
        assert!(check_first_byte(0xF0, V5).is_ok());
        let bad = [
            0x00, 0xF0, 0x11, 0x60, 0x61, 0x80, 0xA0, 0x42, 0xE1, 0x36, 0x38, 0x3E, 0x21,
        ];
        for byte in bad {
            assert!(
                matches!(
                    check_first_byte(byte, V3_1_1),
                    Err(DecodeError::Malformed(_))
                ),
                "{byte:#04x}"
            );
        }
    }
}
