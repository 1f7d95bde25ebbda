//! kill -9: a child process (this test binary again, running the ignored `child` test) appends
//! numbered records in a loop and reports each one through its stdout pipe once `append`
//! returned; the parent SIGKILLs it at a random moment, reopens the log and checks that every
//! record up to the last one reported is there, intact and in order. Several rounds on the same
//! directory, so that each child also resumes a log that was killed before.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;

use super::*;

const CHILD_DIR: &str = "BERTH_STORE_KILL9_DIR";
const CHILD_POLICY: &str = "BERTH_STORE_KILL9_INTERVAL";
const CHILD_TEST: &str = "store::crash_tests::child_appends_until_killed";
/// A child that was never killed stops here rather than run forever.
const CHILD_LIMIT: u64 = 5_000_000;

fn config(dir: &Path, interval: bool) -> LogConfig {
    let fsync = if interval {
        FsyncPolicy::Interval(Duration::from_millis(2))
    } else {
        FsyncPolicy::Never
    };
    LogConfig {
        dir: dir.to_path_buf(),
        segment_size: 64 << 10,
        fsync,
        lacking_room: Default::default(),
    }
}

/// Record `n`: a kind and a body that say which record it is, of varying length.
fn record(n: u64) -> (u8, Vec<u8>) {
    let mut body = n.to_le_bytes().to_vec();
    body.resize(8 + (n as usize * 13) % 300, (n % 253) as u8);
    ((n % 256) as u8, body)
}

#[test]
#[ignore = "the child process of kill9_at_a_random_moment_keeps_every_reported_record"]
fn child_appends_until_killed() {
    let dir = std::env::var(CHILD_DIR).expect("run only by the kill -9 test");
    let interval = std::env::var(CHILD_POLICY).is_ok();
    let mut next = 0u64;
    let (mut log, _) = Log::open(config(Path::new(&dir), interval), |_, _, _| next += 1).unwrap();
    let mut out = std::io::stdout().lock();
    while next < CHILD_LIMIT {
        let (kind, body) = record(next);
        log.append(kind, &body).unwrap();
        // One write per line, well under PIPE_BUF: a kill never leaves half a number.
        out.write_all(format!("appended {next}\n").as_bytes())
            .unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

/// Kills the child if the parent test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill9_at_a_random_moment_keeps_every_reported_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut expected_at_least = 0u64;
    for round in 0..4 {
        let interval = round % 2 == 1;
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                CHILD_TEST,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if interval {
            command.env(CHILD_POLICY, "1");
        }
        let mut child = KillOnDrop(command.spawn().unwrap());
        let stdout = child.0.stdout.take().unwrap();
        let kill_after = rng.gen_range(1..40_000u64);
        let mut reported = 0u64;
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            // libtest may print the test's name on the same line, before the first report.
            let line = line.unwrap();
            let Some(at) = line.find("appended ") else {
                continue;
            };
            let n: u64 = line[at + "appended ".len()..].parse().unwrap();
            let want = last.map_or(expected_at_least, |l| l + 1);
            assert_eq!(
                n, want,
                "round {round}: the child resumes after the last record and counts up"
            );
            last = Some(n);
            reported += 1;
            if reported == kill_after {
                child.0.kill().unwrap(); // SIGKILL; keep reading what it reported before dying.
            }
        }
        let status = child.0.wait().unwrap();
        assert!(
            reported >= kill_after,
            "round {round}: the child stopped early ({status:?})"
        );
        let last = last.unwrap();

        let mut replayed = 0u64;
        let (_, report) = Log::open(config(dir.path(), false), |_, kind, body| {
            assert_eq!(
                (kind, body),
                (record(replayed).0, &record(replayed).1[..]),
                "record {replayed}"
            );
            replayed += 1;
        })
        .unwrap();
        assert!(
            replayed > last,
            "round {round}: reported {last}, replayed only {replayed}"
        );
        assert!(
            report.damaged.is_empty() && report.sealed.is_empty() && report.bad_segments.is_empty(),
            "{report:?}"
        );
        expected_at_least = replayed;
    }
}
