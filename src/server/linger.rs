//! Closing on a client without throwing away what it has not read yet.
//!
//! A socket closed while its input holds unread bytes sends a TCP reset, and a reset makes
//! the client's kernel drop what it received but had not yet read: the DISCONNECT or
//! refusing CONNACK with the reason code. So after such a packet the server drains the
//! client's input while its writer finishes ([`Linger::during`]), shuts the sending side,
//! and drains for a while longer ([`Linger::after`]), bounded in time and bytes, before it
//! closes the socket.

use std::time::Duration;

use futures_lite::future;
use futures_lite::io::AsyncReadExt;

use super::transport::Transport;

/// After its last packet to a client it is closing on (a DISCONNECT with a reason code, a
/// refusing CONNACK), the server shuts its sending side and reads and discards what the
/// client still sends, for at most this long and this many bytes, before it closes the
/// socket. Closing a socket with unread input sends a TCP reset, and a reset makes the
/// client's kernel drop what it received but had not yet read: the reason code with it.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
pub const LINGER_BYTES: usize = 4 << 20;

/// Shuts the sending side after a refusal and lets the client's input drain (see
/// [`LINGER_TIME`]).
pub async fn linger(stream: impl Transport) {
    let mut stream = stream;
    let _ = stream.shutdown_write().await;
    Linger::new().after(&mut stream).await;
}

/// Reading and dropping a closing client's input, at most [`LINGER_BYTES`] in all.
pub struct Linger {
    left: usize,
    scratch: Vec<u8>,
}

impl Linger {
    pub fn new() -> Linger {
        Linger {
            left: LINGER_BYTES,
            scratch: vec![0; 4096],
        }
    }

    /// Drains until `close_out` (which ends with the writer, once it has shut the sending
    /// side) has finished.
    pub async fn during(
        &mut self,
        reader: &mut (impl futures_lite::AsyncRead + Unpin),
        close_out: impl std::future::Future<Output = ()>,
    ) {
        let drain = async {
            self.drain(reader).await;
            future::pending::<()>().await
        };
        future::or(close_out, drain).await;
    }

    /// Drains until the client closes or [`LINGER_TIME`] has passed.
    pub async fn after(&mut self, reader: &mut (impl futures_lite::AsyncRead + Unpin)) {
        future::or(self.drain(reader), glommio::timer::sleep(LINGER_TIME)).await;
    }

    /// Reads until the end of input, an error, or the byte budget is spent.
    async fn drain(&mut self, reader: &mut (impl futures_lite::AsyncRead + Unpin)) {
        while self.left > 0 {
            match reader.read(&mut self.scratch).await {
                Ok(0) | Err(_) => {
                    self.left = 0;
                    return;
                }
                Ok(n) => self.left = self.left.saturating_sub(n),
            }
        }
    }
}
