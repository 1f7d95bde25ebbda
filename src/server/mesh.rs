//! The channels between cores, and the loops that read them.
//!
//! Two full meshes of bounded `shared_channel`s, one channel for every ordered pair of cores
//! in each:
//!
//! * the **primary** mesh carries what a core sends of its own accord: routing work from
//!   its connections, timers and start-up ([`Core::apply`]), hand-offs, syncs and their
//!   answers. Its receiving end is [`primary_loop`].
//! * the **relay** mesh carries what a core sends *because of* a message it received:
//!   today only a shared-subscription delivery passed on (`CoreMsg::Shared` with
//!   `redirected`), and the syncs that follow it. Its receiving end is [`relay_loop`].
//!
//! Why two: a loop that awaits a send while reading its own channel can deadlock. With one
//! mesh, core A's loop reading from B waits for room in A->B while B's loop reading from A
//! waits for room in B->A, and neither channel is ever drained (the test in
//! `mesh_tests.rs` builds exactly that, with channels of one slot). With two, the waits
//! form no cycle:
//!
//! 1. [`relay_loop`] never waits on another core. Handling a message the engine produced
//!    while handling another one yields packets for local clients and nothing for other
//!    cores (the engine passes a shared delivery on at most once: `redirected`); the loop
//!    delivers those packets without waiting (outboxes never block) and answers syncs from
//!    tasks of their own. So every relay channel is drained.
//! 2. [`primary_loop`] waits only for room in relay channels ([`Core::relay`]), which (1)
//!    drains. So every primary channel is drained.
//! 3. Everything else that waits for room in a primary channel (connections, timers, the
//!    answers to syncs) is a task no loop waits for, and (2) makes room.
//!
//! Order and syncs: a channel is FIFO, so what one core sends another through one mesh
//! arrives in order; a message passed on takes one more hop, as it did before. A sync that
//! arrives on the primary mesh is answered only once the messages this core passed on since
//! its last relay sync are processed (and durable) on their cores: a QoS 1/2 message
//! passed on is as safe when its publisher's acknowledgement leaves as one delivered
//! directly.

use std::rc::Rc;

use glommio::channels::shared_channel::{self, ConnectedReceiver, SharedReceiver, SharedSender};

use super::connection;
use super::local::{Core, CoreMail};
use crate::ownership::CoreId;

/// Messages (batches of routing work, a read's worth each) that may wait in one
/// core-to-core channel before senders wait. Small, so that a core that cannot keep up
/// makes the other core's readers wait soon (`egress`): with 4,096, QoS 0 pairs flat out
/// delivered 33k-55k msgs/s and held hundreds of MiB in the channels; with 64, 117k-161k
/// (two runs each, a loaded machine), and QoS 1 pairs did not change within the noise.
const MESH_CAPACITY: usize = 64;

