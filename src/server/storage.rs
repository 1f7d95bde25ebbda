//! Opening the data directory and each core's log at start-up, and rebuilding each core's
//! engine from its log.
//!
//! The data directory belongs to one process: [`lock_data_dir`] takes an exclusive `flock` on
//! `<data-dir>/berth.lock` (holding the owner's pid) before anything in it is read, and keeps
//! it until the process exits. The data directory also records how many cores wrote it:
//! client ids are owned by `hash % cores`, so a log written with another core count would hold
//! sessions on the wrong cores. Starting with a different `--cores`, or with `core-N/`
//! directories that `layout.toml` does not account for, is refused with an error that says so.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::broker::journal::{Journal, LogJournal};
use crate::broker::{Broker, Effects, Rebuild, WallClock};
use crate::config::Config;
use crate::config::FsyncMode;
use crate::ownership::CoreId;
use crate::server::local::session_policy;
use crate::store::{FsyncPolicy, Log, LogConfig, RecoveryReport, RoomSignal};

const LAYOUT_FILE: &str = "layout.toml";
const LOCK_FILE: &str = "berth.lock";

/// The data directory's lock, held for as long as the process runs (closing the file, or the
/// process ending however it ends, releases it).
pub struct DataDirLock {
    _file: File,
}

/// Takes the data directory for this process: an exclusive, non-blocking `flock` on
/// `berth.lock`, into which the pid is written. A second process fails at once, naming the
/// directory and the pid that holds it. The file is never deleted (a process racing on a
/// deleted lock file would lock another inode).
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: plain system call on a descriptor that `file` owns and keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = match text.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            Err(_) => "a process that has not written its pid yet".to_owned(),
        };
        anyhow::bail!(
            "data directory {} is in use by another berth process ({holder}, which holds the lock \
             on {}): a data directory belongs to one broker; stop that one or use another --data-dir",
            data_dir.display(),
            path.display()
        );
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .with_context(|| format!("cannot write the pid into {}", path.display()))?;
    Ok(DataDirLock { _file: file })
}

/// The `core-<n>` directories of the data directory, in order.
fn core_dirs(data_dir: &Path) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    let entries = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list data directory {}", data_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", data_dir.display()))?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix("core-")) else {
            continue;
        };
        match digits.parse::<usize>() {
            // `core-{n}` exactly as the broker names them (no sign, no leading zero).
            Ok(n) if n.to_string() == digits && entry.path().is_dir() => cores.push(n),
            _ => {}
        }
    }
    cores.sort_unstable();
    Ok(cores)
}

