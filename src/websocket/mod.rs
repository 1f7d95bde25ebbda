//! The WebSocket protocol (RFC 6455), server side, as MQTT uses it (MQTT 3.1.1 and 5.0
//! section 6): the opening [`handshake`] and the [`frame`] codec. No I/O and no clock: the
//! server's transport (`server::websocket`) drives it over a socket.
//!
//! berth has its own codec rather than a crate (async-tungstenite needs Rust 1.85 and can be
//! rebuilt only at a frame boundary): a connection moves between cores in the middle of a
//! frame, with its [`frame::Reader`] state and the bytes read but not handed out.

#![forbid(unsafe_code)]

pub mod frame;
pub mod handshake;

pub use frame::{close_code, opcode, Event, FrameError, Header, Reader};
