//! The `$SYS` timer of each core: every `sys_interval` a core takes its snapshot (the
//! engine's figures and its connections' counters) and sends it to core 0, which adds up
//! the latest of every core and publishes what changed (see `broker::sys`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::ownership::ShardId;
use super::shard::Shard;
use crate::broker::{CoreMsg, Effects};

/// The core that publishes `$SYS`.
const PUBLISHER: ShardId = ShardId(0);

/// Runs until dropped. `started` is when the broker started (for the uptime).
pub async fn sys_loop(shard: Rc<Shard>, interval: Duration, started: Instant) {
    loop {
        glommio::timer::sleep(interval).await;
        let mut stats = shard.broker.borrow().core_stats();
        shard.stats.fill(&mut stats);
        let effects = if shard.id == PUBLISHER {
            let mut broker = shard.broker.borrow_mut();
            broker.record_stats(shard.id, stats);
            broker.publish_sys(started.elapsed(), Instant::now())
        } else {
            let from = shard.id;
            Effects {
                to_clients: Vec::new(),
                to_cores: vec![(PUBLISHER, CoreMsg::Stats { from, stats })],
            }
        };
        shard.apply(effects).await;
    }
}