/// [`MESH_CAPACITY`], or `BERTH_MESH_CAPACITY` from the environment: tests shrink the
/// channels to make them fill (it is not a setting operators need).
pub fn capacity() -> usize {
    std::env::var("BERTH_MESH_CAPACITY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(MESH_CAPACITY)
}

/// One core's ends of one mesh, before the executors connect them.
pub struct Ends {
    /// To every core by index; `None` at this core's own.
    pub senders: Vec<Option<SharedSender<CoreMail>>>,
    /// From every other core.
    pub receivers: Vec<SharedReceiver<CoreMail>>,
}

/// A full mesh of `capacity`-slot channels between `cores` cores, as each core's ends.
pub fn full_mesh(cores: usize, capacity: usize) -> Vec<Ends> {
    let mut ends: Vec<Ends> = (0..cores)
        .map(|_| Ends {
            senders: Vec::with_capacity(cores),
            receivers: Vec::with_capacity(cores.saturating_sub(1)),
        })
        .collect();
    for from in 0..cores {
        for to in 0..cores {
            if from == to {
                ends[from].senders.push(None);
            } else {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                ends[from].senders.push(Some(tx));
                ends[to].receivers.push(rx);
            }
        }
    }
    ends
}

/// Connected senders of one mesh, and tasks that yield its connected receivers.
pub struct Connected {
    pub senders: Vec<Option<shared_channel::ConnectedSender<CoreMail>>>,
    pub receivers: Vec<glommio::Task<ConnectedReceiver<CoreMail>>>,
}

/// Connects this core's ends of a mesh. Receivers connect in tasks of their own: a connect
/// waits for its peer, and the peer may be connecting its senders first.
pub async fn connect(ends: Ends) -> Connected {
    let receivers = ends
        .receivers
        .into_iter()
        .map(|rx| glommio::spawn_local(async move { rx.connect().await }))
        .collect();
    let mut senders = Vec::with_capacity(ends.senders.len());
    for tx in ends.senders {
        senders.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    Connected { senders, receivers }
}

/// Reads one channel of the primary mesh until its sender is gone.
pub async fn primary_loop(core: Rc<Core>, inbox: ConnectedReceiver<CoreMail>) {
    while let Some(mail) = inbox.recv().await {
        match mail {
            CoreMail::Handoff(handoff) => connection::take_handoff(&core, handoff),
            CoreMail::Core(batch) => {
                // As a connection's reader does: while this core's subscribers are behind,
                // taking more routing work would only fill outboxes that drop it; waiting
                // fills the channel, and the other core's readers wait on it.
                core.egress.caught_up().await;
                let now = std::time::Instant::now();
                core.refresh_acl();
                let mark = core.egress.mark();
                for msg in batch {
                    let effects = core.broker.borrow_mut().on_core_msg(msg, now);
                    core.relay(effects).await;
                }
                // And as a reader whose read fed full outboxes does (`egress`).
                if core.egress.sheds(mark) {
                    core.egress.drained_once().await;
                }
            }
            CoreMail::Sync { from, token } => answer_sync(&core, from, token, true),
            CoreMail::Synced {
                token,
                from,
                refused,
            } => core.synced_by(token, from, refused),
        }
    }
}

/// Reads one channel of the relay mesh until its sender is gone. Never waits on another
/// core (see the module documentation).
pub async fn relay_loop(core: Rc<Core>, inbox: ConnectedReceiver<CoreMail>) {
    while let Some(mail) = inbox.recv().await {
        match mail {
            CoreMail::Core(batch) => {
                let now = std::time::Instant::now();
                core.refresh_acl();
                for msg in batch {
                    let effects = core.broker.borrow_mut().on_core_msg(msg, now);
                    core.deliver_here(effects);
                }
            }
            CoreMail::Sync { from, token } => answer_sync(&core, from, token, false),
            CoreMail::Synced {
                token,
                from,
                refused,
            } => core.synced_by(token, from, refused),
            CoreMail::Handoff(handoff) => connection::take_handoff(&core, handoff),
        }
    }
}

/// Answers core `from`'s sync from a task of its own, so that no loop waits for room in a
/// channel to a core that may be waiting on it. The answer says that what `from` sent
/// before the sync is processed here and as durable as the `fsync` setting promises, and
/// how many messages this core has refused to store (the asking core compares it with what
/// it saw before it routed: `gate::Refusals`). `passed_on`: a sync on the primary mesh
/// also waits until what this core passed on since its last relay sync is processed where
/// it went.
fn answer_sync(core: &Rc<Core>, from: CoreId, token: u64, passed_on: bool) {
    let (durable, refused) = {
        let broker = core.broker.borrow();
        (broker.durable(), broker.counters.refused())
    };
    let relayed = if passed_on {
        core.take_relayed()
    } else {
        Vec::new()
    };
    let core = core.clone();
    glommio::spawn_local(async move {
        if let Some(durable) = durable {
            if let Err(error) = durable.await {
                tracing::error!(%error, "the log could not be made durable");
            }
        }
        core.sync_relays(&relayed).await;
        let reply = CoreMail::Synced {
            token,
            from: core.id,
            refused,
        };
        let _ = core.send_to(from, reply).await;
    })
    .detach();
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
