//! Keeping the log small: checkpoints that restate the live state at the head of the log
//! so the segments behind it can be deleted, and the promotion of a session that becomes
//! persistent after the fact.
//!
//! A checkpoint runs a step at a time ([`Broker::checkpoint_step`]), each bounded by
//! [`CheckpointLimits`], with the core's ordinary work (and its ordinary records) in
//! between: BEGIN and ORIGINS; then every message a session holds, as a copy (MESSAGE with
//! no targets) when its record lies in a segment the checkpoint will delete, or as
//! MESSAGE_AT (where its record stays) otherwise; every retained message; one SNAPSHOT per
//! persistent session that existed at BEGIN, each followed by its WILL; every unconfirmed
//! QOS2_ROUTING; END. Only after END are the older segments removed. Each restatement is
//! true when it is written, and every change after it is an ordinary record after it, so
//! recovery can apply both in log order (ARCHITECTURE.md, "Checkpoints").
//!
//! Invariant: a session that existed at BEGIN is either restated before END or ended
//! before END; `Run::pending` counts those still owed, and END waits for zero.

use std::sync::Arc;
use std::time::Instant;

use super::journal::{self, Record};
use super::publish::publish_for_log;
use super::{Broker, Slot};
use crate::session::state::Seq;
use crate::session::Message;
use crate::store::{Position, StoreError};
use restate::snapshot_of;

/// What a checkpoint did.
#[derive(Debug, Clone, Default)]
pub struct CheckpointReport {
    pub sessions: usize,
    /// Messages copied out of segments the checkpoint deleted.
    pub messages: usize,
    /// Messages left where they were (MESSAGE_AT).
    pub kept: usize,
    pub retained: usize,
    pub bytes_freed: u64,
    /// Steps it took (BEGIN's included).
    pub steps: usize,
}

/// How much one step of a checkpoint may do: the executor runs other tasks between steps.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointLimits {
    /// Sessions looked at per step.
    pub sessions: usize,
    /// Bytes of records written per step (a copied message counts its payload).
    pub bytes: usize,
    /// Session map entries one walk passes (it collects the ids a checkpoint still has
    /// to look at; a walk resumes by skipping the entries walked before, so it costs the
    /// position it starts from, and fewer, longer walks keep that small).
    pub walk: usize,
}

impl Default for CheckpointLimits {
    fn default() -> CheckpointLimits {
        CheckpointLimits {
            sessions: 512,
            bytes: 2 << 20,
            walk: 4 << 10,
        }
    }
}

/// How fast a checkpoint writes at most, on average: the pause after a step is what it
/// wrote at this rate. The log prepares each next segment (allocated and prefaulted) on a
/// background thread, 64 MiB in about 45 ms on a quiet machine; a checkpoint that wrote
/// faster would catch up with it and wait in the middle of a step.
const WRITE_RATE: u64 = 256 << 20;

/// The shortest pause between steps: time for the executor to poll its sockets.
const MIN_PAUSE: std::time::Duration = std::time::Duration::from_micros(50);

/// What a record costs a segment beyond its payload (header, topic, properties), for
/// the estimate of how full of live messages the old segments are.
const RECORD_OVERHEAD: u64 = 64;

mod checkpoints;
mod restate;

pub(super) use checkpoints::Checkpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Messages,
    Retained,
    Sessions,
    Finish,
}

