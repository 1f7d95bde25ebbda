//! The end of a connection: why it ended, the DISCONNECT the server sends, and the will.
//!
//! The will is published on every end but a normal DISCONNECT (v5: unless it asked for
//! the will with 0x04) and a server shutdown [MQTT-3.1.2-8]. A will with a delay waits for
//! the delay or the end of the session, whichever comes first (MQTT 5.0 3.1.3.2.2), and is
//! cancelled by a connection that takes the session over before it [MQTT-3.1.3-9].

use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::{Engine, Link, Step, StoreClosed};
use crate::broker::Effects;
use crate::protocol::{Disconnect, Packet, Properties, ReasonCode};

/// Why a connection ended.
// Fields are read through `Debug` in the log lines.
#[allow(dead_code)]
#[derive(Debug)]
pub enum End {
    ClientDisconnected {
        publish_will: bool,
    },
    Closed,
    Io(std::io::Error),
    KeepAliveTimeout,
    Violation(ReasonCode, String),
    TakenOver,
    Shutdown,
    /// The writer made no progress for `write_timeout` (or failed): the client stopped reading.
    WriteStalled(std::io::Error),
    /// A 3.x client published QoS 1/2 while the store could not take it: it has no
    /// negative acknowledgement, so the connection closes unacknowledged.
    StoreFull(StoreClosed),
    /// The admin API disconnected the client; `discard`: its session ends with it.
    Kicked {
        publish_will: bool,
        discard: bool,
    },
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientDisconnected {
                publish_will: false,
            } => f.write_str("client sent DISCONNECT"),
            End::ClientDisconnected { publish_will: true } => {
                f.write_str("client sent DISCONNECT with will (0x04)")
            }
            End::Closed => f.write_str("client closed the connection"),
            End::Io(e) => write!(f, "read error: {e}"),
            End::KeepAliveTimeout => f.write_str("keep alive timeout"),
            End::Violation(_, why) => write!(f, "protocol violation: {why}"),
            End::TakenOver => f.write_str("session taken over"),
            End::Kicked { discard: false, .. } => f.write_str("kicked by the admin API"),
            End::Kicked { discard: true, .. } => {
                f.write_str("kicked by the admin API, session discarded")
            }
            End::Shutdown => f.write_str("server shutting down"),
            End::WriteStalled(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                f.write_str("client stopped reading (no write progress for write_timeout)")
            }
            End::WriteStalled(e) => write!(f, "write error: {e}"),
            End::StoreFull(StoreClosed::DiskFull) => {
                f.write_str("QoS 1/2 PUBLISH refused: the store is full (3.x has no negative ack)")
            }
            End::StoreFull(StoreClosed::StoredBytes) => f.write_str(
                "QoS 1/2 PUBLISH refused: max_stored_bytes reached (3.x has no negative ack)",
            ),
        }
    }
}

impl End {
    /// Whether the will is published (see the module docs).
    pub fn publishes_will(&self) -> bool {
        !matches!(
            self,
            End::ClientDisconnected {
                publish_will: false
            } | End::Shutdown
                | End::Kicked {
                    publish_will: false,
                    ..
                }
        )
    }

    /// The reason code of the DISCONNECT the server sends (to a v5 client), if it sends one.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            End::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            End::Violation(code, _) => Some(*code),
            End::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            End::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            End::Kicked { .. } => Some(ReasonCode::ADMINISTRATIVE_ACTION),
            End::ClientDisconnected { .. }
            | End::Closed
            | End::Io(_)
            | End::WriteStalled(_)
            | End::StoreFull(_) => None,
        }
    }
}

impl Link {
    /// The connection ended with `end`; `current`: whether it still holds the client id
    /// (a takeover has not registered another connection for it). Queues the DISCONNECT
    /// (v5, when the end has a reason code) and carries out the will decision. Returns
    /// whether a DISCONNECT was queued: the driver then closes without a reset.
    pub fn close(
        &mut self,
        end: &End,
        current: bool,
        now: Instant,
        engine: &mut impl Engine,
    ) -> bool {
        let disconnect = self
            .version
            .is_v5()
            .then(|| end.disconnect_reason())
            .flatten();
        if let Some(reason_code) = disconnect {
            let mut properties = Properties::default();
            if let End::Violation(_, why) = end {
                // The rule broken; the writer names the code for the other ends.
                properties.reason_string = Some(ByteString::from(why.as_str()));
            }
            self.steps
                .push_back(Step::Send(Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                })));
        }
        if let End::Kicked { discard: true, .. } = end {
            // `go_offline` then ends the session with the connection.
            self.expiry = Duration::ZERO;
        }
        if !end.publishes_will() {
            if current {
                engine.drop_will(&self.client_id);
            }
        } else if let Some((publish, delay)) = self.will.take() {
            if delay > 0 && !current {
                // Taken over: the new connection came before the delay passed, which
                // cancels the will.
            } else if delay > 0 && !self.expiry.is_zero() {
                let wait = Duration::from_secs(u64::from(delay)).min(self.expiry);
                engine.schedule_will(&self.client_id, publish, now + wait);
            } else {
                let effects = engine.publish(&self.client_id, publish, now);
                if current {
                    engine.drop_will(&self.client_id);
                }
                self.steps.push_back(Step::Apply(effects));
            }
        }
        disconnect.is_some()
    }

    /// The last call, while the connection still holds the client id: the session goes
    /// offline with the expiry in force.
    pub fn go_offline(&mut self, now: Instant, engine: &mut impl Engine) -> Effects {
        engine.disconnect(&self.client_id, Some(self.expiry), now)
    }
}
