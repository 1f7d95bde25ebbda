//! Rules of the code base that a test checks, so that they do not drift (in the manner of
//! rust-analyzer's tidy tests): the layering of `src/`, no clock reads in the pure layers,
//! a `//!` opening on every source file, and the size of a file.
//!
//! Each rule reads the source text; a failure names the file, the line and the rule.

use std::path::{Path, PathBuf};

/// The layers that never do I/O: they neither import the server nor the runtime.
const PURE_LAYERS: &[&str] = &[
    "src/protocol",
    "src/topic",
    "src/session",
    "src/broker",
    "src/auth",
    "src/websocket",
    "src/cluster",
];

/// What a pure layer may not name outside its tests.
const FORBIDDEN_IMPORTS: &[&str] = &[
    "crate::server",
    "glommio",
    "crate::nats",
    "tokio",
    "async_nats",
];

/// The NATS bridge (`src/nats`) runs on a tokio thread of its own and talks to the cores
/// only through channels: it never names the cores' runtime or their state.
const CLUSTER_FORBIDDEN: &[&str] = &["crate::server", "glommio"];

/// Only the NATS bridge runs tokio and NATS; the cores never do (no core waits on NATS).
const TOKIO_ONLY_IN: &str = "src/nats";

/// Clock reads: time comes into a pure layer as an argument.
const CLOCK_READS: &[&str] = &["Instant::now(", "SystemTime::now(", "now_from_system("];

/// A file longer than this holds one state machine and says so with [`ONE_STATE_MACHINE`]
/// in its `//!` opening, or is split.
const MAX_LINES: usize = 600;
const ONE_STATE_MACHINE: &str = "tidy: one state machine";

/// Files over [`MAX_LINES`] that are still to be split. Remove a file from here when it is;
/// the list may only shrink (a test below fails on a listed file that fits already).
const TOO_LONG_FOR_NOW: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The sources this crate and the load generator build from, tests and benches included.
fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "loadgen/src", "benches", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
}

/// Whether a whole file is test code: its name says so, or it is the session fuzz model
/// (which runs under `tests/fuzz_driver.rs` and reads the clock to seed a broker).
fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.contains("tests")
        || name == "proptests.rs"
        || rel.contains("/persist_tests/")
        || rel.contains("/fuzzing/")
        || name == "fuzzing.rs"
}

/// The lines of `text` that are code outside `#[cfg(test)]` items, with their numbers:
/// comments are dropped, and a `#[cfg(test)]` item ends the file's code (test modules are
/// kept at the end of a file, after the code they test).
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string literal is rare in these layers; be conservative.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        lines.push((i + 1, code));
    }
    lines
}

fn pure_layer_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for layer in PURE_LAYERS {
        let mut paths = Vec::new();
        rust_files(&root().join(layer), &mut paths);
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((relative(&path), text));
        }
    }
    files.sort();
    files
}

#[test]
fn pure_layers_import_neither_the_server_nor_the_runtime() {
    let mut broken = Vec::new();
    for (rel, text) in pure_layer_files() {
        for (number, code) in code_lines(&text) {
            for forbidden in FORBIDDEN_IMPORTS {
                if code.contains(forbidden) {
                    broken.push(format!(
                        "{rel}:{number}: names `{forbidden}`: {}",
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "protocol/, topic/, session/ and broker/ do no I/O; move this to server/:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_nats_bridge_stays_off_the_cores() {
    let mut broken = Vec::new();
    let mut paths = Vec::new();
    rust_files(&root().join("src"), &mut paths);
    for path in paths {
        let rel = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let in_cluster = rel.starts_with(TOKIO_ONLY_IN);
        for (number, code) in code_lines(&text) {
            let forbidden: &[&str] = if in_cluster {
                CLUSTER_FORBIDDEN
            } else {
                &["tokio", "async_nats"]
            };
            for name in forbidden {
                if code.contains(name) {
                    broken.push(format!("{rel}:{number}: names `{name}`: {}", code.trim()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "src/nats (tokio, NATS) and the cores (glommio, server) meet only in channels:\n{}",
        broken.join("\n")
    );
}

#[test]
fn pure_layers_never_read_the_clock() {
    let mut broken = Vec::new();
    for (rel, text) in pure_layer_files() {
        if is_test_file(&rel) {
            continue;
        }
        for (number, code) in code_lines(&text) {
            for read in CLOCK_READS {
                if code.contains(read) {
                    broken.push(format!("{rel}:{number}: `{read}`: {}", code.trim()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "time comes into the pure layers as an argument (`now: Instant`):\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_source_file_opens_with_a_module_comment() {
    let missing: Vec<String> = all_sources()
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| relative(path))
        .collect();
    assert!(
        missing.is_empty(),
        "every source file opens with `//!` saying what it is for and what it guarantees:\n{}",
        missing.join("\n")
    );
}

#[test]
fn source_files_stay_small_unless_they_hold_one_state_machine() {
    let mut too_long = Vec::new();
    let mut split_already = Vec::new();
    for path in all_sources() {
        let rel = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().count();
        let listed = TOO_LONG_FOR_NOW.contains(&rel.as_str());
        let opening: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let declared = opening.contains(ONE_STATE_MACHINE);
        if lines > MAX_LINES && !listed && !declared {
            too_long.push(format!("{rel}: {lines} lines"));
        }
        if listed && lines <= MAX_LINES {
            split_already.push(rel);
        }
    }
    for listed in TOO_LONG_FOR_NOW {
        if !root().join(listed).exists() {
            split_already.push(listed.to_string());
        }
    }
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines: split them, or say `{ONE_STATE_MACHINE}` in the `//!` \
         opening of a file that is one state machine:\n{}",
        too_long.join("\n")
    );
    assert!(
        split_already.is_empty(),
        "remove from TOO_LONG_FOR_NOW (tests/tidy.rs), they fit now or are gone:\n{}",
        split_already.join("\n")
    );
}
