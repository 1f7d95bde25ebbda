//! The runtime around the protocol core: one pinned glommio executor per core, each with
//! its own listener on the shared address, its own connections and its links to the
//! other cores.
//!
//! Start-up locks the data directory, then binds every listener (each configured address,
//! on every core) before any executor starts
//! (so port 0 resolves to one port for all cores, and an address another process listens on
//! is refused), wires two full meshes of bounded `shared_channel`s between the cores (`mesh`),
//! and prints the ready line only once every core accepts.
//!
//! Signals: SIGINT and SIGTERM set the shutdown flag every core polls; SIGHUP re-reads the
//! configuration on a thread of its own and re-applies what can change (see [`reload`]).

#![allow(unsafe_code)] // Only in `handoff`, `listener` and `storage` (flock), each block with its SAFETY note.

mod accept;
mod admin;
mod auth_cell;
mod connection;
mod egress;
mod engine;
mod gate;
mod handoff;
mod io_stats;
mod limits;
mod linger;
mod listener;
mod local;
mod mesh;
mod nodes;
mod outbox;
mod reading;
mod refusal;
pub mod reload;
mod storage;
mod sys;
mod tls;
mod transport;
mod websocket;
mod writer;

use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
pub use crate::ownership::CoreId;
use local::Core;
pub use reload::Reload;

/// How often an idle executor checks for a shutdown request. Signals arrive on a plain
/// thread; a slow poll of an atomic flag avoids busy-polling the executor.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// How often a core's reactor wakes on a timer while the core starts (see `run`).
const START_TICK: Duration = Duration::from_millis(20);
/// How long connections get to say goodbye at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long start-up waits for the cluster bridge before the ready line (`crate::nats`).
const CLUSTER_READY_WAIT: Duration = Duration::from_secs(15);

