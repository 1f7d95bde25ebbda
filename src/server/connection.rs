//! A client connection from accept to close.
//!
//! [`accepted`] runs on the core that accepted the socket: it reads the CONNECT (bounded
//! by the connect timeout), works out the owner core of the client id and either serves
//! the connection itself or hands it over. [`serve`] runs on the owner: CONNACK, then a
//! reader loop (decode, keep-alive, control orders) and a writer task that batches every
//! packet queued since its last write into one submission.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tracing::Instrument;

use super::gate::Closed;
use super::handoff;
use super::linger::{linger, Linger};
use super::local::{Control, Core, CoreMail, Handoff, IoStats};
use super::outbox::Outbox;
use super::writer::{write_loop, ClientLimits, Fitted, Fitter};
use crate::broker::{CoreMsg, Effects};
use crate::ownership::{assign_client_id, owner_of, CoreId};
use crate::protocol::{
    self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode,
};
use crate::session::{accept_connect, state, Link, LinkEvent};

const READ_CHUNK: usize = 16 * 1024;
/// Response Information given to a v5 client that asks for it: this, its client id, `/`.
const RESPONSE_PREFIX: &str = "berth/response/";

/// Entry point for a freshly accepted socket.
pub async fn accepted(core: Rc<Core>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let listener = stream
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(core = %core.id, %peer, %listener, "connection accepted");
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(1024);
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
                let code = refuse_malformed_connect(&mut stream, &error, level).await;
                tracing::info!(core = %core.id, client_id = "<unknown>", %peer, reason_code = code.map(hex), %error, "CONNECT refused");
                linger(stream).await;
            } else {
                tracing::info!(core = %core.id, %peer, ?failure, "connection closed before CONNECT completed");
            }
            return;
        }
    };
    let connect = Box::new(connect);
    // A client without an id gets one that this core owns (see `serve`), so it never moves.
    let owner = if connect.client_id.is_empty() {
        core.id
    } else {
        owner_of(&connect.client_id, core.cores)
    };
    if owner == core.id {
        serve(core.clone(), stream, connect, buf, core.id, peer).await;
        return;
    }
    let fd = match handoff::detach(stream) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(core = %core.id, %peer, error = %e, "cannot duplicate socket for hand-off");
            return;
        }
    };
    let handoff = Handoff {
        fd,
        connect,
        rest: buf,
        accepted_on: core.id,
        peer,
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
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max_packet_size: u32,
    stats: &IoStats,
) -> Result<Connect, ConnectFailure> {
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
        if read_more(stream, buf, stats)
            .await
            .map_err(ConnectFailure::Io)?
            == 0
        {
            return Err(ConnectFailure::Closed);
        }
    }
}

/// The protocol level a (possibly malformed) CONNECT claims, read straight from its
/// variable header, so that a refusal can be written in the client's own version.
fn claimed_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: type byte, then 1-4 bytes of remaining length.
    let header_len = 1 + buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

/// Answers a CONNECT that failed to decode, where the client's version has an answer;
/// returns the reason code sent, if any.
async fn refuse_malformed_connect(
    stream: &mut TcpStream,
    error: &protocol::DecodeError,
    level: Option<u8>,
) -> Option<ReasonCode> {
    let (version, reason_code) = match error {
        // [MQTT-3.1.2-2] answer an unknown level with return code 0x01 in the 3.1.1 format.
        protocol::DecodeError::UnsupportedProtocolVersion(_) => (
            ProtocolVersion::V3_1_1,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        // A v5 client learns why; earlier versions are just closed [MQTT-4.8.0-1].
        _ if level == Some(5) => (ProtocolVersion::V5, error.reason_code()),
        _ => return None,
    };
    let mut conn_ack = ConnAck {
        session_present: false,
        reason_code,
        properties: Properties::default(),
    };
    if version.is_v5() {
        conn_ack.properties.reason_string = Some(ByteString::from(error.to_string()));
    }
    let limits = ClientLimits {
        version,
        max_packet_size: None,
        topic_alias_maximum: 0,
        request_problem_information: true,
    };
    send_refusal(stream, conn_ack, limits).await;
    let _ = stream.flush().await;
    Some(reason_code)
}

/// A reason code as operators read it in the logs (`0x93`).
fn hex(code: ReasonCode) -> tracing::field::DisplayValue<String> {
    tracing::field::display(format!("0x{:02X}", code.0))
}

/// Writes a refusing CONNACK, with a Reason String for a v5 client when it fits the
/// client's Maximum Packet Size [MQTT-3.2.2-19].
async fn send_refusal(stream: &mut TcpStream, conn_ack: ConnAck, limits: ClientLimits) {
    let version = limits.version;
    let Fitted::Send(packet) = Fitter::new(limits).fit(Packet::ConnAck(conn_ack)) else {
        return;
    };
    let mut out = BytesMut::new();
    if protocol::encode(&packet, version, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
    }
}

/// What a CONNECT says about the packets its client accepts.
fn client_limits(connect: &Connect) -> ClientLimits {
    let properties = &connect.properties;
    ClientLimits {
        version: connect.protocol,
        max_packet_size: properties.maximum_packet_size,
        topic_alias_maximum: properties.topic_alias_maximum.unwrap_or(0),
        request_problem_information: properties.request_problem_information != Some(0),
    }
}

async fn read_more(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
    buf: &mut BytesMut,
    stats: &IoStats,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let result = stream.read(&mut buf[start..]).await;
    let read = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + read);
    stats.read(read);
    result
}

