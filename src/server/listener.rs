//! Listening sockets: one per core on the same address (SO_REUSEPORT) with a backlog of
//! 4096, built with socket2 because glommio's own `bind` hard-codes a backlog of 1024.
//!
//! SO_REUSEPORT would also let a second process (another berth, with another data
//! directory) bind the same address without an error, and the kernel would then split the
//! clients between the two. So an address is claimed first, for the life of the process:
//! - a **guard**: an abstract-namespace unix socket named after the address
//!   (`berth/listen/<addr>`, one per network namespace, gone when the process ends however it
//!   ends), which two berth processes starting at the same instant cannot both bind;
//! - a **probe**: a bind *without* SO_REUSEPORT, which Linux refuses while any socket holds
//!   the address (any program, a wildcard address overlapping it included). Only the probe's
//!   bind is done; it is closed before the cores bind.
//!
//! Port 0 is resolved once, by the first core's bind, and every other core binds the port it
//! got (Linux does not hand out, for a bind to port 0, a port that SO_REUSEPORT sockets hold;
//! were it ever to, the guard taken next for the resolved address would refuse it). The sockets
//! the cores accept on are the same as without the claim: nothing changes on the accept path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 4096;

/// Holds the address for this process until dropped.
pub struct AddressGuard {
    _socket: UnixDatagram,
}

/// Binds `cores` sockets to `addr`. If the port is 0 the first socket picks one and the
/// others join it, so every core listens on the same port. Returns the sockets, the address
/// actually bound, and the guard that keeps other berth processes off it. Fails with
/// `AddrInUse` ("address in use") when another process holds the address.
pub fn bind_all(
    addr: SocketAddr,
    cores: usize,
) -> io::Result<(Vec<OwnedFd>, SocketAddr, AddressGuard)> {
    let mut guard = None;
    if addr.port() != 0 {
        guard = Some(claim(addr)?);
        probe(addr)?;
    }
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
    let guard = match guard {
        Some(guard) => guard,
        None => claim(bound)?,
    };
    Ok((sockets, bound, guard))
}

/// Takes the machine-wide (network namespace wide) name of `addr` for this process.
fn claim(addr: SocketAddr) -> io::Result<AddressGuard> {
    let name = format!("berth/listen/{addr}");
    let unix = UnixAddr::from_abstract_name(name.as_bytes())?;
    match UnixDatagram::bind_addr(&unix) {
        Ok(socket) => Ok(AddressGuard { _socket: socket }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            Err(in_use(addr, "another berth process"))
        }
        Err(e) => Err(e),
    }
}

/// Fails if any socket holds `addr`: a bind without SO_REUSEPORT is refused then.
/// SO_REUSEADDR lets the probe pass over connections of an earlier process in TIME_WAIT,
/// never over a listening socket.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(in_use(addr, "another process")),
        Err(e) => Err(e),
    }
}

fn in_use(addr: SocketAddr, holder: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("address in use: {holder} listens on {addr}"),
    )
}

/// Wraps a socket from [`bind_all`] for the current executor.
pub fn into_listener(fd: OwnedFd) -> glommio::net::TcpListener {
    // SAFETY: `fd` is an owned, bound and listening TCP socket; the listener takes ownership.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bind_of_a_held_address_is_address_in_use() {
        let (_sockets, bound, _guard) = bind_all("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_ne!(bound.port(), 0);
        let err = bind_all(bound, 2).err().expect("second bind_all must fail");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("address in use"), "{err}");
    }

    #[test]
    fn the_probe_sees_a_socket_of_another_program() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let err = bind_all(addr, 1)
            .err()
            .expect("bind over a listener must fail");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("another process"), "{err}");
        drop(other);
        // Once it is gone, the address can be taken (and released again with the guard).
        let (sockets, bound, guard) = bind_all(addr, 2).unwrap();
        assert_eq!((sockets.len(), bound), (2, addr));
        drop((sockets, guard));
        bind_all(addr, 1).unwrap();
    }
}
