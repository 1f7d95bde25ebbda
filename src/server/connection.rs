//! A client connection from accept to close: the I/O around its [`Link`].
//!
//! [`accepted`] runs on the core that accepted the socket: it reads the CONNECT (bounded
//! by the connect timeout), works out the owner core of the client id and either serves
//! the connection itself or hands it over. [`serve`] runs on the owner: it registers the
//! client id, starts the writer task, and runs the read loop, which feeds what it reads
//! to the link and carries out the steps the link returns (see the driver contract on
//! [`Link`]). Every protocol decision is the link's; this file reads and writes bytes,
//! waits, and logs.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncWriteExt, ReadHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use tracing::Instrument;

use super::engine::CoreEngine;
use super::io_stats::Refused;
use super::limits::ConnectionSlot;
use super::linger::{linger, Linger};
use super::local::{ConnInfo, Control, Core, CoreMail, Handoff, IoStats};
use super::outbox::Outbox;
use super::reading::{next_read, read_more, CONNECT_READ, SMALL_READ};
use super::refusal::{hex, not_admitted, send_refusal};
use super::transport::{self, Attached, Transport};
use super::writer::write_loop;
use crate::auth::Verdict;
use crate::ownership::{assign_client_id_where, owner_of, CoreId};
use crate::protocol::{self, Connect};
use crate::session::connect::{claimed_level, refuse_malformed, Refusal};
use crate::session::credentials::{refuse_credentials, refuse_session_of_another};
use crate::session::link::{LinkLimits, Opening};
use crate::session::{End, Link, Step};

/// Entry point for a freshly accepted connection, holding its place under
/// `max_connections` (`slot`) until it ends or moves to its owner core.
pub async fn accepted<S: Transport>(core: Rc<Core>, stream: S, slot: ConnectionSlot) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let listener = stream
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(core = %core.id, %peer, %listener, "connection accepted");
    let mut stream = stream;
    let mut buf = BytesMut::new();
    let timeout = core.config.connect_timeout;
    let first = future::or(
        read_connect(
            &mut stream,
            &mut buf,
            core.config.max_packet_size,
            &core.stats,
        ),
        async {
            glommio::timer::sleep(timeout).await;
            Err(ConnectFailure::Timeout)
        },
    )
    .await;
    let connect = match first {
        Ok(connect) => connect,
        Err(failure) => {
            core.stats
                .connect_failures
                .set(core.stats.connect_failures.get() + 1);
            if let ConnectFailure::Decode { error, level } = failure {
                let refusal = refuse_malformed(&error, level);
                let code = refusal.as_ref().map(|r| hex(r.reason_code));
                match refusal {
                    Some(refusal) => {
                        send_refusal(&core, &mut stream, refusal, None).await;
                        let _ = stream.flush().await;
                    }
                    None => core.stats.refused(Refused {
                        code: None,
                        why: "malformed CONNECT",
                    }),
                }
                tracing::info!(core = %core.id, client_id = "<unknown>", %peer, reason_code = code, %error, "CONNECT refused");
                linger(stream).await;
            } else {
                tracing::info!(core = %core.id, %peer, ?failure, "connection closed before CONNECT completed");
            }
            return;
        }
    };
    let mut connect = Box::new(connect);
    // A certificate's identity replaces the CONNECT's username (Mosquitto's
    // `use_identity_as_username`), and the password file is not asked about it.
    let identity = stream.certificate_username();
    if let Some(identity) = &identity {
        connect.username = identity.as_deref().map(Into::into);
    }
    if let Some(why) = core.limits.check_connect(&connect, peer) {
        return not_admitted(&core, stream, &connect, why, peer).await;
    }
    if !authenticated(&core, &mut stream, &connect, peer, identity.is_some()).await {
        linger(stream).await;
        return;
    }
    // A client without an id gets one that this core owns (see `serve`), so it never moves,
    // and in a cluster one whose slot this node owns (`check_connect` has refused a client
    // without an id on a node that owns no slot).
    let owner = if connect.client_id.is_empty() {
        core.id
    } else {
        owner_of(&connect.client_id, core.cores)
    };
    if owner == core.id {
        serve(core.clone(), stream, connect, buf, (core.id, peer), slot).await;
        return;
    }
    let (fd, transport) = match stream.detach() {
        Ok(detached) => detached,
        Err(e) => {
            tracing::warn!(core = %core.id, %peer, error = %e, "cannot duplicate socket for hand-off");
            return;
        }
    };
    let handoff = Handoff {
        fd,
        transport,
        connect,
        rest: buf,
        accepted_on: core.id,
        peer,
        slot,
    };
    core.stats.handed_off.set(core.stats.handed_off.get() + 1);
    if core
        .send_to(owner, CoreMail::Handoff(handoff))
        .await
        .is_err()
    {
        tracing::warn!(core = %core.id, %owner, "owner core is gone; dropping connection");
    }
}

