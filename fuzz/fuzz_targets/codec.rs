//! Fuzzes the wire codec: arbitrary bytes go to `decode_connect` and to `decode` for every
//! protocol version and a few maximum packet sizes; whatever decodes must re-encode to
//! something that decodes to the same packet. The checks live in
//! `berth::protocol::fuzzing` so that `tests/codec_corpus.rs` replays the corpus through
//! exactly the same ones on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth::protocol::fuzzing::check(data);
});
