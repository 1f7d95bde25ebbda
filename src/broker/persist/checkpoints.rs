//! What one core keeps between the steps of its checkpoints, and between checkpoints: the
//! running one, the id of the next, the size the last one left, the limits of a step and
//! an ABORT still owed.
//!
//! Invariants: at most one checkpoint runs at a time; ids grow, and after a recovery the
//! next id is past every id in the log; an owed ABORT names the last id handed out, and
//! the `Broker` appends no other record before it. Nothing here writes to
//! the log: the `Broker` does.

use super::{CheckpointLimits, Run};

pub(crate) struct Checkpoints {
    /// Log segments the last checkpoint left (its size, for the next trigger).
    segments: usize,
    next_id: u64,
    /// The checkpoint in progress, advanced a step at a time (`checkpoint_step`).
    run: Option<Box<Run>>,
    limits: CheckpointLimits,
    /// A checkpoint that failed after its BEGIN (disk full) owes an ABORT, written before
    /// any other record.
    abort_pending: Option<u64>,
}

impl Default for Checkpoints {
    fn default() -> Checkpoints {
        Checkpoints {
            segments: 1,
            next_id: 1,
            run: None,
            limits: CheckpointLimits::default(),
            abort_pending: None,
        }
    }
}

impl Checkpoints {
    /// Whether a log of `segment_count` segments has grown enough since the last
    /// checkpoint to rewrite it: twice what that left, and at least four segments.
    pub fn grown_enough(&self, segment_count: usize) -> bool {
        segment_count >= (2 * self.segments + 2).max(4)
    }

    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    pub fn run(&self) -> Option<&Run> {
        self.run.as_deref()
    }

    pub fn run_mut(&mut self) -> Option<&mut Run> {
        self.run.as_deref_mut()
    }

    /// The running checkpoint, taken out for a step (put back with `resume`).
    pub fn take_run(&mut self) -> Option<Box<Run>> {
        self.run.take()
    }

    /// The checkpoint taken out for a step has steps left.
    pub fn resume(&mut self, run: Box<Run>) {
        self.run = Some(run);
    }

    /// A checkpoint ended, leaving a log of `segment_count` segments.
    pub fn ended(&mut self, segment_count: usize) {
        self.segments = segment_count;
    }

    /// The id of a checkpoint that begins now.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Recovery: the log's checkpoints used ids below `next_id`.
    pub fn recovered(&mut self, next_id: u64) {
        self.next_id = next_id;
    }

    /// The checkpoint of the last BEGIN was abandoned: it owes an ABORT.
    pub fn abandoned(&mut self) {
        self.abort_pending = self.next_id.checked_sub(1);
    }

    /// The id of the ABORT owed, if any.
    pub fn abort_pending(&self) -> Option<u64> {
        self.abort_pending
    }

    /// The ABORT owed is in the log.
    pub fn abort_written(&mut self) {
        self.abort_pending = None;
    }

    pub fn limits(&self) -> CheckpointLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: CheckpointLimits) {
        self.limits = limits;
    }
}