// Fields are read through `Debug` in the log lines.
#[allow(dead_code)]
#[derive(Debug)]
enum ConnectFailure {
    Timeout,
    Closed,
    Io(std::io::Error),
    Decode {
        error: protocol::DecodeError,
        level: Option<u8>,
    },
}

async fn read_connect(
    stream: &mut impl Transport,
    buf: &mut BytesMut,
    max_packet_size: u32,
    stats: &IoStats,
) -> Result<Connect, ConnectFailure> {
    // A CONNECT is most often a few dozen bytes: the first read is small, so that the
    // buffer the connection keeps (it becomes the read loop's) is small too.
    let mut chunk = CONNECT_READ;
    loop {
        // Read before decoding: a failed decode may have consumed the packet.
        let level = claimed_level(buf);
        match protocol::decode_connect(buf, max_packet_size) {
            Ok(Some(connect)) => {
                stats.received_connect();
                return Ok(connect);
            }
            Ok(None) => {}
            Err(error) => return Err(ConnectFailure::Decode { level, error }),
        }
        let got = read_more(stream, buf, stats, chunk)
            .await
            .map_err(ConnectFailure::Io)?;
        if got == 0 {
            return Err(ConnectFailure::Closed);
        }
        chunk = next_read(chunk, got);
    }
}

/// Checks the CONNECT's username and password; on a refusal writes its CONNACK and returns
/// false. A password hash runs on the executor's blocking thread, never on the executor.
async fn authenticated<S: Transport>(
    core: &Core,
    stream: &mut S,
    connect: &Connect,
    peer: SocketAddr,
    by_certificate: bool,
) -> bool {
    let auth = core.authenticator();
    let username = connect.username.as_deref();
    let verdict = match auth.precheck(username, connect.password.as_deref()) {
        // Certificate identities: a name is enough, none is never anonymous.
        _ if by_certificate && username.is_some() => Verdict::Allowed,
        _ if by_certificate => Verdict::NotAuthorized,
        Ok(verdict) => verdict,
        Err(check) if core.passed.borrow_mut().passed(&check) => Verdict::Allowed,
        Err(check) => {
            let (verdict, check) = glommio::executor()
                .spawn_blocking(move || (check.run(), check))
                .await;
            if verdict == Verdict::Allowed {
                core.passed.borrow_mut().remember(&check);
            }
            verdict
        }
    };
    let Some(refusal) = refuse_credentials(connect, verdict) else {
        return true;
    };
    core.stats
        .connect_failures
        .set(core.stats.connect_failures.get() + 1);
    tracing::info!(core = %core.id, client_id = %connect.client_id, username = username.unwrap_or(""), %peer, reason_code = %hex(refusal.reason_code), reason = %refusal.reason, "CONNECT refused");
    send_refusal(core, stream, refusal, None).await;
    let _ = stream.flush().await;
    false
}

/// The refusal of a CONNECT that would take over (or clean) a session another user's
/// connection took last (`Authenticator::may_take_session`).
fn refuse_takeover(core: &Core, opening: &Opening, certified: bool) -> Option<Refusal> {
    let connect = opening.connect();
    let broker = core.broker.borrow();
    let owner = broker.session_username(opening.client_id())?;
    let username = connect.username.as_deref();
    if core
        .authenticator()
        .may_take_session(owner, username, certified)
    {
        return None;
    }
    Some(refuse_session_of_another(connect))
}