/// Runs on the core that received a hand-off.
pub fn take_handoff(core: &Rc<Core>, handoff: Handoff) {
    core.stats.taken_in.set(core.stats.taken_in.get() + 1);
    let stream = handoff::attach(handoff.fd);
    glommio::spawn_local(serve(
        core.clone(),
        stream,
        handoff.connect,
        handoff.rest,
        handoff.accepted_on,
        handoff.peer,
    ))
    .detach();
}

/// Serves a connection on the core that owns its client id.
pub async fn serve(
    core: Rc<Core>,
    mut stream: TcpStream,
    connect: Box<Connect>,
    rest: BytesMut,
    accepted_on: CoreId,
    peer: SocketAddr,
) {
    let version = connect.protocol;
    let accepted = accept_connect(&connect, &core.policy, || {
        assign_client_id(core.id, core.cores, rand::random)
    });
    let mut accepted = match accepted {
        Ok(accepted) => accepted,
        Err(conn_ack) => {
            let code = conn_ack.reason_code;
            let why = conn_ack.properties.reason_string.clone();
            let reason = why.as_deref().unwrap_or(code.description());
            tracing::info!(core = %core.id, client_id = %connect.client_id, %peer, reason_code = %hex(code), reason, "CONNECT refused");
            send_refusal(&mut stream, conn_ack, client_limits(&connect)).await;
            linger(stream).await;
            return;
        }
    };
    if version.is_v5() {
        // Tells operators (and tests) which core owns the client and which accepted it.
        let props = &mut accepted.conn_ack.properties.user_properties;
        props.push(("berth-shard".into(), ByteString::from(core.id.to_string())));
        props.push((
            "berth-accepted-on".into(),
            ByteString::from(accepted_on.to_string()),
        ));
        // Optional properties never push the CONNACK past the client's Maximum Packet Size
        // [MQTT-3.2.2-20]: the writer would drop the whole CONNACK [MQTT-3.1.2-24].
        let conn_ack = Packet::ConnAck(accepted.conn_ack.clone());
        if let Some(max) = accepted.client_max_packet_size {
            if protocol::encoded_len(&conn_ack, version) > max as usize {
                accepted.conn_ack.properties.user_properties.clear();
            }
        }
    }
    // A copy of its own: the decoded id is a slice of the read buffer, and a session
    // outlives its connection (an idle session would otherwise pin a whole buffer).
    let client_id = ByteString::from(&*accepted.client_id);
    let span = tracing::info_span!("conn", client_id = %client_id, core = %core.id, %peer);
    async move {
        let (serial, control, previous) = core.register(&client_id);
        if let Some(previous) = previous {
            // Wait until the connection we take over has stopped, so the two never overlap.
            let _ = previous.recv().await;
        }
        let requested = requested_expiry(&connect, core.config.max_session_expiry);
        let now = Instant::now();
        let connected = core.broker.borrow_mut().connect(
            &client_id,
            connect.clean_start,
            requested,
            accepted
                .client_receive_maximum
                .min(core.config.max_inflight_messages),
            now,
        );
        let Some((present, granted, resume, effects)) = connected else {
            // The core holds its share of `max_sessions` already.
            tracing::warn!(client_id = %client_id, %peer, reason_code = %hex(ReasonCode::QUOTA_EXCEEDED), "CONNECT refused: session limit reached");
            let mut conn_ack = accepted.conn_ack.clone();
            // 3.1.1 has no quota code: the encoder sends 0x03 Server unavailable.
            conn_ack.reason_code = ReasonCode::QUOTA_EXCEEDED;
            conn_ack.properties = Properties::default();
            conn_ack.properties.reason_string = Some("session limit reached".into());
            send_refusal(&mut stream, conn_ack, client_limits(&connect)).await;
            core.unregister(&client_id, serial);
            linger(stream).await;
            return;
        };
        if let Some((will, delay)) = will_of(&connect) {
            core
                .broker
                .borrow_mut()
                .hold_will(&client_id, &will, delay);
        }
        core.apply(effects).await;
        let mut conn_ack = accepted.conn_ack.clone();
        conn_ack.session_present = present;
        tracing::info!(
            protocol = ?version,
            clean_start = connect.clean_start,
            session_present = present,
            keep_alive = accepted.keep_alive.as_secs(),
            %accepted_on,
            "CONNECT accepted"
        );
        if version.is_v5() {
            let props = &mut conn_ack.properties;
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            // 0xFFFFFFFF asks for a session that never expires: any cap is less.
            if granted < requested || (asked == u32::MAX && granted.as_secs() < u64::from(u32::MAX))
            {
                // MQTT 5.0 3.2.2.3.2: tell the client the expiry actually granted.
                props.session_expiry_interval =
                    Some(granted.as_secs().min(u64::from(u32::MAX)) as u32);
            }
            props.retain_available = Some(1);
            props.wildcard_subscription_available = Some(1);
            props.subscription_identifier_available = Some(1);
            props.shared_subscription_available = Some(1);
            if connect.properties.request_response_information == Some(1) {
                // MQTT 5.0 3.2.2.3.15: a topic prefix of the client's own for responses.
                props.response_information =
                    Some(ByteString::from(format!("{RESPONSE_PREFIX}{client_id}/")));
            }
        }

        let _ = stream.set_nodelay(true);
        // A client that does not read its socket for this long is dropped, so that it
        // cannot hold its writer (and the connection's memory) forever.
        let _ = stream.set_write_timeout(Some(core.config.write_timeout));
        let (reader, writer) = futures_lite::io::split(stream);
        let (out, out_rx, queued) = Outbox::new(core.config.max_outbox_bytes);
        let out = Rc::new(out);
        let limits = ClientLimits {
            version,
            max_packet_size: accepted.client_max_packet_size,
            topic_alias_maximum: accepted.client_topic_alias_maximum,
            request_problem_information: accepted.request_problem_information,
        };
        let (write_failed, writer_failed) = local_channel::new_bounded(1);
        let writer_task = glommio::spawn_local(write_loop(
            core.clone(),
            (client_id.clone(), serial),
            writer,
            out_rx,
            queued,
            limits,
            write_failed,
        ));
        out.send(Packet::ConnAck(conn_ack));
        for packet in resume {
            if !out.send(packet) {
                core.stats.publish_dropped();
            }
        }
        core.attach_outbox(&client_id, serial, out.clone());
        let link = Link::new(version, accepted.keep_alive, now);
        let mut conn = Conn {
            core: &core,
            client_id: client_id.clone(),
            out: &out,
            aliases: vec![None; usize::from(core.config.topic_alias_maximum)],
            expiry: granted,
            zero_expiry_at_connect: requested.is_zero(),
            taken_over: None,
            version,
            refusals_before: None,
        };
        let mut reader = reader;
        let end = read_loop(&mut conn, &mut reader, rest, link, (control, writer_failed)).await;
        let reason_code = end.disconnect_reason().map(hex);
        if matches!(end, End::WriteStalled(_)) {
            tracing::warn!(reason = %end, "client disconnected");
        } else {
            tracing::info!(reason = %end, reason_code, "client disconnected");
        }
        if let Some(reason_code) = end.disconnect_reason() {
            if version.is_v5() {
                let mut properties = Properties::default();
                if let End::Violation(_, why) = &end {
                    // The rule broken; the writer names the code for the other ends.
                    properties.reason_string = Some(ByteString::from(why.as_str()));
                }
                out.send(Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                }));
            }
        }
        if !end.publishes_will() {
            if core.is_current(&client_id, serial) {
                core.broker.borrow_mut().drop_will(&client_id);
            }
        } else if let Some((publish, delay)) = will_of(&connect) {
            let now = Instant::now();
            let current = core.is_current(&client_id, serial);
            let effects = {
                let mut broker = core.broker.borrow_mut();
                if delay > 0 && !current {
                    // Taken over: the new connection came before the delay passed, which
                    // cancels the will [MQTT-3.1.3-9].
                    None
                } else if delay > 0 && !conn.expiry.is_zero() {
                    // MQTT 5.0 3.1.3.2.2: the will waits for its delay or the end of the
                    // session, whichever comes first, and a reconnect cancels it.
                    let wait = Duration::from_secs(u64::from(delay)).min(conn.expiry);
                    broker.schedule_will(&client_id, publish, now + wait);
                    None
                } else {
                    let effects = broker.publish(&client_id, publish, now);
                    if current {
                        broker.drop_will(&client_id);
                    }
                    Some(effects)
                }
            };
            if let Some(effects) = effects {
                core.apply(effects).await;
            }
        }
        if core.is_current(&client_id, serial) {
            let effects =
                core
                    .broker
                    .borrow_mut()
                    .disconnect(&client_id, Some(conn.expiry), Instant::now());
            core.apply(effects).await;
        }
        let taken_over = conn.taken_over.take();
        drop(conn);
        // The writer ends once every sender is gone, the registry's included.
        core.detach_outbox(&client_id, serial);
        drop(out);
        // After a DISCONNECT the input is drained while the writer still writes (a client
        // that sends without reading would otherwise hold the writer until `write_timeout`),
        // and for a while after it has shut the sending side (see `LINGER_TIME`).
        let mut linger = (version.is_v5() && end.disconnect_reason().is_some()).then(Linger::new);
        match &mut linger {
            Some(linger) => linger.during(&mut reader, writer_task).await,
            None => {
                let _ = writer_task.await;
            }
        }
        core.unregister(&client_id, serial);
        // Releases a connection waiting to take over from this one.
        drop(taken_over);
        if let Some(mut linger) = linger {
            linger.after(&mut reader).await;
        }
    }
    .instrument(span)
    .await
}