/// Runs the broker until SIGINT or SIGTERM; SIGHUP runs `reload`. `ready` is called with
/// the bound addresses (and each one's transport, in the order configured) once every core
/// accepts connections.
pub fn run(
    config: Config,
    reload: Reload,
    ready: impl FnOnce(&[(std::net::SocketAddr, &'static str)]),
) -> anyhow::Result<()> {
    let cores = config.cores;
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    // Held until the process ends: a second broker on this data directory stops here.
    let _data_dir_lock = storage::lock_data_dir(&config.data_dir)?;
    storage::check_layout(&config.data_dir, cores)?;
    // What the admin API changed at run time comes back over the config file's values.
    let mut config = config;
    let (settings, settings_changed) =
        crate::config::Settings::of(&config).load_over(&config.data_dir)?;
    settings.apply_to(&mut config);
    // The guards are held until the process ends too: a second broker on an address fails.
    // `per_core[i]` holds core i's socket for every listener.
    let mut per_core: Vec<Vec<_>> = (0..cores).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(config.listeners.len());
    let mut _address_guards = Vec::with_capacity(config.listeners.len());
    for configured in &config.listeners {
        let (sockets, address, guard) = listener::bind_all(configured.address, cores)
            .with_context(|| format!("cannot listen on {}", configured.address))?;
        for (core, socket) in per_core.iter_mut().zip(sockets) {
            core.push((socket, configured.transport.clone()));
        }
        bound.push((address, configured.kind()));
        _address_guards.push(guard);
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    // Cores whose recovered subscriptions every other core has heard (see below).
    let announced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("cannot install signal handlers")?;
    }
    // Installed before the ready line: SIGHUP's default action would end the process.
    let mut hangups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("cannot install the SIGHUP handler")?;
    let hangup_handle = hangups.handle();
    // Who may connect: read by every core at each CONNECT, replaced whole on SIGHUP (a
    // password file that no longer reads keeps the old one: the reload fails as a whole).
    let auth: local::SharedAuth = Arc::new(auth_cell::AuthCell::new(config.auth.clone()));
    let mut reload = reload;
    reload.on_reload("password_file/acl_file", {
        let auth = auth.clone();
        move |config| {
            auth.replace(config.auth.clone());
        }
    });
    reload.on_reload("listener certificates", {
        let listeners = config.listeners.clone();
        move |config| tls_reload(&listeners, &config.listeners)
    });
    reload.on_reload("admin certificate", {
        let admin_tls = config.admin_tls.clone();
        move |config| {
            if let (Some(current), Some(newer)) = (&admin_tls, &config.admin_tls) {
                current.replace(newer);
                tracing::info!("admin API TLS certificate reloaded");
            }
        }
    });
    // Bans: replaced whole on SIGHUP like the password file (`limits`).
    let shared_limits = limits::SharedLimits::new(&config.limits, config.cluster.cluster());
    reload.on_reload("ban_file", {
        let shared = shared_limits.clone();
        move |config| shared.replace_bans(config.limits.bans.clone())
    });
    // The slot map: replaced whole on SIGHUP like the bans (a map that does not read, or
    // is not whole, fails the reload and keeps the old one). A node that leaves the
    // cluster needs a restart. With NATS the bucket is the authority and the file only its
    // seed: SIGHUP leaves the map alone (`berth cluster assign` changes it).
    if config.cluster.node.is_some() && config.cluster.nats.is_empty() {
        reload.on_reload("slot_map", {
            let shared = shared_limits.clone();
            move |config| {
                if let Some(cluster) = config.cluster.cluster() {
                    shared.replace_cluster(cluster);
                }
            }
        });
    }
    let reloader = std::thread::Builder::new()
        .name("berth-reload".into())
        .spawn(move || {
            let mut reload = reload;
            for _ in hangups.forever() {
                reload_now(&mut reload);
            }
        })
        .context("cannot start the reload thread")?;

    // Two meshes of channels between the cores: why two, see `mesh`.
    let capacity = mesh::capacity();
    let primary = mesh::full_mesh(cores, capacity);
    let relay = mesh::full_mesh(cores, capacity);

    let gate = Arc::new(gate::StoreGate::new(cores, config.max_stored_bytes));
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores > online {
        // Allowed (see `--cores`): a data directory keeps its core count, which a smaller
        // machine may need to start with.
        tracing::warn!(
            cores,
            cpus = online,
            "more cores than CPUs: the executors run unpinned and share the CPUs"
        );
    }
    // The admin API's channels, one per core (`admin::cores`).
    let (admin_asks, mut admin_inboxes): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| {
            let (ask, inbox) = flume::bounded::<admin::cores::Ask>(64);
            (ask, Some(inbox))
        })
        .unzip();
    if !config.admin_enabled() {
        admin_inboxes.iter_mut().for_each(|inbox| *inbox = None);
    }
    // One node of a cluster: the NATS bridge's thread and each core's inbox from it.
    // With NATS the bucket `berth_slots` holds the slot map in force (`nats::slots`).
    let apply_map: crate::nats::ApplyMap = {
        let shared = shared_limits.clone();
        let node = config.cluster.node.clone().unwrap_or_default();
        Box::new(move |map| {
            shared.replace_cluster(crate::cluster::Cluster {
                node: node.clone(),
                map,
            })
        })
    };
    let cluster = crate::nats::start(&config.cluster, cores, apply_map)
        .context("cannot start the cluster bridge")?;
    let (to_bridge, mut node_inboxes, cluster_ready, joined) = match cluster {
        Some(c) => (Some(c.to_bridge), c.inboxes, Some(c.ready), Some(c.joined)),
        None => (None, (0..cores).map(|_| None).collect(), None, None),
    };
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<storage::Replayed>>();
    let mut executors = Vec::with_capacity(cores);
    for (index, ((listener_fds, primary), relay)) in
        per_core.into_iter().zip(primary).zip(relay).enumerate()
    {
        let placement = if cores <= online {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let config = config.clone();
        let shutdown = shutdown.clone();
        let announced = announced.clone();
        let gate = gate.clone();
        let auth = auth.clone();
        let admin_inbox = admin_inboxes[index].take();
        let shared_limits = shared_limits.clone();
        let ready_tx = ready_tx.clone();
        let node_inbox = node_inboxes[index].take();
        let to_bridge = to_bridge.clone();
        let joined = joined.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("berth-core-{index}"))
            // Sized to start under an 8 MiB memlock as an ordinary user (RUNTIME-FACTS).
            .io_memory(512 << 10)
            .ring_depth(1024)
            .spawn(move || async move {
                let id = CoreId(index);
                // Until the shutdown poll below runs, nothing wakes this reactor on a timer:
                // a cross-core wake-up that glommio's shared channels lose (they have lost
                // some before: glommio issues 261, 273) would leave the core asleep for good
                // at start-up. Suspected, not reproduced: twice, under heavy load, a broker
                // printed nothing for 30 s. Each tick makes the reactor look at its channels
                // again (`Reactor::react` wakes every waiting connect); it stops once the
                // core is ready.
                let starting = glommio::spawn_local(async {
                    loop {
                        glommio::timer::sleep(START_TICK).await;
                    }
                });
                let primary = mesh::connect(primary).await;
                let relay = mesh::connect(relay).await;
                let (broker, announce, replayed) = match storage::open_core(&config, id, cores, gate.signal(index)) {
                    Ok(opened) => opened,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let core = Rc::new(Core::new(id, config, primary.senders, relay.senders, broker, gate, auth).with_limits(shared_limits).with_nodes(to_bridge.map(nodes::NodeLink::new)));
                let node_loop = node_inbox.map(|inbox| glommio::spawn_local(nodes::node_loop(core.clone(), inbox)));
                for task in primary.receivers {
                    glommio::spawn_local(mesh::primary_loop(core.clone(), task.await)).detach();
                }
                for task in relay.receivers {
                    glommio::spawn_local(mesh::relay_loop(core.clone(), task.await)).detach();
                }
                // Every core learns which filters (and shared groups) the recovered
                // sessions of this one hold before any client can publish.
                core.apply(announce).await;
                core.sync_peers().await;
                core.recovered_to_nodes();
                // Once every core knows every other core's subscriptions, inbound QoS 2
                // messages a crash left unconfirmed are routed again (each core skips
                // what it took before), and reach their cores before clients connect.
                announced.fetch_add(1, Ordering::AcqRel);
                while announced.load(Ordering::Acquire) < cores && !shutdown.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                if let Some(joined) = joined.as_ref().filter(|_| core.broker.borrow().has_reroute()) {
                    // In a cluster they also go to the other nodes, once their interest
                    // is here (bounded: without NATS they reach this node's sessions).
                    let waited = std::time::Instant::now();
                    while !joined.load(Ordering::Acquire) && waited.elapsed() < CLUSTER_READY_WAIT && !shutdown.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
                let rerouted = core.broker.borrow_mut().route_again(std::time::Instant::now());
                core.apply(rerouted).await;
                core.sync_peers().await;
                let expiry = glommio::spawn_local(expiry_loop(core.clone()));
                let admin = admin_inbox.map(|inbox| glommio::spawn_local(admin::cores::answer_loop(core.clone(), inbox)));
                let sys_interval = core.config.sys_interval;
                let sys = (!sys_interval.is_zero()).then(|| glommio::spawn_local(sys::sys_loop(core.clone(), sys_interval, started)));
                let accept: Vec<_> = listener_fds.into_iter().enumerate().map(|(index, (fd, transport))| glommio::spawn_local(accept::accept_loop(core.clone(), listener::into_listener(fd), transport, index))).collect();
                let _ = ready_tx.send(Ok(replayed));
                drop(starting);
                let mut over_bound = false;
                while !shutdown.load(Ordering::Relaxed) {
                    glommio::timer::sleep(SHUTDOWN_POLL).await;
                    report_stored(&core, &mut over_bound);
                }
                drop(accept);

                drop(expiry);
                drop(sys);
                drop(admin);
                drop(node_loop);
                core.shut_down_connections();
                let started = std::time::Instant::now();
                while core.connected() > 0 && started.elapsed() < SHUTDOWN_GRACE {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                tracing::info!(core = %id, accepted = core.stats.accepted.get(), handed_off = core.stats.handed_off.get(), "core stopped");
            })
            .map_err(|e| anyhow::anyhow!("cannot start the executor for core {index}: {e}"))?;
        executors.push(handle);
    }
    drop(ready_tx);
    let mut replayed = storage::Replayed::default();
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(result) => replayed.add(result?),
            Err(_) => anyhow::bail!("an executor stopped during start-up"),
        }
    }
    replayed.log_summary();
    if let Some(cluster_ready) = cluster_ready {
        // Bounded: a node whose NATS is away serves its own clients meanwhile.
        match cluster_ready.recv_timeout(CLUSTER_READY_WAIT) {
            Ok(()) => tracing::info!("cluster: this node is ready"),
            Err(_) => tracing::warn!(
                wait = ?CLUSTER_READY_WAIT,
                "cluster: NATS not ready; serving this node's clients, joining once it is"
            ),
        }
    }
    if config.admin_enabled() {
        let admin = admin::Admin {
            cores: admin_asks,
            keys: config.admin_keys.clone(),
            started,
            settings: std::cell::RefCell::new((settings, settings_changed)),
            data_dir: config.data_dir.clone(),
            tls: config.admin_tls.clone(),
            idle: config.admin_idle_timeout,
        };
        let addr = admin::start(config.admin_listen, admin)?;
        let tls = config.admin_tls.is_some();
        tracing::info!(%addr, keys = config.admin_keys.is_some(), tls, "admin API listening");
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "berth admin API on {addr}");
        let _ = stdout.flush();
    } else {
        drop(admin_asks);
        tracing::info!("admin API off: set admin_keys_file (or admin_allow_anonymous on loopback)");
    }
    ready(&bound);
    let trimmer = std::thread::Builder::new()
        .name("berth-trim".into())
        .spawn({
            let shutdown = shutdown.clone();
            move || trim_heap_until(&shutdown)
        })
        .context("cannot start the heap trimmer thread")?;
    for handle in executors {
        handle
            .join()
            .map_err(|e| anyhow::anyhow!("executor failed: {e:?}"))?;
    }
    let _ = trimmer.join();
    hangup_handle.close();
    let _ = reloader.join();
    Ok(())
}

/// Puts the certificates of a configuration read again in force for new connections on
/// each TLS listener. Listeners are matched by place and address: adding, removing or
/// moving one takes a restart (said in the log).
fn tls_reload(running: &[crate::config::Listener], reread: &[crate::config::Listener]) {
    for (index, listener) in running.iter().enumerate() {
        let Some(current) = listener.tls() else {
            continue;
        };
        match reread.get(index).map(|l| (l.address, l.tls())) {
            Some((address, Some(newer))) if address == listener.address => {
                current.replace(newer);
                tracing::info!(address = %listener.address, "TLS certificates reloaded");
            }
            _ => {
                tracing::warn!(address = %listener.address, "listeners changed in the config file: they change at restart; this one keeps its certificates")
            }
        }
    }
}

/// One SIGHUP: re-reads the configuration and says in the log what it re-applied.
fn reload_now(reload: &mut Reload) {
    let file = reload
        .config_file()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string());
    tracing::info!(config = %file, "SIGHUP: reloading the configuration");
    match reload.reload() {
        Ok(applied) => {
            tracing::info!(config = %file, applied = %applied.join(","), "configuration reloaded")
        }
        Err(error) => {
            tracing::error!(config = %file, %error, "configuration not reloaded; nothing changed")
        }
    }
}

/// How often freed heap memory is handed back to the OS.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Gives freed heap pages back to the OS every `TRIM_INTERVAL`, off the executors. glibc
/// keeps what a burst of connections freed (their read and write buffers) in its arenas;
/// measured with `berth-loadgen connect --connections 100000 --concurrency 5000 --persistent
/// --subscribe`, the broker's anonymous memory per idle session went from 3.4 KB to 1.5 KB
/// after a trim.
fn trim_heap_until(shutdown: &AtomicBool) {
    let mut waited = Duration::ZERO;
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(SHUTDOWN_POLL);
        waited += SHUTDOWN_POLL;
        if waited >= TRIM_INTERVAL {
            waited = Duration::ZERO;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Tells the store gate what this core holds (every 100 ms, the period
/// as the shutdown poll); core 0 logs when the broker-wide bound starts and stops refusing.
fn report_stored(core: &Core, over_bound: &mut bool) {
    let bytes = core.broker.borrow().stored_bytes();
    core.gate.set_stored(core.id.0, bytes);
    if core.id.0 != 0 {
        return;
    }
    let over = core.gate.closed() == Some(gate::Closed::StoredBytes);
    if over != *over_bound {
        *over_bound = over;
        let stored = core.gate.stored_bytes();
        let max = core.gate.max_stored_bytes();
        if over {
            tracing::warn!(stored_bytes = stored, max_stored_bytes = max, "messages held reached max_stored_bytes: QoS 1/2 publishes are refused until sessions take some");
        } else {
            tracing::warn!(
                stored_bytes = stored,
                max_stored_bytes = max,
                "messages held are below max_stored_bytes again: QoS 1/2 publishes are accepted"
            );
        }
    }
}

/// Once a second: ends offline sessions whose expiry has passed, and starts a checkpoint
/// of the log once it has grown enough.
/// Sweeps expired sessions, delayed wills and messages every second. The first sweep runs
/// at once: a session that recovery brought back with expiry 0 (it was online with
/// expiry 0 when the broker stopped) ends before a client can find it present.
async fn expiry_loop(core: Rc<Core>) {
    loop {
        let now = std::time::Instant::now();
        core.refresh_acl();
        let effects = core.broker.borrow_mut().expire(now);
        core.apply(effects).await;
        if core.broker.borrow().checkpoint_due() {
            glommio::spawn_local(checkpoint(core.clone())).detach();
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs a checkpoint a bounded step at a time, sleeping between steps (`checkpoint_pause`)
/// so that the executor polls its sockets in between (a plain yield keeps the task queue
/// busy and the reactor waits) and the checkpoint's writes stay behind the log's segment
/// preparation. `checkpoint_due` is false while it runs.
async fn checkpoint(core: Rc<Core>) {
    let started = std::time::Instant::now();
    let mut longest = Duration::ZERO;
    loop {
        let step = std::time::Instant::now();
        let result = core.broker.borrow_mut().checkpoint_step(step);
        longest = longest.max(step.elapsed());
        match result {
            Ok(None) => {
                let pause = core.broker.borrow().checkpoint_pause();
                glommio::timer::sleep(pause).await
            }
            Ok(Some(report)) => {
                core.stats
                    .checkpoints
                    .0
                    .borrow_mut()
                    .observe(started.elapsed());
                tracing::info!(
                    core = %core.id,
                    sessions = report.sessions,
                    messages = report.messages,
                    kept = report.kept,
                    retained = report.retained,
                    freed_bytes = report.bytes_freed,
                    steps = report.steps,
                    longest_step_us = longest.as_micros() as u64,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "log checkpoint"
                );
                return;
            }
            Err(error) => {
                tracing::error!(core = %core.id, %error, "log checkpoint failed");
                return;
            }
        }
    }
}