/// Checks (or, for a new directory, records) the core count the data directory belongs to,
/// and that every `core-N/` directory in it belongs to that count.
pub fn check_layout(data_dir: &Path, cores: usize) -> anyhow::Result<()> {
    let path = data_dir.join(LAYOUT_FILE);
    let found = core_dirs(data_dir)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let written = text
                .lines()
                .find_map(|l| l.strip_prefix("cores = "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .with_context(|| format!("{} has no `cores = N` line", path.display()))?;
            if written != cores {
                anyhow::bail!(
                    "data directory {} was written by {written} cores but berth starts with {cores}: \
                     client ids are owned by hash % cores, so sessions would land on the wrong core; \
                     start with --cores {written} or use another --data-dir",
                    data_dir.display()
                );
            }
            if let Some(extra) = found.iter().find(|&&n| n >= written) {
                anyhow::bail!(
                    "data directory {} holds core-{extra}/, which {} (cores = {written}) does not \
                     account for: its sessions would never be read; move it out of the data \
                     directory if it is not berth's, or restore the layout it was written with",
                    data_dir.display(),
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(&last) = found.last() {
                // The logs are there but the record of their core count is not: the
                // directories say how many cores wrote them.
                let written = last + 1;
                if written != cores {
                    anyhow::bail!(
                        "data directory {} has no {LAYOUT_FILE} but holds the logs of {written} \
                         cores (core-0/ .. core-{last}/), and berth starts with {cores}: client \
                         ids are owned by hash % cores, so sessions would land on the wrong core; \
                         start with --cores {written} (the layout is written again then)",
                        data_dir.display()
                    );
                }
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    cores,
                    "{LAYOUT_FILE} was missing; written again from the core-N directories"
                );
            }
            let tmp = data_dir.join(format!("{LAYOUT_FILE}.tmp"));
            std::fs::write(
                &tmp,
                format!("# written by berth; do not edit\nformat = 1\ncores = {cores}\n"),
            )
            .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What one core's recovery brought back and what it dropped, summed over the cores for the
/// one summary line of start-up ([`Replayed::log_summary`]).
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    pub sessions: usize,
    pub queued: usize,
    pub retained: usize,
    /// Records that passed their CRC but did not decode.
    pub undecodable: u64,
    /// Queue entries dropped because their message's record was lost.
    pub missing_messages: u64,
    /// Damaged ranges skipped, and their bytes.
    pub damaged: usize,
    pub damaged_bytes: u64,
    /// Bytes of torn tails cut (writes that never finished).
    pub torn_bytes: u64,
    /// Segments none of whose records could be read.
    pub unreadable_segments: usize,
    /// Segment ids missing from the middle of a log.
    pub missing_segments: u64,
    /// The distinct reasons for what was dropped.
    pub reasons: Vec<&'static str>,
}

impl Replayed {
    pub fn add(&mut self, other: Replayed) {
        self.sessions += other.sessions;
        self.queued += other.queued;
        self.retained = self.retained.max(other.retained); // replicated on every core
        self.undecodable += other.undecodable;
        self.missing_messages += other.missing_messages;
        self.damaged += other.damaged;
        self.damaged_bytes += other.damaged_bytes;
        self.torn_bytes += other.torn_bytes;
        self.unreadable_segments += other.unreadable_segments;
        self.missing_segments += other.missing_segments;
        for reason in other.reasons {
            self.reason(reason);
        }
    }

    fn reason(&mut self, reason: &'static str) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// The one line that ends recovery: what came back, and what was dropped and why.
    pub fn log_summary(&self) {
        let mut dropped = Vec::new();
        let mut note = |n: u64, one: &str, many: &str| {
            if n > 0 {
                dropped.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        };
        let bytes = self.damaged_bytes;
        note(self.damaged as u64, "damaged range", "damaged ranges");
        note(bytes, "damaged byte", "damaged bytes");
        note(
            self.torn_bytes,
            "byte of a torn tail",
            "bytes of a torn tail",
        );
        let unreadable = self.unreadable_segments as u64;
        note(unreadable, "unreadable segment", "unreadable segments");
        note(self.missing_segments, "missing segment", "missing segments");
        note(
            self.undecodable,
            "undecodable record",
            "undecodable records",
        );
        note(
            self.missing_messages,
            "queued message whose record was lost",
            "queued messages whose record was lost",
        );
        let dropped = if dropped.is_empty() {
            "nothing".to_owned()
        } else {
            format!("{} ({})", dropped.join(", "), self.reasons.join("; "))
        };
        tracing::info!(
            sessions = self.sessions,
            queued = self.queued,
            retained = self.retained,
            damaged = self.damaged,
            damaged_bytes = self.damaged_bytes,
            torn_bytes = self.torn_bytes,
            unreadable_segments = self.unreadable_segments,
            missing_segments = self.missing_segments,
            undecodable = self.undecodable,
            missing_messages = self.missing_messages,
            "recovery: {} session{}, {} queued message{}; dropped: {dropped}",
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            self.queued,
            if self.queued == 1 { "" } else { "s" },
        );
    }
}

/// Opens core `id`'s log, replays it, and returns the engine it describes.
pub fn open_core(
    config: &Config,
    id: CoreId,
    cores: usize,
    lacking_room: RoomSignal,
) -> anyhow::Result<(Broker, Effects, Replayed)> {
    let started = Instant::now();
    let clock = WallClock::now_from_system();
    let mut rebuild = Rebuild::new(clock);
    let dir = config.data_dir.join(format!("core-{}", id.0));
    let (journal, mut replayed) = open_log(config, &dir, &mut rebuild, lacking_room)?;
    let (broker, mut report) = Broker::recover(
        id,
        cores,
        session_policy(config, cores),
        journal,
        rebuild,
        Instant::now(),
    );
    tracing::info!(
        core = %id,
        records = report.records,
        undecodable = report.undecodable,
        sessions = report.sessions,
        queued = report.queued,
        messages = report.messages,
        retained = report.retained,
        wills = report.wills,
        elapsed_ms = started.elapsed().as_millis() as u64,
        dir = %dir.display(),
        "log replayed: sessions, queues and retained messages recovered"
    );
    replayed.sessions = report.sessions;
    replayed.queued = report.queued;
    replayed.retained = report.retained;
    replayed.undecodable = report.undecodable;
    if report.undecodable > 0 {
        replayed.reason("records that do not decode");
    }
    replayed.missing_messages = report.missing_messages;
    if report.missing_messages > 0 {
        replayed.reason("checkpointed queue entries whose message record was lost");
    }
    Ok((broker, std::mem::take(&mut report.announce), replayed))
}

fn open_log(
    config: &Config,
    dir: &Path,
    rebuild: &mut Rebuild,
    lacking_room: RoomSignal,
) -> anyhow::Result<(Box<dyn Journal>, Replayed)> {
    let fsync = match config.fsync {
        FsyncMode::Never => FsyncPolicy::Never,
        FsyncMode::Interval => FsyncPolicy::Interval(config.fsync_interval),
        FsyncMode::Always => FsyncPolicy::Always,
    };
    let log_config = LogConfig {
        dir: dir.to_path_buf(),
        segment_size: config.segment_size,
        fsync,
        lacking_room,
    };
    let (log, report) = Log::open(log_config, |pos, kind, body| rebuild.visit(pos, kind, body))
        .with_context(|| format!("cannot open the log in {}", dir.display()))?;
    Ok((
        Box::new(LogJournal::new(log, config.fsync == FsyncMode::Always)),
        log_damage(dir, &report),
    ))
}

/// One line per problem the log's recovery found, and its figures for the summary.
fn log_damage(dir: &Path, report: &RecoveryReport) -> Replayed {
    let mut replayed = Replayed::default();
    if let Some(at) = report.torn_tail {
        tracing::warn!(dir = %dir.display(), ?at, cut_bytes = report.cut_bytes, "log: torn tail cut (a write that never finished; nothing valid after it)");
        replayed.torn_bytes = report.cut_bytes;
        replayed.reason("a write cut short at the end of the log");
    }
    for d in &report.damaged {
        if d.valid_after {
            tracing::error!(dir = %dir.display(), pos = ?d.at, bytes = d.bytes, reason = d.reason, "log: corrupt records skipped; the valid records after them were read");
        } else {
            tracing::error!(dir = %dir.display(), pos = ?d.at, bytes = d.bytes, reason = d.reason, "log: corrupt records skipped at the end of a segment");
        }
        replayed.damaged += 1;
        replayed.damaged_bytes += d.bytes;
        replayed.reason(d.reason);
    }
    for (segment, reason) in &report.sealed {
        tracing::error!(dir = %dir.display(), segment, reason, "log: damaged segment read and kept as it is; never appended to again");
    }
    for (segment, reason) in &report.bad_segments {
        tracing::error!(dir = %dir.display(), segment, reason, "log: unreadable segment skipped");
        replayed.unreadable_segments += 1;
        replayed.reason(reason);
    }
    for (first, last) in &report.missing {
        tracing::error!(dir = %dir.display(), first, last, "log: segments missing from the middle of the log (deleted?); their records are lost");
        replayed.missing_segments += last - first + 1;
        replayed.reason("segment files missing");
    }
    tracing::debug!(dir = %dir.display(), ?report, "log opened");
    replayed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_directory_and_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).err().unwrap().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }

    #[test]
    fn core_directories_the_layout_does_not_explain_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_layout(dir.path(), 2).unwrap();
        for n in 0..2 {
            std::fs::create_dir(dir.path().join(format!("core-{n}"))).unwrap();
        }
        check_layout(dir.path(), 2).unwrap();
        std::fs::create_dir(dir.path().join("core-2")).unwrap();
        let err = check_layout(dir.path(), 2).unwrap_err().to_string();
        assert!(
            err.contains("core-2/") && err.contains("cores = 2"),
            "{err}"
        );
    }

    #[test]
    fn a_lost_layout_is_inferred_from_the_core_directories() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..3 {
            std::fs::create_dir(dir.path().join(format!("core-{n}"))).unwrap();
        }
        std::fs::create_dir(dir.path().join("core-07")).unwrap(); // not a name berth makes
        let err = check_layout(dir.path(), 2).unwrap_err().to_string();
        assert!(
            err.contains("--cores 3") && err.contains("core-2/"),
            "{err}"
        );
        assert!(!dir.path().join(LAYOUT_FILE).exists());
        check_layout(dir.path(), 3).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LAYOUT_FILE)).unwrap();
        assert!(text.contains("cores = 3"), "{text}");
    }
}