/// The CONNECT's will as the PUBLISH it becomes, and its Will Delay Interval.
fn will_of(connect: &Connect) -> Option<(Publish, u32)> {
    let will = connect.will.clone()?;
    let mut properties = will.properties;
    let delay = properties.will_delay_interval.take().unwrap_or(0);
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: None,
        properties,
        payload: will.payload,
    };
    Some((publish, delay))
}

/// The Session Expiry a CONNECT asks for: v5 says it outright (absent is 0, 0xFFFFFFFF
/// is never); 3.1.1 Clean Session 0 means "keep it", which the server caps at its maximum.
fn requested_expiry(connect: &Connect, max: Duration) -> Duration {
    if connect.protocol.is_v5() {
        match connect.properties.session_expiry_interval.unwrap_or(0) {
            u32::MAX => max,
            secs => Duration::from_secs(u64::from(secs)),
        }
    } else if connect.clean_start {
        Duration::ZERO
    } else {
        max
    }
}

/// What the read loop needs to know about its connection.
struct Conn<'a> {
    core: &'a Core,
    client_id: ByteString,
    out: &'a Outbox,
    /// Topic aliases the client set on this connection, index alias - 1 (3.3.2.3.4);
    /// as many as our Topic Alias Maximum.
    aliases: Vec<Option<ByteString>>,
    /// Session expiry in force; a v5 DISCONNECT may change it.
    expiry: Duration,
    zero_expiry_at_connect: bool,
    /// Held until this connection has fully stopped, when another takes its client id.
    taken_over: Option<LocalSender<()>>,
    version: ProtocolVersion,
    /// What every core had refused to store before this read's first QoS 1/2 PUBLISH was
    /// routed: its acknowledgements leave as success only if no figure rose (`gate`).
    refusals_before: Option<Vec<u64>>,
}

