//! Two cores that pass shared-subscription deliveries to each other while both channels
//! between them are full: the loops of `mesh` must not deadlock.
//!
//! Each core holds one offline member of `$share/g/t` and believes (a `ShareCount` that
//! is never corrected) that the other core holds a connected one. So every message a core
//! publishes goes to the other core, which finds no connected member of its own and passes
//! it back, where it queues in the offline member's session. With channels of one slot and
//! both cores publishing at once, both loops must send while both channels are full. With
//! a single mesh, where the loop that reads from B also sends to B, that deadlocks at once
//! (measured: 2 and 3 of 2,000 messages back after 30 s).
//!
//! Once a core's publishes are done, a sync with the other core returns only when every
//! message it passed back has been processed here, so the count is checked right after the
//! sync. (That check is weak: the loop that reads passed-on messages drains its channel
//! without yielding, so it usually wins the race even without the relay sync.)

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use glommio::{LocalExecutorBuilder, Placement};

use crate::broker::{Broker, CoreMsg, SessionPolicy, WallClock};
use crate::config::Config;
use crate::ownership::CoreId;
use crate::protocol::{PacketId, Properties, Publish, QoS, Subscribe};
use crate::server::gate::StoreGate;
use crate::server::local::Core;
use crate::server::mesh;
use crate::session::state::QueueLimits;
use crate::topic::{ShareName, SharedFilter, TopicFilter};

const MESSAGES: usize = 2_000;
const DEADLINE: Duration = Duration::from_secs(30);

fn policy() -> SessionPolicy {
    SessionPolicy {
        max_session_expiry: Duration::from_secs(3600),
        limits: QueueLimits {
            max_messages: MESSAGES * 2,
            ..Default::default()
        },
        max_sessions: usize::MAX,
        max_subscriptions: usize::MAX,
    }
}

/// Core `id`'s engine: an offline member of the group, and the belief that `other` holds a
/// connected one.
fn engine(id: usize, other: usize) -> Broker {
    let now = Instant::now();
    let mut broker = Broker::new(CoreId(id), 2, policy(), WallClock::now_from_system());
    let member: ByteString = format!("member-{id}").into();
    // What the engine asks to send to the other core is dropped here: the other core's
    // view of this one stays wrong, as it may for a while when channels are full.
    broker
        .connect(&member, false, Duration::from_secs(3600), 100, now)
        .expect("room for a session");
    let subscribe = Subscribe::one(PacketId::new(1).unwrap(), "$share/g/t", QoS::AtLeastOnce);
    let outcome = broker.subscribe(&member, subscribe, now);
    assert_eq!(outcome.sub_ack.reason_codes[0].0, 1);
    broker.disconnect(&member, None, now);
    let group = SharedFilter {
        group: ShareName::new("g").unwrap(),
        filter: TopicFilter::new("t").unwrap(),
    };
    let share_count = CoreMsg::ShareCount {
        from: CoreId(other),
        group,
        members: 1,
        online: 1,
    };
    broker.on_core_msg(share_count, now);
    broker
}

fn message(n: usize) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        packet_id: PacketId::new(1),
        properties: Properties::default(),
        payload: Bytes::from(n.to_be_bytes().to_vec()),
    }
}

#[test]
fn cores_passing_shared_deliveries_to_each_other_over_full_channels_do_not_deadlock() {
    let primary = mesh::full_mesh(2, 1);
    let relay = mesh::full_mesh(2, 1);
    let gate = Arc::new(StoreGate::new(2, u64::MAX));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (id, (primary, relay)) in primary.into_iter().zip(relay).enumerate() {
        let gate = gate.clone();
        let finished = finished.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("mesh-test-{id}"))
            .io_memory(512 << 10)
            .spawn(move || async move {
                let primary = mesh::connect(primary).await;
                let relay = mesh::connect(relay).await;
                let broker = engine(id, 1 - id);
                let core = Rc::new(Core::new(
                    CoreId(id),
                    Config::default(),
                    primary.senders,
                    relay.senders,
                    broker,
                    gate,
                    Default::default(),
                ));
                for task in primary.receivers {
                    glommio::spawn_local(mesh::primary_loop(core.clone(), task.await)).detach();
                }
                for task in relay.receivers {
                    glommio::spawn_local(mesh::relay_loop(core.clone(), task.await)).detach();
                }
                let started = Instant::now();
                let publisher: ByteString = format!("publisher-{id}").into();
                // Publishes everything, then syncs with the other core: once that returns,
                // every message has come back here (a sync waits for what was passed on).
                let after_sync = Rc::new(std::cell::Cell::new(None));
                let publishing = glommio::spawn_local({
                    let core = core.clone();
                    let after_sync = after_sync.clone();
                    async move {
                        for n in 0..MESSAGES {
                            let effects = core.broker.borrow_mut().publish(
                                &publisher,
                                message(n),
                                Instant::now(),
                            );
                            core.apply(effects).await;
                        }
                        core.sync_peers().await;
                        after_sync.set(Some(core.broker.borrow().stored_messages()));
                    }
                })
                .detach();
                // Both cores keep their loops running until both are done.
                let mut done = false;
                while started.elapsed() < DEADLINE {
                    if !done && after_sync.get().is_some() {
                        done = true;
                        finished.fetch_add(1, Ordering::AcqRel);
                    }
                    if finished.load(Ordering::Acquire) == 2 {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                drop(publishing);
                after_sync.get()
            })
            .expect("an executor");
        handles.push(handle);
    }
    let stored: Vec<Option<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        stored,
        vec![Some(MESSAGES); 2],
        "messages queued on each core once its publishes are synced (None: not done within {DEADLINE:?})"
    );
}
