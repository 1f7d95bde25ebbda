//! Start the real `berth` binary for black-box tests and stop it cleanly.
//!
//! The broker listens on an ephemeral port and announces it on stdout with one line,
//! `berth listening on 127.0.0.1:PORT`; we block on that line (with a deadline) instead of
//! guessing a port or sleeping. Its stderr is kept so that a failing test can show it.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const READY_PREFIX: &str = "berth listening on ";

pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub cores: usize,
    stderr: Arc<Mutex<String>>,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    /// A broker with `cores` cores on 127.0.0.1, an ephemeral port and a temporary data dir.
    pub fn start(cores: usize) -> Broker {
        Self::start_with(cores, &[])
    }

    pub fn start_with(cores: usize, extra_args: &[&str]) -> Broker {
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--cores",
                &cores.to_string(),
                "--log",
                "info",
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        // Read stdout on a thread so the wait for the ready line can have a deadline; keep
        // draining afterwards so the broker never blocks on a full pipe.
        let (ready_tx, ready_rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("stdout pipe");
        thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });

        let mut broker = Broker {
            child: Some(child),
            addr: ([127, 0, 0, 1], 0).into(),
            cores,
            stderr,
            _data_dir: data_dir,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => {
                broker.addr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address {addr:?} in ready line: {e}"));
                broker
            }
            Err(_) => {
                let status = broker
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "berth printed no ready line (exit status: {status:?})\n{}",
                    broker.stderr_text()
                );
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status; panics if the broker does not exit in time.
    pub fn shutdown(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker already stopped");
        let pid = child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(status) => status.expect("wait for berth"),
            Err(_) => {
                // The waiting thread owns the child; kill it by pid.
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!(
                    "berth still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// SIGTERM and assert the contract's clean shutdown: exit status 0.
    pub fn assert_clean_shutdown(self) {
        let stderr = Arc::clone(&self.stderr);
        let status = self.shutdown();
        assert!(
            status.success(),
            "berth exited with {status} on SIGTERM\n{}",
            stderr.lock().unwrap()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// FNV-1a 64 of the client id bytes modulo the core count: the contract's owner core.
pub fn owner_core(client_id: &str, cores: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % cores as u64) as usize
}

/// The first id `prefix-N` owned by `core`.
pub fn id_owned_by(core: usize, cores: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| owner_core(id, cores) == core)
        .expect("some id hashes there")
}

#[test]
fn fnv_matches_reference_vectors() {
    // Published FNV-1a 64 test vectors: "" -> offset basis, "a" -> 0xaf63dc4c8601ec8c.
    assert_eq!(
        owner_core("", usize::MAX),
        (0xcbf2_9ce4_8422_2325u64 % usize::MAX as u64) as usize
    );
    assert_eq!(
        owner_core("a", usize::MAX),
        (0xaf63_dc4c_8601_ec8cu64 % usize::MAX as u64) as usize
    );
    assert_eq!(
        owner_core("foobar", usize::MAX),
        (0x8594_4171_f739_67e8u64 % usize::MAX as u64) as usize
    );
}
