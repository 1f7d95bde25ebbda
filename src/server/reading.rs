//! How much a connection reads at a time: full-size reads while it is busy, small ones
//! once it is idle, so that an idle connection holds a small read buffer.

use bytes::BytesMut;
use futures_lite::io::AsyncReadExt;

use super::local::IoStats;

pub(super) const READ_CHUNK: usize = 16 * 1024;
/// What a connection whose last read was small reads into: an idle connection (keep-alive
/// pings, a trickle of telemetry) then holds this much buffer, not `READ_CHUNK`. A read
/// that fills it goes back to full-size reads.
pub(super) const SMALL_READ: usize = 256;
/// The first read of a connection, for its CONNECT.
pub(super) const CONNECT_READ: usize = 1024;

/// How much the next read asks for, after one that asked `asked` and got `got`.
pub(super) fn next_read(asked: usize, got: usize) -> usize {
    if got >= SMALL_READ || got == asked {
        READ_CHUNK
    } else {
        SMALL_READ
    }
}

/// Reads up to `chunk` more bytes into `buf`. An empty `buf` holding much more than the
/// read needs is let go first, so that an idle connection does not keep a large buffer.
pub(super) async fn read_more(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
    buf: &mut BytesMut,
    stats: &IoStats,
    chunk: usize,
) -> std::io::Result<usize> {
    if buf.is_empty() && buf.capacity() > 2 * chunk {
        *buf = BytesMut::new();
    }
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let result = stream.read(&mut buf[start..]).await;
    let read = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + read);
    stats.read(read);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_read_makes_the_next_one_small_and_a_full_one_makes_it_large() {
        assert_eq!(next_read(READ_CHUNK, 2), SMALL_READ, "a PINGREQ");
        assert_eq!(next_read(SMALL_READ, 2), SMALL_READ);
        assert_eq!(
            next_read(SMALL_READ, SMALL_READ),
            READ_CHUNK,
            "more is waiting"
        );
        assert_eq!(next_read(READ_CHUNK, 3000), READ_CHUNK, "busy");
        assert_eq!(next_read(SMALL_READ, 100), SMALL_READ);
    }
}