/// A checkpoint in progress.
pub(super) struct Run {
    id: u64,
    /// What `Slot::checkpoint` holds for a session this run has looked at or that was
    /// made during it.
    pub(super) mark: u32,
    begin: Position,
    /// Sessions with a number from here on were opened (or promoted) after BEGIN: their
    /// own SESSION_OPEN / SNAPSHOT is after BEGIN.
    begin_sid: u64,
    /// Messages stored in segments before this one are copied; the others stay where
    /// they are, and END deletes the segments before this one.
    keep_from: u64,
    phase: Phase,
    /// Messages held at BEGIN that had a record in the log.
    messages: Vec<Seq>,
    retained: Vec<Arc<Message>>,
    /// Where the phase has got to (in the session phase: sessions passed in the map's
    /// iteration order, which the map may change; `pending` is what decides the end).
    cursor: usize,
    /// Ids of sessions the walk found not looked at yet, waiting for their turn.
    keys: Vec<bytestring::ByteString>,
    /// Sessions of the pass so far that the run had not looked at yet.
    found_in_pass: usize,
    /// Whole passes in a row that found none.
    empty_passes: u32,
    /// Sessions that existed at BEGIN and were neither looked at nor ended since.
    pub(super) pending: usize,
    /// Bytes the last step wrote.
    written: u64,
    report: CheckpointReport,
}

impl Broker {
    /// Whether the log has grown enough since the last checkpoint to rewrite it: twice
    /// what the last checkpoint left, and at least four segments. This bounds the disk
    /// to a small multiple of the live state, however long a session stays away.
    /// Not while the log is down to its reserve (disk full).
    pub fn checkpoint_due(&self) -> bool {
        !self.checkpoints.running()
            && self.checkpoints.grown_enough(self.journal.segment_count())
            && self.journal.room_for_messages().is_none()
    }

    /// Whether a checkpoint has begun and not yet ended.
    pub fn checkpoint_running(&self) -> bool {
        self.checkpoints.running()
    }

    /// How long to let other work run before the next step of the running checkpoint:
    /// long enough for the executor to poll its sockets, and for what the last step wrote
    /// to take [`WRITE_RATE`] on average.
    pub fn checkpoint_pause(&self) -> std::time::Duration {
        let written = self.checkpoints.run().map_or(0, |run| run.written);
        MIN_PAUSE.max(std::time::Duration::from_secs_f64(
            written as f64 / WRITE_RATE as f64,
        ))
    }

    /// How much each step of a checkpoint may do.
    pub fn set_checkpoint_limits(&mut self, limits: CheckpointLimits) {
        self.checkpoints.set_limits(limits);
    }

    /// Runs a whole checkpoint in one go (tests, benches, tools): the steps of
    /// [`Broker::checkpoint_step`] with nothing in between.
    pub fn checkpoint(&mut self, now: Instant) -> Result<CheckpointReport, StoreError> {
        loop {
            if let Some(report) = self.checkpoint_step(now)? {
                return Ok(report);
            }
        }
    }

    /// One bounded step of a checkpoint, beginning one if none is running. Returns the
    /// report once END is written and the old segments are deleted, `None` while steps
    /// remain; the caller lets other work run between steps. An error abandons the
    /// checkpoint (ABORT is written if it can be): the state in memory is unchanged, and
    /// recovery reads the log as if it had never begun.
    pub fn checkpoint_step(
        &mut self,
        now: Instant,
    ) -> Result<Option<CheckpointReport>, StoreError> {
        let head = self.journal.head();
        let result = match self.checkpoints.take_run() {
            // Down to its reserve (disk full), the log keeps what is left for the records
            // that follow sent data: a checkpoint is abandoned, and not begun.
            _ if self.journal.room_for_messages().is_some() => Err(StoreError::NoRoom),
            None => self.begin_checkpoint().map(|run| (run, false)),
            Some(mut run) => self.advance(&mut run, now).map(|done| (run, done)),
        };
        match result {
            Ok((mut run, false)) => {
                run.report.steps += 1;
                run.written = written_since(head, self.journal.head(), self.journal.as_ref());
                self.checkpoints.resume(run);
                Ok(None)
            }
            Ok((run, true)) => {
                let mut report = run.report;
                report.steps += 1;
                self.checkpoints.ended(self.journal.segment_count());
                self.counters.checkpoints += 1;
                Ok(Some(report))
            }
            Err(error) => {
                // A BEGIN with no END makes recovery keep only what it read before it:
                // the ABORT must precede every later record, so one that cannot be
                // written now (disk full) is written before the next record that can.
                self.checkpoints.abandoned();
                self.write_pending_abort();
                Err(error)
            }
        }
    }