// Fields are read through `Debug` in the log lines.
#[allow(dead_code)]
#[derive(Debug)]
enum End {
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
    StoreFull(Closed),
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
            End::Shutdown => f.write_str("server shutting down"),
            End::WriteStalled(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                f.write_str("client stopped reading (no write progress for write_timeout)")
            }
            End::WriteStalled(e) => write!(f, "write error: {e}"),
            End::StoreFull(Closed::DiskFull) => {
                f.write_str("QoS 1/2 PUBLISH refused: the store is full (3.x has no negative ack)")
            }
            End::StoreFull(Closed::StoredBytes) => f.write_str(
                "QoS 1/2 PUBLISH refused: max_stored_bytes reached (3.x has no negative ack)",
            ),
        }
    }
}

impl End {
    /// Whether the will is published: on every end but a normal DISCONNECT (v5: unless
    /// it asked for the will with 0x04) and a server shutdown [MQTT-3.1.2-8].
    fn publishes_will(&self) -> bool {
        !matches!(
            self,
            End::ClientDisconnected {
                publish_will: false
            } | End::Shutdown
        )
    }

    /// The reason code of the DISCONNECT the server sends, if it sends one.
    fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            End::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            End::Violation(code, _) => Some(*code),
            End::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            End::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            End::ClientDisconnected { .. }
            | End::Closed
            | End::Io(_)
            | End::WriteStalled(_)
            | End::StoreFull(_) => None,
        }
    }
}

