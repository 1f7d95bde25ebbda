//! Both fuzz targets on stable Rust, for CI: the same check functions the cargo-fuzz
//! targets call (`fuzz/fuzz_targets/`), run over inputs mutated from the corpus
//! (`fuzz/corpus/<target>/`) by a seeded random generator, for a bounded time.
//!
//! - `BERTH_FUZZ_SECS` (default 2): seconds per target. `tests/run-all.sh` sets a longer run.
//! - `BERTH_FUZZ_SEED`: the generator's seed; by default one from the clock, printed so a
//!   failing run can be repeated.
//!
//! An input that breaks a promise is written to `fuzz/regressions/<target>/` and the test
//! fails; every file there is replayed by `every_saved_input_passes` (and, for the codec,
//! by `tests/codec_corpus.rs`) so the input stays a regression test once the bug is fixed.
//!
//! This is blind mutation, not coverage-guided fuzzing: it finds less than `cargo fuzz`
//! would, but runs on the stable toolchain CI has.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth::broker::fuzzing::Op;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Target {
    name: &'static str,
    check: fn(&[u8]),
    /// Inputs are cut to this length: longer ones add time, not reach.
    max_len: usize,
}

const CODEC: Target = Target {
    name: "codec",
    check: berth::protocol::fuzzing::check,
    max_len: 4096,
};
const SESSION: Target = Target {
    name: "session",
    check: berth::broker::fuzzing::check,
    max_len: 1024,
};

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
}

/// The files of `dir` (none if it does not exist), hidden ones (`.gitkeep`) left out.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// FNV-1a: a stable name for a saved input.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn passes(target: &Target, data: &[u8]) -> bool {
    panic::catch_unwind(AssertUnwindSafe(|| (target.check)(data))).is_ok()
}

/// One to eight random edits: bit flips, byte changes, insertions, deletions, repeats,
/// splices from another corpus input, truncation.
fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let len = data.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..8) {
            0 if len > 0 => data[at] ^= 1 << rng.gen_range(0..8),
            1 if len > 0 => data[at] = rng.gen(),
            2 => {
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let end = rng.gen_range(at..=len.min(at + 16));
                data.drain(at..end);
            }
            4 if len > 0 => {
                let end = rng.gen_range(at..=len.min(at + 32));
                let copy = data[at..end].to_vec();
                let to = rng.gen_range(0..=len);
                data.splice(to..to, copy);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let end = rng.gen_range(from..=other.len());
                    data.splice(at..at.min(len), other[from..end].iter().copied());
                }
            }
            6 if len > 0 => data.truncate(at),
            _ => {
                // Interesting values for lengths and ids.
                let special = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0x30, 0x32, 0x34];
                if len > 0 {
                    data[at] = special[rng.gen_range(0..special.len())];
                }
            }
        }
    }
    data.truncate(max_len);
    data
}