    /// Appends ABORT for a checkpoint abandoned after its BEGIN, if one is owed. False
    /// while it cannot be written (nothing else may be appended then).
    pub(super) fn write_pending_abort(&mut self) -> bool {
        let Some(id) = self.checkpoints.abort_pending() else {
            return true;
        };
        let written = self.append(&Record::CheckpointAbort { id }).is_ok();
        if written {
            self.checkpoints.abort_written();
        }
        written
    }

    /// BEGIN, ORIGINS, and the lists the later steps work through.
    fn begin_checkpoint(&mut self) -> Result<Box<Run>, StoreError> {
        let id = self.checkpoints.next_id();
        let begin = self.append(&Record::CheckpointBegin {
            id,
            next_seq: self.messages.next_seq,
            next_sid: self.next_sid,
        })?;
        self.append(&Record::Origins(self.exactly_once.origins().list()))?;
        let messages: Vec<(Seq, Position, u32)> = self
            .messages
            .iter()
            .filter_map(|(seq, e)| Some((seq, e.pos?, e.size)))
            .collect();
        let keep_from = self.keep_from(begin, &messages);
        let retained = self
            .retained
            .values()
            .filter(|m| super::retained::outlives_restart(&m.topic))
            .cloned()
            .collect();
        let mark = (id as u32).max(1);
        Ok(Box::new(Run {
            id,
            mark,
            begin,
            begin_sid: self.next_sid,
            keep_from,
            phase: Phase::Messages,
            messages: messages.into_iter().map(|m| m.0).collect(),
            retained,
            cursor: 0,
            keys: Vec::new(),
            found_in_pass: 0,
            empty_passes: 0,
            pending: self.sessions.len(),
            written: 0,
            report: CheckpointReport::default(),
        }))
    }

    /// The oldest segment to keep: the lowest one from which on the segments before
    /// BEGIN are at least half live messages (so keeping them costs at most twice their
    /// live bytes); messages before it are copied.
    fn keep_from(&self, begin: Position, messages: &[(Seq, Position, u32)]) -> u64 {
        let count = self.journal.segment_count().max(1) as u64;
        let first = (self.journal.head().segment + 1).saturating_sub(count);
        if begin.segment <= first {
            return begin.segment;
        }
        let segment_bytes = (self.journal.disk_bytes() / count).max(1);
        let mut live = vec![0u64; (begin.segment - first) as usize];
        for (_, pos, size) in messages {
            if let Some(bytes) = pos
                .segment
                .checked_sub(first)
                .and_then(|i| live.get_mut(i as usize))
            {
                *bytes += u64::from(*size) + RECORD_OVERHEAD;
            }
        }
        let mut keep_from = begin.segment;
        let mut kept = 0;
        for (i, bytes) in live.iter().enumerate().rev() {
            kept += bytes;
            let segment = first + i as u64;
            if 2 * kept >= (begin.segment - segment) * segment_bytes {
                keep_from = segment;
            }
        }
        keep_from
    }

    /// One step after BEGIN; true once END is written.
    fn advance(&mut self, run: &mut Run, now: Instant) -> Result<bool, StoreError> {
        let limits = self.checkpoints.limits();
        let mut budget = Budget {
            items: limits.sessions.max(1),
            bytes: limits.bytes.max(1),
            walked: false,
        };
        loop {
            match run.phase {
                Phase::Messages => self.restate_messages(run, &mut budget)?,
                Phase::Retained => self.restate_retained(run, &mut budget)?,
                Phase::Sessions => self.restate_sessions(run, &mut budget, now)?,
                Phase::Finish => {
                    self.finish(run)?;
                    return Ok(true);
                }
            }
            if budget.spent() {
                return Ok(false);
            }
        }
    }

