//! The one place outside tests where the broker's wall clock is read from the system.
//!
//! The pure layers (protocol, topic, session, broker) never read a clock: time comes in as
//! an argument, so that their behaviour is deterministic and their tests need no runtime.
//! [`WallClock`] itself is pure (it maps `Instant`s to Unix milliseconds and back); only
//! making one from "now" needs the system, and that happens here, at the edge.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::broker::WallClock;

impl WallClock {
    /// A clock whose base is this instant and the system's time of day now.
    pub fn now_from_system() -> WallClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        WallClock {
            base: Instant::now(),
            base_unix_ms: unix.as_millis() as u64,
        }
    }
}
