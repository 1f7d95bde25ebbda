//! WebSocket frames (RFC 6455 section 5), server side: the header a client sends, masked,
//! read into a [`Reader`] that streams the payload of binary messages out and sorts out
//! control frames; and the unmasked headers the server puts before what it sends.
//!
//! MQTT over WebSocket (MQTT 3.1.1 and 5.0 section 6) carries packets in binary messages,
//! with no alignment between packets and frames, so the reader yields payload bytes only,
//! never message boundaries. Whatever it rejects is a [`FrameError`] naming the close code
//! to answer with.

use bytes::{Buf, BufMut, BytesMut};

/// Close status codes (RFC 6455 section 7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
}

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Why the server fails the WebSocket connection; [`FrameError::close_code`] is what it
/// tells the client in its Close frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("[RFC 6455 5.1] a client frame must be masked")]
    Unmasked,
    #[error("[RFC 6455 5.2] reserved bits set without an extension")]
    Reserved,
    #[error("[RFC 6455 5.2] unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("[RFC 6455 5.5] a control frame must not be fragmented or exceed 125 bytes")]
    BadControlFrame,
    #[error("[RFC 6455 5.2] the most significant bit of a 64-bit length must be 0")]
    BadLength,
    #[error("[RFC 6455 5.4] a continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("[RFC 6455 5.4] a new data frame before the message before it has ended")]
    UnfinishedMessage,
    #[error("[MQTT-6.0.0-1] MQTT over WebSocket takes binary frames only, not text")]
    Text,
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    TooBig { size: u64, max: u64 },
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Text => close_code::UNSUPPORTED_DATA,
            FrameError::TooBig { .. } => close_code::TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// A frame header as it came off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

/// Parses a frame header from the front of `buf` without consuming it: the header and its
/// size, `Ok(None)` when `buf` holds less than a whole header.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0; 8])), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    match opcode {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG if !fin || len > 125 => {
            return Err(FrameError::BadControlFrame)
        }
        opcode::CLOSE | opcode::PING | opcode::PONG => {}
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Writes the header of an unmasked server frame with FIN set, for `len` bytes of payload.
pub fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A whole server frame: header and payload.
pub fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    put_header(out, opcode, payload.len());
    out.put_slice(payload);
}

/// A Close frame with a status code.
pub fn put_close(out: &mut BytesMut, code: u16) {
    put_frame(out, opcode::CLOSE, &code.to_be_bytes());
}

/// XORs `data` with `key`, starting `offset` bytes into the payload.
pub fn unmask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let mut key = key;
    key.rotate_left((offset % 4) as usize);
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// What [`Reader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `n` bytes of message payload, unmasked, written to the front of `out`.
    Data(usize),
    /// A Ping: the payload to send back in a Pong.
    Ping(Vec<u8>),
    /// A Close, with its status code if it gave one.
    Close(Option<u16>),
}

/// The read side of a server's WebSocket connection: the state between frames and within
/// one. A few integers, so it travels with a hand-off as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// Payload bytes of the current data frame not yet handed out.
    left: u64,
    mask: [u8; 4],
    /// Payload bytes of the current frame handed out so far (where the mask stands).
    offset: u64,
    /// A binary message has begun and its final frame has not come yet.
    in_message: bool,
    /// Bytes of the current message so far, counting the frame being read whole.
    message_len: u64,
    max_message: u64,
}

impl Reader {
    /// A reader that refuses messages over `max_message` bytes.
    pub fn new(max_message: u64) -> Reader {
        Reader {
            left: 0,
            mask: [0; 4],
            offset: 0,
            in_message: false,
            message_len: 0,
            max_message,
        }
    }

    /// Payload bytes of the current frame not handed out yet. While `input` is empty, a
    /// caller may read up to this many straight into its own buffer and pass them to
    /// [`Reader::unmask_direct`], sparing a copy.
    pub fn payload_left(&self) -> u64 {
        self.left
    }

    /// Unmasks `data`, the next payload bytes of the current frame, read directly.
    pub fn unmask_direct(&mut self, data: &mut [u8]) {
        let n = (data.len() as u64).min(self.left) as usize;
        unmask(&mut data[..n], self.mask, self.offset);
        self.offset += n as u64;
        self.left -= n as u64;
    }

    /// Takes what it can from `input`: payload into `out` (unmasked), a control frame, or
    /// `Ok(None)` when `input` holds no payload and no whole frame header or control frame.
    pub fn next(
        &mut self,
        input: &mut BytesMut,
        out: &mut [u8],
    ) -> Result<Option<Event>, FrameError> {
        loop {
            if self.left > 0 {
                let n = (self.left.min(input.len() as u64) as usize).min(out.len());
                if n == 0 {
                    return Ok(None);
                }
                out[..n].copy_from_slice(&input[..n]);
                input.advance(n);
                self.unmask_direct(&mut out[..n]);
                return Ok(Some(Event::Data(n)));
            }
            let Some((header, size)) = parse_header(input)? else {
                return Ok(None);
            };
            let key = header.mask.ok_or(FrameError::Unmasked)?;
            match header.opcode {
                opcode::PING | opcode::PONG | opcode::CLOSE => {
                    let total = size + header.len as usize;
                    if input.len() < total {
                        return Ok(None);
                    }
                    input.advance(size);
                    let mut payload = input.split_to(header.len as usize).to_vec();
                    unmask(&mut payload, key, 0);
                    match header.opcode {
                        opcode::PING => return Ok(Some(Event::Ping(payload))),
                        opcode::CLOSE => {
                            let code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            return Ok(Some(Event::Close(code)));
                        }
                        _ => continue, // an unsolicited Pong is ignored (RFC 6455 5.5.3)
                    }
                }
                opcode::TEXT => return Err(FrameError::Text),
                opcode::CONTINUATION if !self.in_message => {
                    return Err(FrameError::UnexpectedContinuation)
                }
                opcode::BINARY if self.in_message => return Err(FrameError::UnfinishedMessage),
                _ => {}
            }
            if header.opcode == opcode::BINARY {
                self.message_len = 0;
            }
            self.message_len = self.message_len.saturating_add(header.len);
            if self.message_len > self.max_message {
                return Err(FrameError::TooBig {
                    size: self.message_len,
                    max: self.max_message,
                });
            }
            input.advance(size);
            self.in_message = !header.fin;
            self.left = header.len;
            self.mask = key;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