/// Runs on the core that received a hand-off.
pub fn take_handoff(core: &Rc<Core>, handoff: Handoff) {
    core.stats.taken_in.set(core.stats.taken_in.get() + 1);
    let Handoff {
        fd,
        transport,
        connect,
        rest,
        accepted_on,
        peer,
        slot,
    } = handoff;
    let core = core.clone();
    let at = (accepted_on, peer);
    match transport::attach(fd, transport) {
        Ok(Attached::Plain(stream)) => spawn_serve(core, stream, connect, rest, at, slot),
        Ok(Attached::Tls(stream)) => spawn_serve(core, *stream, connect, rest, at, slot),
        Ok(Attached::WebSocket(stream)) => spawn_serve(core, stream, connect, rest, at, slot),
        Ok(Attached::WebSocketTls(stream)) => spawn_serve(core, *stream, connect, rest, at, slot),
        Err(error) => tracing::error!(core = %core.id, %peer, %error, "cannot take a hand-off"),
    }
}

/// Serves a handed-off connection in a task of its own (which ends once `serve` has started
/// the session's).
fn spawn_serve<S: Transport>(
    core: Rc<Core>,
    stream: S,
    connect: Box<Connect>,
    rest: BytesMut,
    at: (CoreId, SocketAddr),
    slot: ConnectionSlot,
) {
    glommio::spawn_local(serve(core, stream, connect, rest, at, slot)).detach();
}