enum Wake {
    Read(std::io::Result<usize>),
    Control(Option<Control>),
    Deadline,
    WriterFailed(Option<std::io::Error>),
}

async fn read_loop(
    conn: &mut Conn<'_>,
    reader: &mut ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut link: Link,
    (control, writer_failed): (LocalReceiver<Control>, LocalReceiver<std::io::Error>),
) -> End {
    let max = conn.core.config.max_packet_size;
    let mut acks = Vec::new();
    loop {
        let mut pending = Effects::default();
        // One clock read per read's worth of packets (it was 3% of a QoS 1 profile per packet).
        let now = Instant::now();
        loop {
            match protocol::decode(&mut buf, link.version, max) {
                Ok(Some(packet)) => match link.on_packet(conn.core.stats.received(packet), now) {
                    Ok(LinkEvent::Reply(reply)) => {
                        conn.out.send(reply);
                    }
                    Ok(LinkEvent::Discard) => {}
                    Ok(LinkEvent::Forward(packet)) => {
                        if let Err(end) = forward(conn, packet, now, &mut pending, &mut acks).await
                        {
                            let _ = flush(conn, pending, &mut acks).await;
                            return end;
                        }
                    }
                    Ok(LinkEvent::Disconnected {
                        publish_will,
                        session_expiry,
                    }) => {
                        let _ = flush(conn, pending, &mut acks).await;
                        if let Some(secs) = session_expiry {
                            if conn.zero_expiry_at_connect && secs != 0 {
                                return End::Violation(
                                    ReasonCode::PROTOCOL_ERROR,
                                    "[MQTT-3.14.2-2] Session Expiry set on DISCONNECT after 0 on CONNECT".into(),
                                );
                            }
                            conn.expiry = Duration::from_secs(u64::from(secs))
                                .min(conn.core.config.max_session_expiry);
                        }
                        return End::ClientDisconnected { publish_will };
                    }
                    Err(violation) => {
                        let _ = flush(conn, pending, &mut acks).await;
                        return End::Violation(violation.reason_code, violation.rule.to_string());
                    }
                },
                Ok(None) => break,
                Err(error) => {
                    let _ = flush(conn, pending, &mut acks).await;
                    return End::Violation(error.reason_code(), error.to_string());
                }
            }
        }
        if let Some(end) = flush(conn, pending, &mut acks).await {
            return end;
        }
        let deadline = link.deadline();
        let wake = future::or(
            future::or(
                async { Wake::Read(read_more(&mut *reader, &mut buf, &conn.core.stats).await) },
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
                conn.taken_over = Some(done);
                return End::TakenOver;
            }
            Wake::Control(Some(Control::Shutdown)) => return End::Shutdown,
            Wake::Control(None) => return End::Shutdown,
            Wake::WriterFailed(error) => {
                let error = error.unwrap_or_else(|| std::io::ErrorKind::BrokenPipe.into());
                return End::WriteStalled(error);
            }
            Wake::Deadline => {
                if link.deadline().is_some_and(|at| at <= Instant::now()) {
                    return End::KeepAliveTimeout;
                }
            }
        }
    }
}

