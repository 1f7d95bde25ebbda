//! MQTT over WebSocket: a [`Transport`] that carries a connection's bytes in WebSocket
//! frames over another transport (plain TCP today; TLS for `wss` composes the same way).
//!
//! [`upgrade`] answers the HTTP upgrade request on the accepting core. From then on reads
//! hand out the payload of the client's binary messages, unmasked, with no regard for frame
//! boundaries (MQTT packets may be split over frames or share one); each write becomes one
//! binary frame. Pings are answered with pongs, a Close with a Close; a frame the codec
//! rejects (`websocket::frame`) is answered with a Close carrying its code and ends the read
//! side with an `InvalidData` error.
//!
//! The read half and the write half (after `futures_lite::io::split`) share this value.
//! Bytes to send sit in `out`, which holds at most one data frame, and control frames wait in
//! `control` for a frame boundary. Only the writer's calls send while a data frame is under
//! way (`committed`); in between, a read sends waiting control frames itself, so a pong
//! leaves even when the writer is idle.
//!
//! **Invariant** (the transport's): nothing read from the socket is lost in a hand-off:
//! payload is in the caller's buffer, and everything else (raw frames not decoded yet, the
//! decoder's place in the current frame, control frames not sent yet) is in [`WsState`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::{AsyncRead, AsyncWrite};

use std::rc::Rc;

use futures_lite::future;

use super::connection;
use super::linger::linger;
use super::local::Core;
use super::transport::{Transport, TransportState};
use crate::websocket::frame::{self, close_code, opcode, Event, FrameError, Reader};
use crate::websocket::handshake;

/// Raw bytes read from the socket at a time while between frames.
const READ_CHUNK: usize = 16 * 1024;

/// A connection speaking WebSocket over `S`.
pub struct WebSocket<S> {
    inner: S,
    reader: Reader,
    /// Raw bytes read from `inner` and not yet handed out.
    input: BytesMut,
    /// Bytes to write to `inner`, in order: at most one data frame, or control frames.
    out: BytesMut,
    /// Control frames waiting for the data frame in `out` to be sent.
    control: BytesMut,
    /// `out` holds the frame of a write of this many bytes that has not been reported done.
    committed: Option<usize>,
    /// A Close has been queued: nothing more is sent after it.
    close_sent: bool,
    /// The client's Close has come: reads are at their end.
    read_closed: bool,
    failed: Option<FrameError>,
}

/// What a WebSocket keeps above its inner transport, carried in a hand-off.
#[derive(Debug)]
pub struct WsState {
    /// The inner transport's own state (`Plain` today, TLS's for `wss`).
    pub inner: TransportState,
    reader: Reader,
    input: BytesMut,
    /// Control frames not yet sent.
    unsent: BytesMut,
    close_sent: bool,
    read_closed: bool,
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Refused(#[from] handshake::Refused),
    #[error("connection closed during the WebSocket handshake")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the HTTP upgrade request from `inner` and answers it. On success the connection
/// speaks WebSocket, holding whatever the client sent after its request; on a refusal the
/// HTTP error has been written and the caller closes the connection.
pub async fn upgrade<S: Transport>(
    mut inner: S,
    path: &str,
    max_message: u64,
) -> Result<WebSocket<S>, (UpgradeError, S)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match handshake::parse(&buf, path) {
            Ok(Some(accepted)) => {
                if let Err(e) = inner.write_all(&accepted.response).await {
                    return Err((e.into(), inner));
                }
                buf.advance(accepted.consumed);
                return Ok(WebSocket::new(inner, Reader::new(max_message), buf));
            }
            Ok(None) => {}
            Err(refused) => {
                let _ = inner.write_all(&refused.response).await;
                return Err((refused.into(), inner));
            }
        }
        let start = buf.len();
        buf.resize(start + 4096, 0);
        let read = inner.read(&mut buf[start..]).await;
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Err((UpgradeError::Closed, inner)),
            Ok(_) => {}
            Err(e) => return Err((e.into(), inner)),
        }
    }
}

impl<S: Transport> WebSocket<S> {
    fn new(inner: S, reader: Reader, input: BytesMut) -> Self {
        WebSocket {
            inner,
            reader,
            input,
            out: BytesMut::new(),
            control: BytesMut::new(),
            committed: None,
            close_sent: false,
            read_closed: false,
            failed: None,
        }
    }

    /// Rebuilds a WebSocket on `inner` (rebuilt from `state.inner`) where it was detached.
    pub fn attach(inner: S, state: WsState) -> Self {
        let mut ws = WebSocket::new(inner, state.reader, state.input);
        ws.control = state.unsent;
        ws.close_sent = state.close_sent;
        ws.read_closed = state.read_closed;
        ws
    }

    /// Queues a Close with `code` unless one is queued already.
    fn queue_close(&mut self, code: u16) {
        if !self.close_sent {
            self.close_sent = true;
            frame::put_close(&mut self.control, code);
        }
    }

