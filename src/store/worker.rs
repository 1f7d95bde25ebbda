//! The background thread that does the slow file work of one log, so that its executor never
//! waits on it: creating, allocating and prefaulting the next segment before it is needed, and
//! unmapping and deleting reclaimed ones. A plain thread (no runtime), so the log works the same
//! in a `#[test]`, a bench and the broker.

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::format::SEGMENT_HEADER;
use super::segment::{Sealed, Segment};
use super::StoreError;

enum Job {
    /// Create segment `id` of `size` bytes and send it back once mapped and prefaulted.
    Prepare { id: u64, size: u64 },
    /// Unmap and delete a segment that is no longer needed.
    Retire(Sealed),
}

pub struct Worker {
    jobs: Option<Sender<Job>>,
    ready: Receiver<Result<Segment, StoreError>>,
    /// The id of the segment asked for and not yet taken.
    pending: Option<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(dir: PathBuf, durable: bool) -> Result<Worker, StoreError> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("berth-store-prep".into())
            .spawn(move || {
                for job in job_rx {
                    match job {
                        Job::Prepare { id, size } => {
                            let made =
                                Segment::create(&thread_dir, id, size, durable).map(|mut seg| {
                                    seg.prefault_from(SEGMENT_HEADER);
                                    seg
                                });
                            if ready_tx.send(made).is_err() {
                                return;
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

    /// Takes segment `id`, waiting for it only if the background thread has not finished it
    /// yet (a log appending faster than segments can be prefaulted).
    pub fn take(&mut self, id: u64, size: u64) -> Result<Segment, StoreError> {
        self.prepare(id, size);
        self.pending = None;
        match self.ready.recv() {
            Ok(made) => made,
            Err(_) => Err(StoreError::Closed),
        }
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

fn retire(segment: Sealed) {
    let path = segment.path().to_path_buf();
    drop(segment); // Unmap first: the file is gone for good once the last map goes.
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a reclaimed log segment");
    }
}
