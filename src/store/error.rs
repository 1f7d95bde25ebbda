//! The one error type of the store layer.

use std::io;
use std::path::PathBuf;

use super::Position;

/// Everything that can go wrong in the log. I/O errors carry the file they happened on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done: "create", "fallocate", "map", "msync", ...
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a record of {len} body bytes does not fit in a segment (at most {max} body bytes)")]
    RecordTooLarge { len: usize, max: usize },
    #[error("invalid log configuration: {0}")]
    Config(&'static str),
    #[error("no record at {0:?}: its segment was removed, is unreadable, or it was never written")]
    NoRecord(Position),
    #[error("corrupt record at {pos:?}: {reason}")]
    Corrupt { pos: Position, reason: &'static str },
    #[error("the log was closed before its data was made durable")]
    Closed,
    #[error("no room in the log: its next segment cannot be made yet (disk full)")]
    NoRoom,
}

impl StoreError {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