    /// Writes `out`, then the control frames, until both are empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out.is_empty() {
                if self.control.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                std::mem::swap(&mut self.out, &mut self.control);
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
    }

    /// On the read side: sends waiting control frames unless a data frame is under way
    /// (the writer sends them after it). Pending leaves the reader's waker on the write.
    fn poll_send_control(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.committed.is_some() {
            return Ok(());
        }
        match self.poll_drain(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Reads more raw bytes into `input`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK, 0);
        let read = Pin::new(&mut self.inner).poll_read(cx, &mut self.input[start..]);
        let n = match &read {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.input.truncate(start + n);
        read
    }
}

fn invalid(error: &FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.clone())
}

impl<S: Transport> AsyncRead for WebSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            this.poll_send_control(cx)?;
            if let Some(error) = &this.failed {
                return Poll::Ready(Err(invalid(error)));
            }
            if this.read_closed || dst.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match this.reader.next(&mut this.input, dst) {
                Ok(Some(Event::Data(n))) => return Poll::Ready(Ok(n)),
                Ok(Some(Event::Ping(payload))) => {
                    if !this.close_sent {
                        frame::put_frame(&mut this.control, opcode::PONG, &payload);
                    }
                    continue;
                }
                Ok(Some(Event::Close(code))) => {
                    // Echo the client's code (RFC 6455 5.5.1); one that must not be sent
                    // on the wire (1005, 1006, 1015 or out of range) becomes 1000.
                    let code =
                        code.filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999));
                    this.queue_close(code.unwrap_or(close_code::NORMAL));
                    this.read_closed = true;
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    this.queue_close(error.close_code());
                    this.failed = Some(error);
                    continue;
                }
            }
            let left = this.reader.payload_left();
            if this.input.is_empty() && left > 0 {
                // Payload goes straight into the caller's buffer, unmasked there.
                let n = (left.min(dst.len() as u64)) as usize;
                let got = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut dst[..n]))?;
                this.reader.unmask_direct(&mut dst[..got]);
                return Poll::Ready(Ok(got));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(0));
            }
        }
    }
}

impl<S: Transport> AsyncWrite for WebSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_drain(cx))?;
            if let Some(n) = this.committed.take() {
                return Poll::Ready(Ok(n));
            }
            if this.close_sent || buf.is_empty() {
                // After a Close nothing may be sent (RFC 6455 5.5.1): the bytes are dropped.
                return Poll::Ready(Ok(buf.len()));
            }
            frame::put_frame(&mut this.out, opcode::BINARY, buf);
            this.committed = Some(buf.len());
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.committed = None;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_close(close_code::NORMAL);
        ready!(this.poll_drain(cx))?;
        this.committed = None;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: Transport> Transport for WebSocket<S> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(timeout)
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.queue_close(close_code::NORMAL);
        futures_lite::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.committed = None;
        self.inner.shutdown_write().await
    }

    fn detach(self) -> io::Result<(OwnedFd, TransportState)> {
        let mut unsent = self.out;
        unsent.extend_from_slice(&self.control);
        let (fd, inner) = self.inner.detach()?;
        let state = WsState {
            inner,
            reader: self.reader,
            input: self.input,
            unsent,
            close_sent: self.close_sent,
            read_closed: self.read_closed,
        };
        Ok((fd, TransportState::WebSocket(Box::new(state))))
    }

    /// wss: the TLS session's client certificate.
    fn certificate_username(&self) -> Option<Option<String>> {
        self.inner.certificate_username()
    }
}

/// Entry point for a connection accepted on a WebSocket listener: the upgrade (given the
/// connect timeout of its own), then the same way as plain TCP (`connection::accepted`):
/// the CONNECT is read through the WebSocket and the connection handed to its owner core.
pub async fn accepted<S: Transport>(
    core: Rc<Core>,
    stream: S,
    path: Rc<str>,
    slot: super::limits::ConnectionSlot,
) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let timeout = core.config.connect_timeout;
    let max_message = u64::from(core.config.max_packet_size);
    let upgraded = future::or(
        async { Some(upgrade(stream, &path, max_message).await) },
        async {
            glommio::timer::sleep(timeout).await;
            None
        },
    )
    .await;
    let (error, stream) = match upgraded {
        Some(Ok(ws)) => return connection::accepted(core, ws, slot).await,
        Some(Err((error, stream))) => (error, Some(stream)),
        None => (UpgradeError::Io(io::ErrorKind::TimedOut.into()), None),
    };
    let failures = &core.stats.connect_failures;
    failures.set(failures.get() + 1);
    tracing::info!(core = %core.id, %peer, %error, "WebSocket upgrade failed");
    if let (UpgradeError::Refused(_), Some(stream)) = (&error, stream) {
        linger(stream).await;
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