/// Runs `target` over mutated and random inputs for the configured time; saves and
/// reports the first input that fails.
fn fuzz(target: &Target) {
    let secs: u64 = std::env::var("BERTH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let corpus: Vec<Vec<u8>> = inputs(&fuzz_dir(&format!("corpus/{}", target.name)))
        .iter()
        .map(|path| fs::read(path).expect("readable corpus file"))
        .collect();
    assert!(!corpus.is_empty(), "fuzz/corpus/{} is empty", target.name);
    let mut rng = StdRng::seed_from_u64(seed ^ digest(target.name.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    // Inputs that got past the mutation once are mutated further: a cheap stand-in for
    // coverage feedback that lets long sequences build up.
    let mut pool: Vec<Vec<u8>> = corpus.clone();
    while Instant::now() < deadline {
        let input = if rng.gen_range(0..16) == 0 {
            let n = rng.gen_range(0..target.max_len.min(512));
            (0..n).map(|_| rng.gen()).collect()
        } else {
            let base = &pool[rng.gen_range(0..pool.len())];
            mutate(&mut rng, base, &corpus, target.max_len)
        };
        runs += 1;
        if !passes(target, &input) {
            let input = minimize(target, input);
            let dir = fuzz_dir(&format!("regressions/{}", target.name));
            fs::create_dir_all(&dir).expect("regressions directory");
            let path = dir.join(format!("crash-{:016x}", digest(&input)));
            fs::write(&path, &input).expect("write the failing input");
            // The bytes too: a CI machine's file is gone with it.
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "{} target: input {} breaks a promise (seed {seed}, run {runs}); the panic above says which. Input (hex): {hex}",
                target.name,
                path.display()
            );
        }
        if pool.len() < 4096 {
            pool.push(input);
        } else {
            let i = rng.gen_range(corpus.len()..pool.len());
            pool[i] = input;
        }
    }
    println!(
        "{} target: {runs} inputs in {secs} s, seed {seed}, no failure",
        target.name
    );
}

/// Cuts pieces out of a failing input while it still fails, so that the saved input shows
/// the bug rather than the noise around it.
fn minimize(target: &Target, mut input: Vec<u8>) -> Vec<u8> {
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut chunk = input.len() / 2;
    while chunk > 0 {
        let mut at = 0;
        while at + chunk <= input.len() {
            let mut shorter = input.clone();
            shorter.drain(at..at + chunk);
            if passes(target, &shorter) {
                at += chunk;
            } else {
                input = shorter;
            }
        }
        chunk /= 2;
    }
    panic::set_hook(quiet);
    // Once more, out loud, so the panic message says what broke.
    let _ = passes(target, &input);
    input
}

/// Runs one input given by path in `BERTH_FUZZ_INPUT`, printing the operations it reads as
/// (for the session target) and letting the panic through.
#[test]
#[ignore = "replays one input by hand: BERTH_FUZZ_INPUT=path cargo test --test fuzz_driver replay -- --ignored --nocapture"]
fn replay() {
    let path = std::env::var("BERTH_FUZZ_INPUT").expect("BERTH_FUZZ_INPUT=path");
    let data = fs::read(&path).expect("readable input");
    if path.contains("session") {
        for op in berth::broker::fuzzing::ops(&data) {
            println!("{op:?}");
        }
        (SESSION.check)(&data);
    } else {
        (CODEC.check)(&data);
    }
}

#[test]
fn fuzz_codec_for_a_bounded_time() {
    fuzz(&CODEC);
}

#[test]
fn fuzz_session_for_a_bounded_time() {
    fuzz(&SESSION);
}

#[test]
fn every_saved_input_passes() {
    for target in [&CODEC, &SESSION] {
        let corpus = inputs(&fuzz_dir(&format!("corpus/{}", target.name)));
        let saved = inputs(&fuzz_dir(&format!("regressions/{}", target.name)));
        for path in corpus.iter().chain(&saved) {
            let data = fs::read(path).expect("readable input");
            assert!(passes(target, &data), "{} fails", path.display());
        }
    }
}

#[test]
fn session_seeds_are_current() {
    // The seeds on disk are what `session_seeds` writes, so the fuzzer starts from
    // meaningful sequences (a change to the op encoding must regenerate them).
    let dir = fuzz_dir("corpus/session");
    for (name, ops) in session_seeds() {
        let on_disk = fs::read(dir.join(format!("seed-{name}")))
            .unwrap_or_else(|e| panic!("seed-{name}: {e}; run the ignored write_session_seeds"));
        assert_eq!(on_disk, encode(&ops), "seed-{name} is stale");
        assert_eq!(berth::broker::fuzzing::ops(&on_disk), ops, "seed-{name}");
    }
}

/// Regenerates `fuzz/corpus/session/seed-*`.
#[test]
#[ignore = "writes the session seed corpus; run by hand when the seeds change"]
fn write_session_seeds() {
    let dir = fuzz_dir("corpus/session");
    fs::create_dir_all(&dir).expect("corpus directory");
    for (name, ops) in session_seeds() {
        fs::write(dir.join(format!("seed-{name}")), encode(&ops)).expect("write");
    }
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

fn session_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let connect = |client, clean, expiry, receive_maximum| Op::Connect {
        client,
        clean,
        expiry,
        receive_maximum,
    };
    let sub = |client, filter, qos| Op::Subscribe {
        client,
        filter,
        qos,
    };
    let publish = |client, topic, qos, retain| Op::Publish {
        client,
        topic,
        qos,
        retain,
    };
    let ack = |client, nth| Op::Ack {
        client,
        nth,
        refuse: false,
    };
    let mut seeds = vec![
        (
            "resume-queued",
            vec![
                connect(0, true, 2, 3),
                sub(0, 1, 2),
                Op::Disconnect {
                    client: 0,
                    expiry: 0,
                },
                connect(1, true, 0, 3),
                publish(1, 0, 1, false),
                publish(1, 1, 2, false),
                publish(1, 0, 2, false),
                publish(1, 1, 1, false),
                connect(0, false, 2, 1),
                ack(0, 0),
                ack(0, 0),
                ack(0, 0),
                ack(0, 0),
                ack(0, 0),
            ],
        ),
        (
            "takeover-in-flight",
            vec![
                connect(2, true, 2, 2),
                sub(2, 3, 2),
                publish(2, 2, 2, false),
                publish(2, 0, 1, false),
                publish(2, 1, 2, false),
                connect(2, false, 2, 1),
                ack(2, 0),
                ack(2, 1),
                connect(2, false, 1, 3),
                ack(2, 0),
            ],
        ),
        (
            "inbound-qos2",
            vec![
                connect(1, true, 1, 3),
                connect(0, true, 2, 3),
                sub(0, 3, 2),
                Op::PublishQos2 {
                    client: 1,
                    id: 1,
                    topic: 0,
                },
                Op::PublishQos2 {
                    client: 1,
                    id: 1,
                    topic: 0,
                },
                Op::PubRel { client: 1, id: 1 },
                Op::PubRel { client: 1, id: 1 },
                Op::PublishQos2 {
                    client: 1,
                    id: 1,
                    topic: 1,
                },
                Op::Disconnect {
                    client: 1,
                    expiry: 0,
                },
                connect(1, false, 1, 3),
                Op::PubRel { client: 1, id: 1 },
            ],
        ),
        (
            "expiry-and-retained",
            vec![
                connect(0, true, 1, 3),
                publish(0, 1, 2, true),
                publish(0, 2, 1, true),
                sub(0, 3, 1),
                Op::Disconnect {
                    client: 0,
                    expiry: 2,
                },
                connect(1, true, 2, 3),
                publish(1, 1, 1, false),
                Op::Wait { step: 1 },
                connect(0, false, 1, 3),
                sub(0, 4, 2),
                Op::StrayAck {
                    client: 0,
                    kind: 1,
                    id: 9,
                },
                Op::Ack {
                    client: 0,
                    nth: 0,
                    refuse: true,
                },
                ack(0, 0),
            ],
        ),
    ];
    // Every op kind alone for each client, so single mutations reach them all.
    let mut every = Vec::new();
    for client in 0..3 {
        every.extend([
            connect(client, false, 3, 3),
            sub(client, 3, 2),
            publish(client, 0, 2, false),
            ack(client, 0),
            Op::Unsubscribe { client, filter: 3 },
            Op::Disconnect { client, expiry: 1 },
        ]);
    }
    every.push(Op::Wait { step: 3 });
    seeds.push(("every-op", every));
    // Crashes: a process crash (every record kept) and an OS crash (what was durable and a
    // prefix of the rest) with messages queued, in flight, and inbound QoS 2 ids awaiting
    // PUBREL, then the sessions resumed and acknowledged.
    let crash_then_resume = |keep| {
        vec![
            connect(0, true, 3, 2),
            sub(0, 1, 2),
            connect(1, true, 3, 3),
            sub(1, 3, 1),
            publish(2, 1, 2, false),
            publish(2, 1, 1, false),
            publish(2, 0, 2, false),
            Op::PublishQos2 {
                client: 1,
                id: 2,
                topic: 1,
            },
            Op::Disconnect {
                client: 0,
                expiry: 2,
            },
            publish(2, 1, 2, false),
            Op::Crash { keep },
            connect(0, false, 3, 3),
            ack(0, 0),
            ack(0, 0),
            connect(1, false, 3, 3),
            Op::PublishQos2 {
                client: 1,
                id: 2,
                topic: 1,
            },
            Op::PubRel { client: 1, id: 2 },
            ack(1, 0),
            Op::Crash { keep },
            connect(0, false, 3, 3),
            ack(0, 0),
        ]
    };
    seeds.push(("process-crash", crash_then_resume(7)));
    seeds.push(("os-crash", crash_then_resume(200)));
    seeds
}