/// A packet for the publish/subscribe engine. Effects for other cores gather in `pending`
/// so that one read's worth of publishes crosses to each core as one batch.
/// Carries out a read's worth of effects, then releases the acknowledgements they hold
/// back: a PUBACK/PUBREC leaves only once the message is in the log of this core and of
/// every core it was routed to (durable as far as `fsync` says), so a crash never loses
/// a message its publisher was told is stored.
/// An acknowledgement is refused (v5 0x97; a 3.x connection closes instead) when a core
/// could not store a message of the batch (`gate::Refusals`). Returns the end of a 3.x
/// connection so refused.
async fn flush(conn: &mut Conn<'_>, pending: Effects, acks: &mut Vec<Packet>) -> Option<End> {
    let routed_on = !acks.is_empty()
        && pending.to_cores.iter().any(|(_, msg)| match msg {
            CoreMsg::Publish(m) => m.qos != QoS::AtMostOnce,
            CoreMsg::Retain(_) => true,
            _ => false,
        });
    conn.core.apply(pending).await;
    let before = conn.refusals_before.take();
    if acks.is_empty() {
        return None;
    }
    if routed_on {
        conn.core.sync_peers().await;
    }
    let durable = conn.core.broker.borrow().durable();
    if let Some(durable) = durable {
        if let Err(error) = durable.await {
            tracing::error!(%error, "the log could not be made durable");
        }
    }
    let refused = before.is_some_and(|before| conn.core.refused_since(&before));
    if refused {
        tracing::warn!(
            publishes = acks.len(),
            "QoS 1/2 publishes refused: a core could not store them (disk full)"
        );
    }
    for mut ack in acks.drain(..) {
        let (Packet::PubAck(a) | Packet::PubRec(a)) = &mut ack else {
            conn.out.send(ack);
            continue;
        };
        // Acks refused at the gate already let their QoS 2 id go in `forward`.
        let refused_now = refused && a.reason_code == ReasonCode::SUCCESS;
        if refused_now {
            conn.core.stats.publish_refused();
            refuse_ack(a, Closed::DiskFull);
        }
        let packet_id = a.packet_id;
        let stored = a.reason_code == ReasonCode::SUCCESS;
        if matches!(ack, Packet::PubRec(_)) {
            let mut broker = conn.core.broker.borrow_mut();
            if stored {
                broker.journal_qos2_received(&conn.client_id, packet_id);
            } else if refused_now {
                broker.refuse_qos2(&conn.client_id, packet_id);
            }
        }
        if stored || conn.version.is_v5() {
            conn.out.send(ack);
        }
    }
    (refused && !conn.version.is_v5()).then_some(End::StoreFull(Closed::DiskFull))
}

/// Makes `ack` say that its message was not stored (MQTT 5.0 0x97 Quota exceeded).
fn refuse_ack(ack: &mut crate::protocol::Ack, why: Closed) {
    ack.reason_code = ReasonCode::QUOTA_EXCEEDED;
    ack.properties.reason_string = Some(ByteString::from_static(match why {
        Closed::DiskFull => "the broker cannot store messages now: its disk is full",
        Closed::StoredBytes => "the broker holds max_stored_bytes of messages already",
    }));
}

