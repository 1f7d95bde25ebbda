//! The flusher thread: msyncs what was appended, off the executor (an `MS_SYNC` takes 10-23 ms
//! here), and resolves [`Durable`] futures. Under `Interval` it runs every interval; under
//! `Always` it runs whenever a `Durable` waits, and one msync answers every caller that came
//! before it started (group commit). Futures are woken from this thread with their own waker,
//! so they work on glommio, in `block_on`, anywhere.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memmap2::MmapRaw;

use super::{FsyncPolicy, Position, StoreError};
use crate::histogram::{Histogram, FSYNC_SECONDS};

pub struct Flusher {
    /// End of the appended data in the head segment. Stored by the executor after each append
    /// (the only per-append cost of durability); the head segment id changes only under `state`.
    head_offset: AtomicU32,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    head_segment: u64,
    /// Segments that may hold bytes not yet synced, with the end of their data once sealed.
    segments: BTreeMap<u64, Unsynced>,
    synced: Position,
    waiters: BTreeMap<u64, (Position, Waker)>,
    next_waiter: u64,
    /// The first msync failure; every later `Durable` reports it (a failed msync may have
    /// dropped dirty pages, so nothing after it can be promised).
    failure: Option<(PathBuf, io::ErrorKind, String)>,
    closing: bool,
    closed: bool,
    /// How long each round's msyncs took (rounds that had something to sync), read by
    /// `/metrics` (`berth_log_fsync_seconds`).
    latency: Histogram,
}

struct Unsynced {
    map: Arc<MmapRaw>,
    path: PathBuf,
    sealed_end: Option<u32>,
}

impl Flusher {
    /// Starts the flusher thread for a log whose data up to `head` is already durable.
    pub fn start(
        policy: FsyncPolicy,
        head: Position,
    ) -> Result<(Arc<Flusher>, JoinHandle<()>), StoreError> {
        let flusher = Arc::new(Flusher {
            head_offset: AtomicU32::new(head.offset),
            state: Mutex::new(State {
                head_segment: head.segment,
                segments: BTreeMap::new(),
                synced: head,
                waiters: BTreeMap::new(),
                next_waiter: 0,
                failure: None,
                closing: false,
                closed: false,
                latency: Histogram::new(FSYNC_SECONDS),
            }),
            wake: Condvar::new(),
        });
        let thread_flusher = flusher.clone();
        let thread = std::thread::Builder::new()
            .name("berth-store-sync".into())
            .spawn(move || thread_flusher.run(policy))
            .map_err(|e| StoreError::io("spawn flusher thread", "", e))?;
        Ok((flusher, thread))
    }

    /// Called by the executor after each append.
    #[inline]
    pub fn appended(&self, head_offset: u32) {
        self.head_offset.store(head_offset, Ordering::Release);
    }

    /// Called by the executor when `segment` becomes the head: the previous head is sealed at
    /// `sealed_end`. Also used at open to register the head segment.
    pub fn rolled(
        &self,
        sealed_end: Option<u32>,
        segment: u64,
        map: Arc<MmapRaw>,
        path: PathBuf,
        offset: u32,
    ) {
        let mut state = self.lock();
        let previous = state.head_segment;
        if let (Some(end), Some(old)) = (sealed_end, state.segments.get_mut(&previous)) {
            old.sealed_end = Some(end);
        }
        state.head_segment = segment;
        state.segments.insert(
            segment,
            Unsynced {
                map,
                path,
                sealed_end: None,
            },
        );
        self.head_offset.store(offset, Ordering::Release);
    }

    /// Forgets segments older than `segment` (deleted: nothing left to sync).
    pub fn removed_before(&self, segment: u64) {
        let mut state = self.lock();
        state.segments = state.segments.split_off(&segment);
    }

    /// A future that resolves once everything before `target` is synced.
    pub fn durable(self: &Arc<Self>, target: Position) -> Durable {
        Durable {
            wait: Some(Wait {
                flusher: self.clone(),
                target,
                id: None,
            }),
        }
    }

