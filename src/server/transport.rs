//! The byte stream a connection runs on: the seam between the connection's I/O and what
//! carries its bytes.
//!
//! The connect-timeout read, the read loop, the writer task and linger work on any
//! [`Transport`]: an async byte stream that also gives the socket settings the server uses
//! (`TCP_NODELAY`, the write timeout that drops a client which stopped reading), a way to
//! shut the sending side, and a way to give the connection up for a hand-off to its owner
//! core. Plain TCP (`glommio::net::TcpStream`) and TLS (`tls::TlsStream`) implement it;
//! WebSocket is a further implementation over the same socket.
//!
//! A hand-off carries the socket's descriptor and, beside it, the [`TransportState`]: what
//! the transport keeps above the socket that the owner core needs to go on. For plain TCP
//! that is nothing (the bytes read after the CONNECT travel in `Handoff::rest`). For TLS it
//! is the rustls server session, with the ciphertext it has read but not decrypted and
//! the plaintext it has decrypted but not handed out (`TransportState::Tls(Box<..>)`: boxed,
//! so that a plain hand-off stays small). For WebSocket it is the frame decoder's place,
//! the raw bytes read but not decoded, and the inner transport's own state
//! (`TransportState::WebSocket`), so WebSocket over TLS composes. [`attach`] rebuilds the
//! transport from the two.
//!
//! **Invariant:** a transport never reads ahead of what it hands out before a hand-off:
//! every byte read from the socket is either in the caller's buffer or in the state it
//! detaches with, so nothing is lost when the connection moves.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::handoff;
use super::tls::{TlsState, TlsStream};
use super::websocket::{WebSocket, WsState};

/// A connection's byte stream (see the module docs).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sends small writes at once (the writer batches itself).
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
    /// A write that makes no progress for this long fails with `TimedOut` (armed only
    /// while a write would block).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Shuts the sending side, after what the transport itself still holds to send.
    fn shutdown_write(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Gives the connection up on this core: a descriptor for the socket (this core's own
    /// is closed, the connection is not ended) and the state to rebuild it with.
    fn detach(self) -> io::Result<(OwnedFd, TransportState)>;
    /// The username the client's certificate gives, on a listener that takes it from there
    /// (`use_identity_as_username`, `use_subject_as_username`): `None` where usernames come
    /// from the CONNECT, `Some(None)` where the certificate has no such name.
    fn certificate_username(&self) -> Option<Option<String>> {
        None
    }
}

/// What a transport keeps above the socket, carried beside its descriptor in a hand-off.
#[derive(Debug)]
pub enum TransportState {
    /// Plain TCP: the socket is the whole transport.
    Plain,
    /// TLS: the rustls session with everything it holds (see `tls`).
    Tls(Box<TlsState>),
    /// WebSocket over another transport, whose state it holds (`WsState::inner`).
    WebSocket(Box<WsState>),
}

impl Transport for TcpStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self).map_err(Into::into)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self).map_err(Into::into)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay).map_err(Into::into)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout).map_err(Into::into)
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
            .await
            .map_err(Into::into)
    }

    fn detach(self) -> io::Result<(OwnedFd, TransportState)> {
        Ok((handoff::detach(self)?, TransportState::Plain))
    }
}

/// A transport rebuilt on the owner core from a hand-off. One variant per kind, so that
/// the connection is served by code made for its transport (no dynamic dispatch per read).
pub enum Attached {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    WebSocket(WebSocket<TcpStream>),
    /// wss: WebSocket over TLS.
    WebSocketTls(Box<WebSocket<TlsStream>>),
}

/// Rebuilds the transport that [`Transport::detach`] gave up. Fails only on a state no
/// transport detaches with (WebSocket over WebSocket).
pub fn attach(fd: OwnedFd, state: TransportState) -> io::Result<Attached> {
    match state {
        TransportState::Plain => Ok(Attached::Plain(handoff::attach(fd))),
        TransportState::Tls(state) => Ok(Attached::Tls(Box::new(TlsStream::from_parts(
            handoff::attach(fd),
            *state,
        )))),
        TransportState::WebSocket(mut ws) => {
            let inner = std::mem::replace(&mut ws.inner, TransportState::Plain);
            match attach(fd, inner)? {
                Attached::Plain(tcp) => Ok(Attached::WebSocket(WebSocket::attach(tcp, *ws))),
                Attached::Tls(tls) => Ok(Attached::WebSocketTls(Box::new(WebSocket::attach(
                    *tls, *ws,
                )))),
                Attached::WebSocket(_) | Attached::WebSocketTls(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a WebSocket over a WebSocket",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::TcpListener;

    #[test]
    fn a_detached_plain_stream_is_attached_with_nothing_lost() {
        glommio::LocalExecutor::default().run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let accepted = listener.accept().await.unwrap();
            accepted.set_nodelay(true).unwrap();
            accepted
                .set_write_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let (fd, state) = Transport::detach(accepted).unwrap();
            assert!(matches!(state, TransportState::Plain));
            let Ok(Attached::Plain(mut server)) = attach(fd, state) else {
                panic!("a plain state attaches as plain TCP");
            };
            client.write_all(b"ping").await.unwrap();
            let mut got = [0; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            server.write_all(b"pong").await.unwrap();
            server.shutdown_write().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(
                back, b"pong",
                "the sending side is shut, the connection is not"
            );
        });
    }
}
