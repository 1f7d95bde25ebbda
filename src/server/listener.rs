//! Listening sockets: one per core on the same address (SO_REUSEPORT) with a backlog of
//! 4096, built with socket2 because glommio's own `bind` hard-codes a backlog of 1024.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 4096;

/// Binds `cores` sockets to `addr`. If the port is 0 the first socket picks one and the
/// others join it, so every core listens on the same port. Returns the sockets and the
/// address actually bound.
pub fn bind_all(addr: SocketAddr, cores: usize) -> std::io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(cores);
    for _ in 0..cores {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(BACKLOG)?;
        if bound.port() == 0 {
            bound = socket.local_addr()?.as_socket().unwrap_or(bound);
        }
        sockets.push(OwnedFd::from(socket));
    }
    Ok((sockets, bound))
}

/// Wraps a socket from [`bind_all`] for the current executor.
pub fn into_listener(fd: OwnedFd) -> glommio::net::TcpListener {
    // SAFETY: `fd` is an owned, bound and listening TCP socket; the listener takes ownership.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) }
}
