//! The background thread that does the slow file work of one log, so that its executor never
//! waits on it: creating, allocating and prefaulting the next segment before it is needed, and
//! unmapping and deleting reclaimed ones. A plain thread (no runtime), so the log works the same
//! in a `#[test]`, a bench and the broker.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::format::SEGMENT_HEADER;
use super::segment::{free_bytes, Sealed, Segment};
use super::{RoomSignal, StoreError};

enum Job {
    /// Create segment `id` of `size` bytes and send it back once mapped and prefaulted.
    Prepare { id: u64, size: u64 },
    /// Unmap and delete a segment that is no longer needed.
    Retire(Sealed),
}

/// How long the thread waits before trying again to make a segment it could not make
/// (disk full): a retire in the meantime frees space and makes it try at once.
const RETRY: Duration = Duration::from_millis(500);

pub struct Worker {
    jobs: Option<Sender<Job>>,
    ready: Receiver<Result<Segment, StoreError>>,
    /// The id of the segment asked for and not yet taken.
    pending: Option<u64>,
    /// Set by the thread while it cannot make the pending segment (and retries), cleared
    /// once it has: the log then has only what is left of its head segment.
    lacking: RoomSignal,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(dir: PathBuf, durable: bool, lacking: RoomSignal) -> Result<Worker, StoreError> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        let thread_dir = dir.clone();
        let thread_lacking = lacking.clone();
        let thread = std::thread::Builder::new()
            .name("berth-store-prep".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    match job {
                        Job::Prepare { id, size } => {
                            let made = prepare_until_made(
                                &thread_dir,
                                id,
                                size,
                                durable,
                                &job_rx,
                                &ready_tx,
                                &thread_lacking,
                            );
                            match made {
                                Some(segment) => {
                                    if ready_tx.send(Ok(segment)).is_err() {
                                        return;
                                    }
                                }
                                None => return,
                            }
                        }
                        Job::Retire(segment) => retire(segment),
                    }
                }
            })
            .map_err(|e| StoreError::io("spawn segment thread for", dir, e))?;
        Ok(Worker {
            jobs: Some(jobs),
            ready,
            pending: None,
            lacking,
            thread: Some(thread),
        })
    }

    /// Starts preparing segment `id` unless it is already on its way.
    pub fn prepare(&mut self, id: u64, size: u64) {
        if self.pending == Some(id) {
            return;
        }
        debug_assert!(self.pending.is_none(), "one segment is prepared at a time");
        if self.send(Job::Prepare { id, size }) {
            self.pending = Some(id);
        }
    }

    /// Takes segment `id`, waiting for it only while the background thread is still making
    /// it (a log appending faster than segments can be prefaulted). While the thread cannot
    /// make it (disk full) this fails at once, never waits: the thread keeps trying, and a
    /// later call takes the segment once space is back.
    pub fn take(&mut self, id: u64, size: u64) -> Result<Segment, StoreError> {
        self.prepare(id, size);
        let mut failed = None;
        loop {
            let next = if self.lacking.is_set() || failed.is_some() {
                match self.ready.try_recv() {
                    Ok(made) => made,
                    Err(mpsc::TryRecvError::Empty) => {
                        return Err(failed.unwrap_or(StoreError::NoRoom));
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return Err(StoreError::Closed),
                }
            } else {
                match self.ready.recv() {
                    Ok(made) => made,
                    Err(_) => return Err(StoreError::Closed),
                }
            };
            match next {
                Ok(segment) => {
                    self.pending = None;
                    return Ok(segment);
                }
                // The thread goes on trying; the pending id stays asked for.
                Err(error) => failed = Some(error),
            }
        }
    }

    /// Whether the thread currently cannot make the next segment.
    pub fn lacking(&self) -> bool {
        self.lacking.is_set()
    }

    /// Hands a segment over for unmapping and deletion in the background.
    pub fn retire(&mut self, segment: Sealed) {
        let Some(jobs) = &self.jobs else {
            return retire(segment);
        };
        if let Err(mpsc::SendError(Job::Retire(segment))) = jobs.send(Job::Retire(segment)) {
            retire(segment); // The thread is gone: do it here rather than leak the file.
        }
    }

    fn send(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }
}

impl Drop for Worker {
    /// Finishes the queued jobs (deletions included) before returning.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes segment `id`, trying again every [`RETRY`] (or at once after a retire) while it
/// cannot; the first failure of an episode is sent to the log (so a `take` waiting for it
/// wakes), raises `lacking` and is logged once, with the free space; success clears it.
/// `None` once the log is gone.
fn prepare_until_made(
    dir: &Path,
    id: u64,
    size: u64,
    durable: bool,
    jobs: &Receiver<Job>,
    ready: &Sender<Result<Segment, StoreError>>,
    lacking: &RoomSignal,
) -> Option<Segment> {
    let mut failures = 0u64;
    loop {
        match Segment::create(dir, id, size, durable) {
            Ok(mut segment) => {
                segment.prefault_from(SEGMENT_HEADER);
                if failures > 0 {
                    lacking.set(false);
                    tracing::warn!(
                        dir = %dir.display(),
                        free_bytes = free_bytes(dir),
                        attempts = failures,
                        "log: space is back, the next segment is made: QoS 1/2 publishes are accepted again"
                    );
                }
                return Some(segment);
            }
            Err(error) => {
                if failures == 0 {
                    lacking.set(true);
                    tracing::error!(
                        dir = %dir.display(),
                        free_bytes = free_bytes(dir),
                        segment_bytes = size,
                        %error,
                        "log: cannot make the next segment (disk full?): QoS 1/2 publishes are refused until it can be made; trying again every 500 ms"
                    );
                    if ready.send(Err(error)).is_err() {
                        return None;
                    }
                }
                failures += 1;
            }
        }
        match jobs.recv_timeout(RETRY) {
            Ok(Job::Retire(segment)) => retire(segment),
            Ok(Job::Prepare { .. }) => {} // One segment at a time: it is this one.
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn retire(segment: Sealed) {
    let path = segment.path().to_path_buf();
    drop(segment); // Unmap first: the file is gone for good once the last map goes.
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a reclaimed log segment");
    }
}