/// A packet for the publish/subscribe engine. Effects for other cores gather in `pending`
/// so that one read's worth of publishes crosses to each core as one batch; the
/// acknowledgements of those publishes gather in `acks` (see [`flush`]).
async fn forward(
    conn: &mut Conn<'_>,
    packet: Packet,
    now: Instant,
    pending: &mut Effects,
    acks: &mut Vec<Packet>,
) -> Result<(), End> {
    let core = conn.core;
    match packet {
        Packet::Publish(mut publish) => {
            resolve_topic_alias(&mut conn.aliases, &mut publish)?;
            if publish.topic.is_empty() {
                return Err(End::Violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.3.2-8] empty topic without alias".into(),
                ));
            }
            let (qos, packet_id) = (publish.qos, publish.packet_id);
            if qos != QoS::AtMostOnce && conn.refusals_before.is_none() {
                conn.refusals_before = Some(core.refusals());
            }
            let route = match (qos, packet_id) {
                (QoS::ExactlyOnce, Some(id)) => {
                    let mut broker = core.broker.borrow_mut();
                    if broker.awaiting_release(&conn.client_id)
                        >= usize::from(core.config.receive_maximum)
                    {
                        return Err(End::Violation(
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            "[MQTT-3.3.4-9] receive maximum exceeded".into(),
                        ));
                    }
                    broker.receive_qos2(&conn.client_id, id)
                }
                _ => true,
            };
            let closed = match packet_id {
                Some(_) if route => core.gate.closed(),
                _ => None,
            };
            if let (Some(why), Some(id)) = (closed, packet_id) {
                // Refused before it is routed: the store cannot take new messages.
                core.stats.publish_refused();
                if qos == QoS::ExactlyOnce {
                    core.broker.borrow_mut().refuse_qos2(&conn.client_id, id);
                }
                if !conn.version.is_v5() {
                    return Err(End::StoreFull(why));
                }
                let mut ack = state::ack(id, ReasonCode::SUCCESS);
                refuse_ack(&mut ack, why);
                acks.push(if qos == QoS::ExactlyOnce {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                });
                return Ok(());
            }
            if route {
                let mut broker = core.broker.borrow_mut();
                let effects = match (qos, packet_id) {
                    (QoS::ExactlyOnce, Some(id)) => {
                        broker.publish_exactly_once(&conn.client_id, id, publish, now)
                    }
                    _ => broker.publish(&conn.client_id, publish, now),
                };
                drop(broker);
                pending.to_clients.extend(effects.to_clients);
                pending.to_cores.extend(effects.to_cores);
            }
            if let Some(id) = packet_id {
                let ack = state::ack(id, ReasonCode::SUCCESS);
                acks.push(if qos == QoS::ExactlyOnce {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                });
            }
        }
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
            let effects = core
                .broker
                .borrow_mut()
                .on_ack(&conn.client_id, packet, now);
            pending.to_clients.extend(effects.to_clients);
        }
        Packet::Subscribe(subscribe) => {
            core.apply(std::mem::take(pending)).await;
            let outcome = core
                .broker
                .borrow_mut()
                .subscribe(&conn.client_id, subscribe, now);
            let (to_clients, to_cores) = (outcome.effects.to_clients, outcome.effects.to_cores);
            core.apply(Effects {
                to_clients: Vec::new(),
                to_cores,
            })
            .await;
            if outcome.interest_changed {
                core.sync_peers().await;
            }
            // SUBACK first, then the retained messages it releases.
            conn.out.send(Packet::SubAck(outcome.sub_ack));
            core.apply(Effects {
                to_clients,
                to_cores: Vec::new(),
            })
            .await;
        }
        Packet::Unsubscribe(unsubscribe) => {
            let (unsub_ack, effects) = core
                .broker
                .borrow_mut()
                .unsubscribe(&conn.client_id, unsubscribe);
            pending.to_cores.extend(effects.to_cores);
            conn.out.send(Packet::UnsubAck(unsub_ack));
        }
        _ => {}
    }
    Ok(())
}

/// Applies a client's Topic Alias (MQTT 5.0 3.3.2.3.4): a topic with an alias sets it, an
/// empty topic with one uses it. The alias is removed, being meaningful on this
/// connection only.
fn resolve_topic_alias(
    aliases: &mut [Option<ByteString>],
    publish: &mut Publish,
) -> Result<(), End> {
    let Some(alias) = publish
        .properties
        .values_mut()
        .and_then(|values| values.topic_alias.take())
    else {
        return Ok(());
    };
    let Some(slot) = usize::from(alias)
        .checked_sub(1)
        .and_then(|i| aliases.get_mut(i))
    else {
        return Err(End::Violation(
            ReasonCode::TOPIC_ALIAS_INVALID,
            format!(
                "[MQTT-3.3.2-9] [MQTT-3.3.2-10] topic alias {alias} is not in 1..={}",
                aliases.len()
            ),
        ));
    };
    if !publish.topic.is_empty() {
        *slot = Some(publish.topic.clone());
        return Ok(());
    }
    match slot {
        Some(topic) => {
            publish.topic = topic.clone();
            Ok(())
        }
        None => Err(End::Violation(
            ReasonCode::PROTOCOL_ERROR,
            format!("topic alias {alias} used before a PUBLISH set it (MQTT 5.0 3.3.2.3.4)"),
        )),
    }
}
