//! The `$SYS` timer of each core: every `sys_interval` a core takes its snapshot (the
//! engine's figures and its connections' counters) and sends it to core 0, which adds up
//! the latest of every core and publishes what changed (see `broker::sys`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::local::Core;
use crate::broker::{CoreMsg, Effects};
use crate::ownership::CoreId;

/// The core that publishes `$SYS`.
const PUBLISHER: CoreId = CoreId(0);

/// Runs until dropped. `started` is when the broker started (for the uptime).
pub async fn sys_loop(core: Rc<Core>, interval: Duration, started: Instant) {
    loop {
        glommio::timer::sleep(interval).await;
        let stats = core.figures();
        let effects = if core.id == PUBLISHER {
            let mut broker = core.broker.borrow_mut();
            broker.record_stats(core.id, stats);
            broker.publish_sys(started.elapsed(), Instant::now())
        } else {
            let from = core.id;
            Effects {
                to_clients: Vec::new(),
                to_cores: vec![(
                    PUBLISHER,
                    CoreMsg::Stats {
                        from,
                        stats: Box::new(stats),
                    },
                )],
                ..Effects::default()
            }
        };
        core.apply(effects).await;
    }
}
