//! Fuzzes the session state machine: arbitrary bytes are read as a sequence of client
//! actions (CONNECT variants, PUBLISH at every QoS, acknowledgements, SUBSCRIBE,
//! UNSUBSCRIBE, DISCONNECT, takeover, time passing) driven against two cores' engines, and
//! checked against a model of what the specification allows. The checks live in
//! `berth::broker::fuzzing` so that `tests/fuzz_driver.rs` runs and replays exactly the
//! same ones on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth::broker::fuzzing::check(data);
});
