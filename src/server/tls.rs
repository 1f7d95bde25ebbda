//! TLS over a TCP socket: a small adapter that drives a rustls `ServerConnection` as a
//! [`Transport`], written here because futures-rustls' stream cannot be rebuilt from its
//! parts on another core.
//!
//! The handshake happens inside the first reads, on the accepting core, within the connect
//! timeout (a client that never finishes it is dropped like one that never sends its
//! CONNECT). Every byte read from the socket goes straight into the `ServerConnection`
//! (`read_tls` through a non-blocking [`SyncIo`]): the adapter keeps no buffer of its own,
//! so a hand-off carries the whole TLS state by moving the `ServerConnection`, with the
//! ciphertext it holds undecrypted, the plaintext it has not handed out, and the records it
//! has still to send ([`TransportState::Tls`]). That is the transport invariant: nothing is
//! read ahead outside what travels.
//!
//! Writes go into the session's buffer (rustls encrypts them into records) and out to the
//! socket as far as it takes them; `flush` sends the rest, so callers flush after each
//! batch (the writer does).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::handoff;
use super::transport::{Transport, TransportState};
use crate::config::Identity;

/// What travels with the socket's descriptor when a TLS connection moves core.
#[derive(Debug)]
pub struct TlsState {
    conn: ServerConnection,
    identity: Identity,
}

/// A TLS connection on this core.
pub struct TlsStream {
    tcp: TcpStream,
    conn: ServerConnection,
    identity: Identity,
    /// The socket said end of stream (read returned 0).
    eof: bool,
    /// `close_notify` has been queued (it is sent once).
    closing: bool,
}

impl TlsStream {
    /// Starts the server side of a handshake on a freshly accepted socket.
    pub fn accept(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        identity: Identity,
    ) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream::from_parts(tcp, TlsState { conn, identity }))
    }

    /// Rebuilds the stream from a hand-off (`transport::attach`).
    pub fn from_parts(tcp: TcpStream, state: TlsState) -> TlsStream {
        TlsStream {
            tcp,
            conn: state.conn,
            identity: state.identity,
            eof: false,
            closing: false,
        }
    }

    /// Sends what the session holds to send; `Ready(Ok)` once it holds nothing.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut io = SyncIo {
                tcp: &mut self.tcp,
                cx,
            };
            match self.conn.write_tls(&mut io) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The socket as the blocking `Read`/`Write` rustls wants: `WouldBlock` stands for
/// `Pending` (the socket has registered the task's waker).
struct SyncIo<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.conn.reader().read(buf) {
                // 0: the client sent close_notify.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Handshake messages (and alerts) go out as soon as rustls has them; a full
            // socket wakes the task again, which comes back here.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            let mut io = SyncIo {
                tcp: &mut this.tcp,
                cx,
            };
            match this.conn.read_tls(&mut io) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(error) = this.conn.process_new_packets() {
                // Tell the client why (the alert rustls queued), as far as the socket takes it.
                let _ = this.poll_send(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let n = this.conn.writer().write(buf)?;
            if n > 0 || buf.is_empty() {
                // Out as far as the socket takes it now; `poll_flush` sends the rest.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(n));
            }
            // The session's send buffer is full: empty it first.
            ready!(this.poll_send(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.conn.send_close_notify();
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_close(cx)
    }
}

impl Transport for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr().map_err(Into::into)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr().map_err(Into::into)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp.set_nodelay(nodelay).map_err(Into::into)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(timeout).map_err(Into::into)
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
        futures_lite::future::poll_fn(|cx| self.poll_send(cx)).await?;
        self.tcp
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(Into::into)
    }

    fn detach(self) -> io::Result<(OwnedFd, TransportState)> {
        let state = TlsState {
            conn: self.conn,
            identity: self.identity,
        };
        Ok((
            handoff::detach(self.tcp)?,
            TransportState::Tls(Box::new(state)),
        ))
    }

    fn certificate_username(&self) -> Option<Option<String>> {
        let from = match self.identity {
            Identity::None => return None,
            Identity::CommonName => crate::auth::certificate::common_name,
            Identity::Subject => crate::auth::certificate::subject,
        };
        let leaf = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first());
        Some(leaf.and_then(|cert| from(cert.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::transport::{attach, Attached};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::TcpListener;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server config for `localhost` and a client config that trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(made.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[test]
    fn a_tls_stream_detached_mid_stream_is_attached_with_nothing_lost() {
        let (server_config, client_config) = configs();
        glommio::LocalExecutor::default().run(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // A blocking rustls client on its own thread: sends two messages in one write,
            // so the second is read (and held by the session) before the hand-off.
            let client = std::thread::spawn(move || {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(client_config, name).unwrap();
                let tcp = std::net::TcpStream::connect(addr).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                std::io::Write::write_all(&mut tls, b"hello|world, in one write").unwrap();
                let mut back = Vec::new();
                let _ = std::io::Read::read_to_end(&mut tls, &mut back);
                back
            });
            let tcp = listener.accept().await.unwrap();
            let mut server = TlsStream::accept(tcp, server_config, Identity::None).unwrap();
            let mut first = [0; 6];
            server.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"hello|");
            assert_eq!(server.certificate_username(), None);
            let (fd, state) = Transport::detach(server).unwrap();
            assert!(matches!(state, TransportState::Tls(_)));
            let Ok(Attached::Tls(mut server)) = attach(fd, state) else {
                panic!("a TLS stream is attached as TLS");
            };
            let mut rest = [0; 19];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"world, in one write");
            server.write_all(b"pong").await.unwrap();
            server.flush().await.unwrap();
            server.shutdown_write().await.unwrap();
            let back = client.join().unwrap();
            assert_eq!(back, b"pong", "close_notify ends the stream cleanly");
        });
    }

    #[test]
    fn a_client_that_is_not_tls_gets_an_error_not_a_hang() {
        let (server_config, _) = configs();
        glommio::LocalExecutor::default().run(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                .await
                .unwrap();
            let tcp = listener.accept().await.unwrap();
            let mut server = TlsStream::accept(tcp, server_config, Identity::None).unwrap();
            let mut buf = [0; 16];
            let err = server.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        });
    }
}
