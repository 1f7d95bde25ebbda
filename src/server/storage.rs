//! Opening each core's log at start-up and rebuilding its engine from it.
//!
//! The data directory records how many cores wrote it: client ids are owned by
//! `hash % cores`, so a log written with another core count would hold sessions on the
//! wrong cores. Starting with a different `--cores` is refused with an error that says so.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::broker::journal::{Journal, LogJournal};
use crate::broker::{Broker, Effects, Rebuild, WallClock};
use crate::config::Config;
use crate::config::FsyncMode;
use crate::server::shard::session_policy;
use crate::server::ShardId;
use crate::store::{FsyncPolicy, Log, LogConfig, RoomSignal};

const LAYOUT_FILE: &str = "layout.toml";

/// Checks (or, for a new directory, records) the core count the data directory belongs to.
pub fn check_layout(data_dir: &Path, cores: usize) -> anyhow::Result<()> {
    let path = data_dir.join(LAYOUT_FILE);
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
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
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

/// Opens core `id`'s log, replays it, and returns the engine it describes.
pub fn open_core(
    config: &Config,
    id: ShardId,
    cores: usize,
    lacking_room: RoomSignal,
) -> anyhow::Result<(Broker, Effects)> {
    let started = Instant::now();
    let clock = WallClock::now_from_system();
    let mut rebuild = Rebuild::new(clock);
    let dir = config.data_dir.join(format!("core-{}", id.0));
    let journal = open_log(config, &dir, &mut rebuild, lacking_room)?;
    let (broker, mut report) = Broker::recover(
        id,
        cores,
        session_policy(config, cores),
        journal,
        rebuild,
        Instant::now(),
    );
    tracing::info!(
        shard = %id,
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
    Ok((broker, std::mem::take(&mut report.announce)))
}

fn open_log(
    config: &Config,
    dir: &Path,
    rebuild: &mut Rebuild,
    lacking_room: RoomSignal,
) -> anyhow::Result<Box<dyn Journal>> {
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
    if let Some(at) = report.torn_tail {
        tracing::warn!(dir = %dir.display(), ?at, cut_bytes = report.cut_bytes, "log: torn tail record cut");
    }
    for (pos, reason) in &report.corrupt {
        tracing::error!(dir = %dir.display(), ?pos, reason, "log: corrupt record; the rest of its segment was not read");
    }
    for (segment, reason) in &report.bad_segments {
        tracing::error!(dir = %dir.display(), segment, reason, "log: unreadable segment skipped");
    }
    tracing::debug!(dir = %dir.display(), ?report, "log opened");
    let always = config.fsync == FsyncMode::Always;
    Ok(Box::new(LogJournal::new(log, always)))
}
