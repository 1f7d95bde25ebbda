//! The checks the fuzz target runs on every input, shared with the corpus replay test
//! (`tests/codec_corpus.rs`) and the property tests so that all three hold the codec to the
//! same promises. Not part of the API.
//!
//! Promises checked, for every version and a few maximum packet sizes:
//! - decoding never panics, whatever the bytes;
//! - `Ok(None)` consumes nothing, and a decoded packet consumes at most the maximum size;
//! - whatever decodes re-encodes, `encoded_len` matches what was written, and the encoding
//!   decodes to the same packet, leaving nothing behind; no strict prefix of it decodes.

use bytes::BytesMut;

use super::{decode, decode_connect, encode, encoded_len, Packet, ProtocolVersion};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];
const MAX_SIZES: [u32; 4] = [u32::MAX, 1 << 16, 64, 5];
/// Enough to walk a corpus file of several packets, few enough to keep each run short.
const MAX_PACKETS: usize = 16;

/// Runs every check on `data`, panicking on the first broken promise.
pub fn check(data: &[u8]) {
    for max in MAX_SIZES {
        let mut buf = BytesMut::from(data);
        match decode_connect(&mut buf, max) {
            Ok(Some(connect)) => {
                assert!(
                    data.len() - buf.len() <= max as usize,
                    "decoded a CONNECT above the maximum size"
                );
                let version = connect.protocol;
                round_trip(&Packet::Connect(Box::new(connect)), version);
                decode_all(buf, version, max);
            }
            Ok(None) => assert_eq!(&buf[..], data, "Ok(None) consumed bytes"),
            Err(e) => drop((e.reason_code(), e.to_string())),
        }
        for version in VERSIONS {
            decode_all(BytesMut::from(data), version, max);
        }
    }
}

/// Decodes packets from `buf` until it runs dry or fails, round-tripping each.
fn decode_all(mut buf: BytesMut, version: ProtocolVersion, max: u32) {
    for _ in 0..MAX_PACKETS {
        let before = buf.clone();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                let used = before.len() - buf.len();
                assert!(
                    used >= 2 && used <= max as usize,
                    "decoded {used} bytes with a maximum of {max}"
                );
                round_trip(&packet, version);
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                return;
            }
            Err(e) => {
                drop((e.reason_code(), e.to_string()));
                return;
            }
        }
    }
}

/// Encodes `packet`, then checks that the encoding decodes to it again, and that strict
/// prefixes of the encoding are reported incomplete.
pub fn round_trip(packet: &Packet, version: ProtocolVersion) {
    let mut encoded = BytesMut::new();
    if let Err(e) = encode(packet, version, &mut encoded) {
        panic!("{packet:?} does not encode for {version:?}: {e}");
    }
    assert_eq!(
        encoded.len(),
        encoded_len(packet, version),
        "encoded_len disagrees for {packet:?}"
    );
    let mut again = encoded.clone();
    match decode(&mut again, version, u32::MAX) {
        Ok(Some(decoded)) => assert_eq!(&decoded, packet, "round trip changed the packet"),
        other => panic!(
            "the encoding {:02X?} of {packet:?} decodes to {other:?}",
            &encoded[..]
        ),
    }
    assert!(again.is_empty(), "bytes left after decoding an encoding");
    // Every prefix would be quadratic on big packets; the ends and the middle catch the bugs.
    let len = encoded.len();
    for cut in [0, 1, 2, len / 2, len.saturating_sub(1)] {
        if cut < len {
            let mut prefix = BytesMut::from(&encoded[..cut]);
            assert_eq!(
                decode(&mut prefix, version, u32::MAX),
                Ok(None),
                "a {cut}-byte prefix of {packet:?}"
            );
            assert_eq!(prefix.len(), cut);
        }
    }
}