    fn restate_messages(&mut self, run: &mut Run, budget: &mut Budget) -> Result<(), StoreError> {
        while let Some(&seq) = run.messages.get(run.cursor) {
            if budget.spent() {
                return Ok(());
            }
            run.cursor += 1;
            budget.items -= 1;
            let Some((pos, size)) = self.messages.get(seq).and_then(|e| Some((e.pos?, e.size)))
            else {
                continue; // let go since BEGIN
            };
            if pos >= run.begin {
                continue; // copied since BEGIN (a promotion)
            }
            if pos.segment < run.keep_from {
                match self.copy_message(seq, pos) {
                    Ok(bytes) => {
                        budget.take(bytes);
                        run.report.messages += 1;
                    }
                    Err(StoreError::NoRecord(_)) | Err(StoreError::Corrupt { .. }) => {
                        tracing::error!(core = %self.id, seq, ?pos, "checkpoint cannot copy a message");
                    }
                    Err(error) => return Err(error),
                }
            } else {
                self.append(&Record::MessageAt {
                    seq,
                    at: pos,
                    payload_len: size,
                })?;
                budget.take(32);
                run.report.kept += 1;
            }
        }
        run.phase = Phase::Retained;
        run.cursor = 0;
        Ok(())
    }

    fn restate_retained(&mut self, run: &mut Run, budget: &mut Budget) -> Result<(), StoreError> {
        while let Some(message) = run.retained.get(run.cursor).cloned() {
            if budget.spent() {
                return Ok(());
            }
            run.cursor += 1;
            budget.items -= 1;
            // One replaced or cleared since BEGIN was journaled then.
            if !self
                .retained
                .get(&message.topic)
                .is_some_and(|current| Arc::ptr_eq(current, &message))
            {
                continue;
            }
            self.append(&Record::Retained {
                expires_ms: message.expires_at.map_or(0, |at| self.clock.unix_ms(at)),
                publisher: message.publisher.clone(),
                publish: journal::encode_publish(&publish_for_log(&message)),
            })?;
            budget.take(message.payload.len());
            run.report.retained += 1;
        }
        run.retained = Vec::new();
        run.phase = Phase::Sessions;
        run.cursor = 0;
        Ok(())
    }

    /// Restates the sessions that existed at BEGIN: each persistent one not looked at yet
    /// gets its SNAPSHOT, then its WILL. The session map is walked in its own order,
    /// `CheckpointLimits::walk` entries at a time from where the last walk stopped, collecting the
    /// ids of sessions not looked at; later steps take them a few at a time. The map's
    /// order can change between steps (it grows, or rehashes in place), so a pass can
    /// miss a session: passes repeat until every session that existed at BEGIN was looked
    /// at or has ended (`pending` is zero).
    fn restate_sessions(
        &mut self,
        run: &mut Run,
        budget: &mut Budget,
        now: Instant,
    ) -> Result<(), StoreError> {
        if run.keys.is_empty() && run.pending > 0 {
            if budget.walked {
                budget.items = 0; // one walk per step
                return Ok(());
            }
            budget.walked = true;
            self.collect_keys(run);
        }
        let Broker {
            sessions,
            journal,
            scratch,
            wills,
            clock,
            ..
        } = self;
        let mut append = |record: &Record| {
            scratch.clear();
            record.encode(scratch);
            journal
                .append(record.kind(), scratch)
                .map(|_| scratch.len())
        };
        while run.pending > 0 && !budget.spent() {
            let Some(key) = run.keys.pop() else {
                break;
            };
            budget.items -= 1;
            let Some(slot) = sessions.get_mut(&key) else {
                continue; // ended since
            };
            if slot.checkpoint == run.mark {
                continue;
            }
            slot.checkpoint = run.mark;
            run.pending -= 1;
            let Some(sid) = slot.sid.filter(|&sid| sid < run.begin_sid) else {
                continue; // not persistent, or restated by its own records after BEGIN
            };
            let bytes = append(&Record::Snapshot(snapshot_of(*clock, slot, now)))?;
            budget.take(bytes);
            if let Some((delay_secs, publish)) = wills.logged(sid) {
                let bytes = append(&Record::Will {
                    sid,
                    delay_secs: *delay_secs,
                    publish: publish.clone(),
                })?;
                budget.take(bytes);
            }
            run.report.sessions += 1;
        }
        if run.pending == 0 {
            run.keys = Vec::new();
            run.phase = Phase::Finish;
        }
        Ok(())
    }

