//! The data types every packet is built from (section 1.5 of both specifications): one-,
//! two- and four-byte integers, Variable Byte Integers, UTF-8 strings and binary data.
//!
//! Reading goes through [`Reader`], a cursor over the `Bytes` of one complete packet body: each
//! read checks that the bytes are there and fails with a `Malformed` error otherwise, so no
//! caller ever indexes a buffer. Strings and binary data are handed out as slices of that
//! `Bytes` (reference-counted, never copied); strings are checked to be well-formed UTF-8
//! without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
//!
//! Writing is split in two so that `encode` can leave its buffer untouched on failure: the
//! `check_*` functions say whether a value can be written at all, and the `put_*` functions,
//! run only after every check passed, cannot fail.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{DecodeError, EncodeError};

/// The largest value a Variable Byte Integer can hold (four bytes of seven bits).
pub(crate) const MAX_VARIABLE_INT: u32 = 268_435_455;

/// The longest UTF-8 string or binary field: its length is a two-byte integer.
pub(crate) const MAX_FIELD_LEN: usize = u16::MAX as usize;

const TRUNCATED: DecodeError = DecodeError::Malformed("a field runs past the end of the packet");

/// A Variable Byte Integer read from the front of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VarInt {
    pub value: u32,
    /// How many bytes it took (1..=4).
    pub len: usize,
    /// False when more bytes were used than needed, which 5.0 forbids [MQTT-1.5.5-1].
    pub minimal: bool,
}

/// Reads a Variable Byte Integer from the front of `bytes`. `Ok(None)` means the slice ends
/// before the last byte of the integer; a fifth byte is an error as soon as it is announced.
pub(crate) fn parse_var_int(bytes: &[u8]) -> Result<Option<VarInt>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        // i < 4, so the shift is at most 21 and the sum stays below 2^28: no overflow.
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let len = i + 1;
            return Ok(Some(VarInt {
                value,
                len,
                minimal: len == 1 || byte != 0,
            }));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::Malformed(
            "[MQTT-1.5.5] variable byte integer longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// How many bytes the Variable Byte Integer `value` takes (4 for anything too large to fit,
/// which `encode` refuses before it gets here).
pub(crate) fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_VARIABLE_INT`]) in the minimal number of bytes.
pub(crate) fn put_var_int(buf: &mut BytesMut, value: usize) {
    debug_assert!(value <= MAX_VARIABLE_INT as usize);
    let mut value = value;
    loop {
        // Truncation is the point: the low seven bits go out first.
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Checks a string before it is written: it must fit a two-byte length, and U+0000 is
/// forbidden [MQTT-1.5.4-2] (a `str` is always well-formed UTF-8).
pub(crate) fn check_str(s: &str) -> Result<(), EncodeError> {
    if s.len() > MAX_FIELD_LEN {
        return Err(EncodeError::OutOfRange(
            "UTF-8 string longer than 65,535 bytes",
        ));
    }
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::Invalid(NUL_IN_STRING));
    }
    Ok(())
}

/// Checks binary data before it is written: it must fit a two-byte length.
pub(crate) fn check_binary(b: &[u8]) -> Result<(), EncodeError> {
    if b.len() > MAX_FIELD_LEN {
        return Err(EncodeError::OutOfRange(
            "binary data longer than 65,535 bytes",
        ));
    }
    Ok(())
}

/// Writes a string or binary field: two-byte length, then the bytes. Checked beforehand.
pub(crate) fn put_field(buf: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= MAX_FIELD_LEN);
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

/// The encoded size of a string or binary field.
pub(crate) fn field_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}

const NUL_IN_STRING: DecodeError =
    DecodeError::Malformed("[MQTT-1.5.4-2] UTF-8 string contains U+0000");

/// A cursor over the body of one complete packet.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer inside a packet: it must be complete and minimal (only 5.0
    /// packets carry them outside the fixed header).
    pub fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.buf)? {
            Some(v) if !v.minimal => Err(DecodeError::Malformed(
                "[MQTT-1.5.5-1] variable byte integer not in its shortest form",
            )),
            Some(v) => {
                self.buf.advance(v.len);
                Ok(v.value)
            }
            None => Err(TRUNCATED),
        }
    }

    /// The next `n` bytes, as a slice of the packet.
    pub fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.buf.len() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length, then that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 string: binary data that must be well-formed UTF-8 without U+0000.
    pub fn string(&mut self) -> Result<ByteString, DecodeError> {
        let bytes = self.binary()?;
        // In UTF-8 a zero byte only ever encodes U+0000.
        if bytes.contains(&0) {
            return Err(NUL_IN_STRING);
        }
        ByteString::try_from(bytes)
            .map_err(|_| DecodeError::Malformed("[MQTT-1.5.4-1] UTF-8 string is ill-formed"))
    }

    /// Everything left (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Ends the packet: anything left over is malformed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes after the end of the packet",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var_int(value: usize) -> Vec<u8> {
        let mut buf = BytesMut::new();
        put_var_int(&mut buf, value);
        buf.to_vec()
    }

    #[test]
    fn variable_byte_integer_boundaries_from_the_spec() {
        // Table 1.1 of 5.0 / 2.4 of 3.1.1: the smallest and largest value of each size.
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            assert_eq!(var_int(value), bytes, "encoding {value}");
            assert_eq!(var_int_len(value), bytes.len());
            let parsed = parse_var_int(bytes).unwrap().unwrap();
            assert_eq!(
                parsed,
                VarInt {
                    value: value as u32,
                    len: bytes.len(),
                    minimal: true
                }
            );
        }
    }

    #[test]
    fn variable_byte_integer_incomplete_too_long_and_non_minimal() {
        assert_eq!(parse_var_int(&[]), Ok(None));
        assert_eq!(parse_var_int(&[0x80]), Ok(None));
        assert_eq!(parse_var_int(&[0xFF, 0xFF, 0xFF]), Ok(None));
        assert!(matches!(
            parse_var_int(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse_var_int(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        let v = parse_var_int(&[0x80, 0x00]).unwrap().unwrap();
        assert_eq!((v.value, v.len, v.minimal), (0, 2, false));
        let mut r = Reader::new(Bytes::from_static(&[0x81, 0x00]));
        assert!(matches!(r.var_int(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn strings_reject_bad_utf8_and_nul() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]));
        assert_eq!(
            r.string(),
            Err(DecodeError::Malformed(
                "[MQTT-1.5.4-1] UTF-8 string is ill-formed"
            ))
        );
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert_eq!(r.string(), Err(NUL_IN_STRING));
        // An encoded surrogate (U+D800) is not well-formed UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert!(r.string().is_err());
        // The example of 1.5.4: "A𪛔" is 41 F0 AA 9B 94.
        let mut r = Reader::new(Bytes::from_static(&[
            0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94,
        ]));
        assert_eq!(r.string().unwrap(), "A\u{2A6D4}");
        assert!(r.finish().is_ok());
    }

    #[test]
    fn reads_past_the_end_are_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(r.string(), Err(TRUNCATED));
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert_eq!(r.u16(), Err(TRUNCATED));
        assert!(Reader::new(Bytes::from_static(&[1])).finish().is_err());
    }

    #[test]
    fn checks_before_writing() {
        assert!(check_str(&"a".repeat(65_535)).is_ok());
        assert!(matches!(
            check_str(&"a".repeat(65_536)),
            Err(EncodeError::OutOfRange(_))
        ));
        assert!(matches!(check_str("a\0b"), Err(EncodeError::Invalid(_))));
        assert!(check_binary(&[0; 65_535]).is_ok());
        assert!(check_binary(&vec![0; 65_536]).is_err());
    }
}