/// Serves a connection on the core that owns its client id.
///
/// Once the connection is admitted its session runs in a task of its own, which holds the
/// connection's place in `max_connections` (`slot`) until it ends, and this returns: so an
/// idle connection's memory is that task's future alone, not also this function's (nor the
/// CONNECT reading of `accepted` or the hand-off's task), laid out beside it.
pub async fn serve<S: Transport>(
    core: Rc<Core>,
    mut stream: S,
    connect: Box<Connect>,
    rest: BytesMut,
    (accepted_on, peer): (CoreId, SocketAddr),
    slot: ConnectionSlot,
) {
    let client_id_sent = connect.client_id.clone();
    // Flapping bans live on the owner core, where the client id's disconnects are counted.
    if let Some(why) = core.limits.check_flapping(&client_id_sent, Instant::now()) {
        return not_admitted(&core, stream, &connect, why, peer).await;
    }
    let opened = Link::open(
        connect,
        &core.policy.borrow(),
        || assign_client_id_where(core.id, core.cores, rand::random, core.limits.assignable()),
        (core.id, accepted_on),
    );
    let opening = match opened {
        Ok(opening) => opening,
        Err(refusal) => {
            let reason = refusal.reason.clone();
            tracing::info!(core = %core.id, client_id = %client_id_sent, %peer, reason_code = %hex(refusal.reason_code), reason, "CONNECT refused");
            send_refusal(&core, &mut stream, refusal, None).await;
            linger(stream).await;
            return;
        }
    };
    // An id the broker assigned is new each time: it cannot flap.
    let flaps = !client_id_sent.is_empty();
    drop(client_id_sent);
    let client_id = opening.client_id().clone();
    let certified = stream.certificate_username().is_some();
    if let Some(refusal) = refuse_takeover(&core, &opening, certified) {
        tracing::info!(core = %core.id, client_id = %client_id, %peer, reason_code = %hex(refusal.reason_code), reason = %refusal.reason, "CONNECT refused");
        core.stats
            .connect_failures
            .set(core.stats.connect_failures.get() + 1);
        send_refusal(&core, &mut stream, refusal, None).await;
        linger(stream).await;
        return;
    }
    let span = tracing::info_span!("conn", client_id = %client_id, core = %core.id, %peer);
    let session = async move {
        let (serial, control, previous) = core.register(&client_id);
        if let Some(previous) = previous {
            // Wait until the connection we take over has stopped, so the two never overlap.
            let _ = previous.recv().await;
        }
        let (version, clean_start, keep_alive) = (
            opening.version(),
            opening.clean_start(),
            opening.keep_alive(),
        );
        let now = Instant::now();
        let (mut link, started) = match opening.start(now, &mut CoreEngine(&core)) {
            Ok(started) => started,
            Err(refusal) => {
                tracing::warn!(client_id = %client_id, %peer, reason_code = %hex(refusal.reason_code), "CONNECT refused: session limit reached");
                send_refusal(&core, &mut stream, refusal, None).await;
                core.unregister(&client_id, serial);
                linger(stream).await;
                return;
            }
        };
        link.set_limits(LinkLimits::new(
            core.publish_rate.get(),
            core.config.limits.max_topic_levels,
        ));
        core.apply(started.effects).await;
        tracing::info!(
            protocol = ?version,
            clean_start,
            session_present = started.session_present,
            keep_alive = keep_alive.as_secs(),
            %accepted_on,
            "CONNECT accepted"
        );

        let _ = stream.set_nodelay(true);
        // A client that does not read its socket for this long is dropped, so that it
        // cannot hold its writer (and the connection's memory) forever.
        let _ = stream.set_write_timeout(Some(core.config.write_timeout));
        let (reader, writer) = futures_lite::io::split(stream);
        let (out, out_rx, queued) = Outbox::new(core.config.max_outbox_bytes, core.egress.clone());
        let out = Rc::new(out);
        let (write_failed, writer_failed) = local_channel::new_bounded(1);
        let writer_task = glommio::spawn_local(write_loop(
            core.clone(),
            (client_id.clone(), serial),
            writer,
            out_rx,
            queued,
            started.limits,
            write_failed,
        ));
        out.send(started.conn_ack);
        for packet in started.resume {
            if !out.send(packet) {
                core.stats.outbox_dropped(core.egress.behind());
            }
        }
        core.attach_outbox(&client_id, serial, out.clone());
        let connected_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let info = ConnInfo {
            peer,
            protocol: version,
            connected_at_ms,
        };
        core.describe(&client_id, serial, info);
        let mut reader = reader;
        let mut taken_over = None;
        let end = read_loop(
            &core,
            &out,
            &mut link,
            (&mut reader, rest),
            (control, writer_failed),
            &mut taken_over,
        )
        .await;
        let reason_code = end.disconnect_reason().map(hex);
        if matches!(end, End::WriteStalled(_)) {
            tracing::warn!(reason = %end, "client disconnected");
        } else {
            tracing::info!(reason = %end, reason_code, "client disconnected");
        }
        if flaps {
            core.limits.disconnected(&client_id, Instant::now());
        }
        let current = core.is_current(&client_id, serial);
        let lingers = link.close(&end, current, Instant::now(), &mut CoreEngine(&core));
        // The close-out: the link's last packets, the session going offline, and the writer
        // sending what is queued before it ends (once every sender is gone, the registry's
        // included).
        let close_out = async {
            carry_out(&core, &out, &mut link).await;
            if core.is_current(&client_id, serial) {
                let effects = link.go_offline(Instant::now(), &mut CoreEngine(&core));
                core.apply(effects).await;
            }
            drop(link);
            core.detach_outbox(&client_id, serial);
            drop(out);
            let _ = writer_task.await;
        };
        // After a DISCONNECT the input is drained from the moment the link closed, while the
        // close-out runs (a client that sends without reading would otherwise hold the writer
        // until `write_timeout`, or fill its socket while the session goes offline), and for
        // a while after the writer has shut the sending side (see `LINGER_TIME`).
        let mut linger = lingers.then(Linger::new);
        // Boxed, as the close-out is the largest state of this future and a connection
        // spends its life in the read loop: inline it would size every idle connection.
        match &mut linger {
            Some(linger) => Box::pin(linger.during(&mut reader, close_out)).await,
            None => Box::pin(close_out).await,
        }
        core.unregister(&client_id, serial);
        // Releases a connection waiting to take over from this one.
        drop(taken_over);
        if let Some(mut linger) = linger {
            linger.after(&mut reader).await;
        }
        drop(slot);
    };
    // Spawned as it is (a block awaiting a future it captured would keep both copies).
    glommio::spawn_local(session.instrument(span)).detach();
}

enum Wake {
    Read(std::io::Result<usize>),
    Control(Option<Control>),
    Deadline,
    WriterFailed(Option<std::io::Error>),
}