    /// The next `CheckpointLimits::walk` entries of the session map's walk: the ids of those not
    /// looked at yet. At the end of a pass, a pass that found none twice in a row while
    /// `pending` says otherwise means the count is wrong: the checkpoint finishes.
    fn collect_keys(&self, run: &mut Run) {
        let mut walked = 0;
        let mut exhausted = true;
        let walk = self.checkpoints.limits().walk.max(1);
        for (key, slot) in self.sessions.iter().skip(run.cursor) {
            if walked == walk {
                exhausted = false;
                break;
            }
            walked += 1;
            if slot.checkpoint != run.mark {
                run.keys.push(key.clone());
            }
        }
        run.cursor += walked;
        run.found_in_pass += run.keys.len();
        if exhausted {
            run.empty_passes = if run.found_in_pass == 0 {
                run.empty_passes + 1
            } else {
                0
            };
            if run.empty_passes >= 2 {
                debug_assert!(false, "checkpoint: {} sessions pending", run.pending);
                tracing::warn!(core = %self.id, pending = run.pending, "checkpoint: sessions counted but not found");
                run.pending = 0;
            }
            run.cursor = 0;
            run.found_in_pass = 0;
        }
    }

    /// Every unconfirmed inbound QoS 2 message (now that every session is restated), END,
    /// and the deletion of the segments nothing needs any more.
    fn finish(&mut self, run: &mut Run) -> Result<(), StoreError> {
        for record in self.exactly_once.unconfirmed_records() {
            self.append(&record)?;
        }
        self.append(&Record::CheckpointEnd { id: run.id })?;
        run.report.bytes_freed = self.journal.remove_segments_before(run.keep_from)?;
        Ok(())
    }

    /// A session that ended: a running checkpoint no longer waits for it.
    pub(super) fn checkpoint_forget(&mut self, slot: &Slot) {
        if let Some(run) = self.checkpoints.run_mut() {
            if slot.checkpoint != run.mark {
                run.pending = run.pending.saturating_sub(1);
            }
        }
    }

    /// What `Slot::checkpoint` starts as: a session made while a checkpoint runs needs
    /// nothing from it (its own records are after BEGIN).
    pub(super) fn checkpoint_mark(&self) -> u32 {
        self.checkpoints.run().map_or(0, |run| run.mark)
    }

    /// Like `journal`, but an error stops the caller (a checkpoint must be whole).
    fn append(&mut self, record: &Record) -> Result<Position, StoreError> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        self.journal.append(record.kind(), &self.scratch)
    }
}

/// Roughly the bytes appended from `from` to `to` (whole segments counted at the
/// journal's average segment size).
fn written_since(from: Position, to: Position, journal: &dyn super::journal::Journal) -> u64 {
    if to.segment == from.segment {
        return u64::from(to.offset.saturating_sub(from.offset));
    }
    let segment_bytes = journal.disk_bytes() / journal.segment_count().max(1) as u64;
    (to.segment - from.segment) * segment_bytes + u64::from(to.offset)
        - u64::from(from.offset).min(segment_bytes)
}

/// What is left of one step's allowance.
struct Budget {
    items: usize,
    bytes: usize,
    /// Whether the step walked the session map already.
    walked: bool,
}

impl Budget {
    fn take(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    fn spent(&self) -> bool {
        self.items == 0 || self.bytes == 0
    }
}
