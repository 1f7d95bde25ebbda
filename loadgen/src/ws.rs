//! MQTT over WebSocket, client side (RFC 6455; MQTT 3.1.1 and 5.0 section 6): the opening
//! handshake asking for the subprotocol `mqtt`, and [`WsStream`], a byte stream over any
//! tokio stream (TCP or TLS) that sends every write as one masked binary frame and hands out
//! the payload of the frames it reads, so the rest of the load generator sees plain MQTT
//! bytes. The frame header parser and the accept key are berth's own (`berth::websocket`).
//!
//! A Ping from the broker is answered with a Pong sent with the next write or flush; a Close
//! from the broker reads as the end of the stream. Masking keys come from a xorshift
//! generator: RFC 6455 asks for unpredictable keys to protect proxies from a hostile page's
//! bytes, which a load generator sending its own packets does not need.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine;
use berth::websocket::frame::{opcode, parse_header, unmask};
use berth::websocket::handshake::accept_key;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's answer to the upgrade request may not grow past this.
pub const MAX_RESPONSE: usize = 8 * 1024;

/// Masking keys and handshake keys: xorshift64*, seeded per connection.
#[derive(Debug, Clone)]
pub struct Keys(u64);

impl Keys {
    pub fn new(seed: u64) -> Keys {
        // Never 0, the one state xorshift cannot leave.
        Keys(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// A `Sec-WebSocket-Key`: 16 bytes, base64.
    pub fn handshake_key(&mut self) -> String {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.next_u64().to_ne_bytes());
        raw[8..].copy_from_slice(&self.next_u64().to_ne_bytes());
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// The upgrade request for `path` on `host` (host:port as the Host header wants it).
pub fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// Reads the server's answer at the front of `input`: `Ok(None)` while its head is
/// incomplete, `Ok(Some(n))` for a `101` with the right accept key and the subprotocol
/// `mqtt` (`n` bytes of head; frames follow), else why the handshake failed.
pub fn response(input: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let consumed = match head.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_RESPONSE => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("HTTP response head too large".into()),
        Err(e) => return Err(format!("bad HTTP response: {e}")),
    };
    if head.code != Some(101) {
        return Err(format!(
            "HTTP {} {} instead of 101 Switching Protocols",
            head.code.unwrap_or(0),
            head.reason.unwrap_or("")
        ));
    }
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if header("sec-websocket-accept") != Some(accept_key(key)) {
        return Err("wrong or missing Sec-WebSocket-Accept".into());
    }
    match header("sec-websocket-protocol") {
        Some(p) if p.eq_ignore_ascii_case("mqtt") => Ok(Some(consumed)),
        other => Err(format!("subprotocol {other:?} selected instead of mqtt")),
    }
}

/// A whole client frame, FIN set: header with the mask bit and `key`, payload masked.
pub fn put_masked_frame(out: &mut BytesMut, op: u8, payload: &[u8], key: [u8; 4]) {
    out.put_u8(0x80 | op);
    match payload.len() {
        n @ 0..=125 => out.put_u8(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(&key);
    let start = out.len();
    out.put_slice(payload);
    unmask(&mut out[start..], key, 0); // XOR: masking and unmasking are one operation
}

/// What [`FrameReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `n` payload bytes appended to `out`.
    Data(usize),
    /// A Ping, with the payload its Pong must carry.
    Ping(Vec<u8>),
    /// A Close: the broker ends the connection.
    Close,
}

/// The read side of a client's WebSocket connection: server frames are unmasked, and data
/// frames (binary or continuation) are payload for MQTT whatever their boundaries.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Payload bytes of the current data frame still to come.
    left: u64,
}

impl FrameReader {
    /// Takes what it can from `input`: payload onto `out`, or one control frame; `Ok(None)`
    /// when `input` holds neither payload nor a whole header or control frame.
    pub fn next(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, String> {
        loop {
            if self.left > 0 {
                let n = self.left.min(input.len() as u64) as usize;
                if n == 0 {
                    return Ok(None);
                }
                out.extend_from_slice(&input[..n]);
                input.advance(n);
                self.left -= n as u64;
                return Ok(Some(Event::Data(n)));
            }
            let Some((header, size)) = parse_header(input).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            if header.mask.is_some() {
                return Err("[RFC 6455 5.1] a server frame must not be masked".into());
            }
            match header.opcode {
                opcode::PING | opcode::PONG | opcode::CLOSE => {
                    let total = size + header.len as usize;
                    if input.len() < total {
                        return Ok(None);
                    }
                    input.advance(size);
                    let payload = input.split_to(header.len as usize).to_vec();
                    match header.opcode {
                        opcode::PING => return Ok(Some(Event::Ping(payload))),
                        opcode::CLOSE => return Ok(Some(Event::Close)),
                        _ => continue,
                    }
                }
                opcode::TEXT => return Err("[MQTT-6.0.0-1] a text frame from the broker".into()),
                _ => {
                    input.advance(size);
                    self.left = header.len;
                }
            }
        }
    }
}

/// A WebSocket connection as a byte stream: see the module documentation. Whatever
/// `poll_write` takes becomes one binary frame, so a batch written with one `write_all`
/// travels in one frame; callers flush after writing, as for TLS.
pub struct WsStream<S> {
    inner: S,
    /// Bytes read from `inner` and not decoded yet.
    raw: BytesMut,
    /// Payload decoded and not read out yet.
    data: BytesMut,
    /// Frames not written to `inner` yet.
    out: BytesMut,
    reader: FrameReader,
    keys: Keys,
    /// A Close or the end of `inner` came: once `data` is read out, the stream ends.
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// A stream over `inner` after a completed handshake; `leftover` is what was read past
    /// the response head.
    pub fn new(inner: S, leftover: &[u8], keys: Keys) -> WsStream<S> {
        WsStream {
            inner,
            raw: BytesMut::from(leftover),
            data: BytesMut::new(),
            out: BytesMut::new(),
            reader: FrameReader::default(),
            keys,
            closed: false,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.data.is_empty() {
                let n = this.data.len().min(buf.remaining());
                buf.put_slice(&this.data[..n]);
                this.data.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            let event = this.reader.next(&mut this.raw, &mut this.data);
            match event.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Some(Event::Data(_)) => continue,
                Some(Event::Ping(payload)) => {
                    let key = this.keys.mask();
                    put_masked_frame(&mut this.out, opcode::PONG, &payload, key);
                    // Sent now if the socket takes it, else with the next write or flush.
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                    continue;
                }
                Some(Event::Close) => {
                    this.closed = true;
                    continue;
                }
                None => {}
            }
            let len = this.raw.len();
            this.raw.resize(len + 16 * 1024, 0);
            let mut read = ReadBuf::new(&mut this.raw[len..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let filled = read.filled().len();
            this.raw.truncate(len + filled);
            ready!(polled)?;
            if filled == 0 {
                this.closed = true;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Frames already taken go first; until they are out, `buf` is not taken.
        ready!(this.poll_drain(cx))?;
        let key = this.keys.mask();
        put_masked_frame(&mut this.out, opcode::BINARY, buf, key);
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