    /// Asks the thread for a last flush and to stop; the caller joins it.
    pub fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_all();
    }

    /// A copy of the msync latencies so far.
    pub fn latency(&self) -> Histogram {
        self.lock().latency.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self, policy: FsyncPolicy) {
        let interval = match policy {
            FsyncPolicy::Interval(every) => Some(every),
            _ => None,
        };
        let mut next_tick = interval.map(|every| Instant::now() + every);
        let mut state = self.lock();
        loop {
            let due = next_tick.is_some_and(|t| Instant::now() >= t);
            if state.closing || due || !state.waiters.is_empty() {
                let closing = state.closing;
                drop(state);
                self.round();
                state = self.lock();
                if closing {
                    state.closed = true;
                    let wakers: Vec<Waker> = std::mem::take(&mut state.waiters)
                        .into_values()
                        .map(|(_, w)| w)
                        .collect();
                    drop(state);
                    wakers.into_iter().for_each(Waker::wake);
                    return;
                }
                if due {
                    next_tick = interval.map(|every| Instant::now() + every);
                }
                continue;
            }
            state = match next_tick {
                Some(t) => {
                    let timeout = t
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_micros(1));
                    self.wake
                        .wait_timeout(state, timeout)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// One group commit: msync everything from the last synced position to the head as it is
    /// now, then wake every waiter whose target that covers.
    fn round(&self) {
        let (head, ranges) = {
            let state = self.lock();
            let head = Position {
                segment: state.head_segment,
                offset: self.head_offset.load(Ordering::Acquire),
            };
            let synced = state.synced;
            let ranges: Vec<(Arc<MmapRaw>, PathBuf, usize, usize)> = state
                .segments
                .range(synced.segment..=head.segment)
                .filter_map(|(&id, seg)| {
                    let start = if id == synced.segment {
                        synced.offset as usize
                    } else {
                        0
                    };
                    let end = if id == head.segment {
                        head.offset as usize
                    } else {
                        seg.sealed_end.map_or(seg.map.len(), |e| e as usize)
                    };
                    (end > start).then(|| (seg.map.clone(), seg.path.clone(), start, end))
                })
                .collect();
            (head, ranges)
        };
        let mut failure = None;
        let synced_any = !ranges.is_empty();
        let started = Instant::now();
        for (map, path, start, end) in ranges {
            if let Err(e) = map.flush_range(start, end - start) {
                failure = Some((path, e.kind(), e.to_string()));
                break;
            }
        }
        let took = started.elapsed();
        let wakers: Vec<Waker> = {
            let mut state = self.lock();
            if synced_any {
                state.latency.observe(took);
            }
            if state.failure.is_none() {
                state.failure = failure;
            }
            if state.failure.is_none() {
                state.synced = state.synced.max(head);
                let head_segment = state.head_segment;
                state
                    .segments
                    .retain(|&id, _| id >= head.segment.min(head_segment));
            }
            let synced = state.synced;
            let failed = state.failure.is_some();
            let done: Vec<u64> = state
                .waiters
                .iter()
                .filter(|(_, (target, _))| failed || *target <= synced)
                .map(|(&id, _)| id)
                .collect();
            done.into_iter()
                .filter_map(|id| state.waiters.remove(&id))
                .map(|(_, w)| w)
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Resolves once what was appended before [`Log::durable`](super::Log::durable) was called is
/// durable under the log's policy.
#[must_use = "a Durable does nothing unless awaited"]
pub struct Durable {
    wait: Option<Wait>,
}

struct Wait {
    flusher: Arc<Flusher>,
    target: Position,
    /// Set once registered with the flusher.
    id: Option<u64>,
}

impl Durable {
    /// A `Durable` that is ready at once (`Never` and `Interval`).
    pub fn ready() -> Durable {
        Durable { wait: None }
    }
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(wait) = self.wait.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut state = wait.flusher.lock();
        let outcome = if let Some((path, kind, message)) = &state.failure {
            Some(Err(StoreError::io(
                "msync",
                path.clone(),
                io::Error::new(*kind, message.clone()),
            )))
        } else if state.synced >= wait.target {
            Some(Ok(()))
        } else if state.closed {
            Some(Err(StoreError::Closed))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            if let Some(id) = wait.id.take() {
                state.waiters.remove(&id);
            }
            drop(state);
            self.wait = None;
            return Poll::Ready(outcome);
        }
        let id = *wait.id.get_or_insert_with(|| {
            state.next_waiter += 1;
            state.next_waiter
        });
        state.waiters.insert(id, (wait.target, cx.waker().clone()));
        drop(state);
        wait.flusher.wake.notify_one();
        Poll::Pending
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(Wait {
            flusher,
            id: Some(id),
            ..
        }) = &self.wait
        {
            flusher.lock().waiters.remove(id);
        }
    }
}
