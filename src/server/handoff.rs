//! Moving an accepted connection to the core that owns its client id.
//!
//! The only module of the server that needs `unsafe`: a socket crosses executors as an
//! owned file descriptor. The accepting core duplicates the descriptor and drops its own
//! stream (dropping closes only that descriptor; `shutdown` would end the connection for
//! both), then sends the duplicate with the bytes it already read; the owner rebuilds a
//! stream from it. Reads before the hand-off go through an unbuffered stream, so no bytes
//! can hide in a read-ahead buffer.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use glommio::net::TcpStream;

/// Gives up `stream` on this core and returns a descriptor for the same socket.
pub fn detach(stream: TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: the descriptor belongs to `stream`, which stays alive until after the
    // duplicate is made; the borrow does not outlive this statement.
    let owned = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()?;
    drop(stream);
    Ok(owned)
}

/// Rebuilds a stream on the current core from a descriptor made by [`detach`].
pub fn attach(fd: OwnedFd) -> TcpStream {
    // SAFETY: `fd` is an open, owned TCP socket descriptor (a duplicate made by `detach`);
    // ownership passes to the stream, which closes it on drop.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}