/// Reads, feeds the link one read's worth of packets at a time, and carries out its steps,
/// until the link or the I/O ends the connection.
async fn read_loop<S: Transport>(
    core: &Core,
    out: &Outbox,
    link: &mut Link,
    (reader, mut buf): (&mut ReadHalf<S>, BytesMut),
    (control, writer_failed): (LocalReceiver<Control>, LocalReceiver<std::io::Error>),
    taken_over: &mut Option<LocalSender<()>>,
) -> End {
    let max = core.config.max_packet_size;
    // Small until a read fills it: a client that connected and went quiet holds little.
    let mut chunk = SMALL_READ;
    loop {
        // One clock read per read's worth of packets (it was 3% of a QoS 1 profile per packet).
        let now = Instant::now();
        core.refresh_acl();
        let mark = core.egress.mark();
        {
            let mut engine = CoreEngine(core);
            while !link.is_ending() {
                match protocol::decode(&mut buf, link.version(), max) {
                    Ok(Some(packet)) => {
                        link.handle_packet(core.stats.received(packet), now, &mut engine)
                    }
                    Ok(None) => break,
                    Err(error) => link.handle_decode_error(error),
                }
            }
            link.end_of_read();
        }
        carry_out(core, out, link).await;
        if let Some(end) = link.take_end() {
            return end;
        }
        // Egress before ingress: while most of this core's subscribers are behind, or this
        // read fed outboxes that refused much of it, reading more would only be routing
        // what their outboxes must drop (`egress`).
        if core.egress.sheds(mark) {
            core.egress.drained_once().await;
        }
        core.egress.caught_up().await;
        let deadline = link.deadline();
        let wake = future::or(
            future::or(
                async {
                    let read = read_more(&mut *reader, &mut buf, &core.stats, chunk).await;
                    if let Ok(got) = read {
                        chunk = next_read(chunk, got);
                    }
                    Wake::Read(read)
                },
                future::or(async { Wake::Control(control.recv().await) }, async {
                    Wake::WriterFailed(writer_failed.recv().await)
                }),
            ),
            async {
                match deadline {
                    Some(at) => {
                        glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await
                    }
                    None => future::pending::<()>().await,
                }
                Wake::Deadline
            },
        )
        .await;
        match wake {
            Wake::Read(Ok(0)) => return End::Closed,
            Wake::Read(Ok(_)) => {}
            Wake::Read(Err(e)) => return End::Io(e),
            Wake::Control(Some(Control::TakenOver { done })) => {
                *taken_over = Some(done);
                return End::TakenOver;
            }
            Wake::Control(Some(Control::Shutdown)) => return End::Shutdown,
            Wake::Control(Some(Control::Kick {
                publish_will,
                discard,
                done,
            })) => {
                *taken_over = Some(done);
                return End::Kicked {
                    publish_will,
                    discard,
                };
            }
            Wake::Control(None) => return End::Shutdown,
            Wake::WriterFailed(error) => {
                let error = error.unwrap_or_else(|| std::io::ErrorKind::BrokenPipe.into());
                return End::WriteStalled(error);
            }
            Wake::Deadline => {
                link.handle_timeout(Instant::now());
                if let Some(end) = link.take_end() {
                    return end;
                }
            }
        }
    }
}

/// Carries out the link's steps in order (see [`Step`]).
async fn carry_out(core: &Core, out: &Outbox, link: &mut Link) {
    // What the read owes from other nodes (`nodes`); `end_of_read` queues it with its Release.
    let mut owed = super::nodes::NodesOwed::default();
    while let Some(step) = link.poll_step() {
        match step {
            Step::Send(packet) => {
                out.send(packet);
            }
            Step::Apply(effects) => owed = owed.max(core.apply(effects).await),
            Step::SyncPeers => {
                core.sync_peers().await;
                core.sync_nodes_for(owed).await;
            }
            Step::Release { sync_peers } => {
                if sync_peers {
                    core.sync_peers().await;
                }
                core.sync_nodes_for(std::mem::take(&mut owed)).await;
                let durable = core.broker.borrow().durable();
                if let Some(durable) = durable {
                    if let Err(error) = durable.await {
                        tracing::error!(%error, "the log could not be made durable");
                    }
                }
                link.release(&mut CoreEngine(core));
            }
        }
    }
}
