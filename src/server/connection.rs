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
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tracing::Instrument;

use super::handoff;
use super::ownership::{assign_client_id, owner_of, ShardId};
use super::shard::{Control, Handoff, Shard, ShardMsg};
use crate::protocol::{self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::session::{accept_connect, Link, LinkEvent};

const READ_CHUNK: usize = 16 * 1024;
/// The writer stops gathering queued packets into one write at this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// A client that does not read its socket for this long is dropped, so that it cannot
/// hold its writer (and the connection's memory) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Entry point for a freshly accepted socket.
pub async fn accepted(shard: Rc<Shard>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(1024);
    let timeout = shard.config.connect_timeout;
    let first = future::or(read_connect(&mut stream, &mut buf, shard.config.max_packet_size), async {
        glommio::timer::sleep(timeout).await;
        Err(ConnectFailure::Timeout)
    })
    .await;
    let connect = match first {
        Ok(connect) => connect,
        Err(failure) => {
            shard.stats.connect_failures.set(shard.stats.connect_failures.get() + 1);
            tracing::debug!(shard = %shard.id, %peer, ?failure, "connection closed before CONNECT completed");
            if let ConnectFailure::Decode { error, level } = failure {
                refuse_malformed_connect(&mut stream, &error, level).await;
            }
            return;
        }
    };
    let connect = Box::new(connect);
    // A client without an id gets one that this core owns (see `serve`), so it never moves.
    let owner = if connect.client_id.is_empty() { shard.id } else { owner_of(&connect.client_id, shard.cores) };
    if owner == shard.id {
        serve(shard.clone(), stream, connect, buf, shard.id, peer).await;
        return;
    }
    let fd = match handoff::detach(stream) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(shard = %shard.id, %peer, error = %e, "cannot duplicate socket for hand-off");
            return;
        }
    };
    let handoff = Handoff { fd, connect, rest: buf, accepted_on: shard.id, peer };
    shard.stats.handed_off.set(shard.stats.handed_off.get() + 1);
    if shard.send_to(owner, ShardMsg::Handoff(handoff)).await.is_err() {
        tracing::warn!(shard = %shard.id, %owner, "owner core is gone; dropping connection");
    }
}

// Fields are read through `Debug` in the log lines.
#[allow(dead_code)]
#[derive(Debug)]
enum ConnectFailure {
    Timeout,
    Closed,
    Io(std::io::Error),
    Decode { error: protocol::DecodeError, level: Option<u8> },
}

async fn read_connect(stream: &mut TcpStream, buf: &mut BytesMut, max_packet_size: u32) -> Result<Connect, ConnectFailure> {
    loop {
        match protocol::decode_connect(buf, max_packet_size) {
            Ok(Some(connect)) => return Ok(connect),
            Ok(None) => {}
            Err(error) => return Err(ConnectFailure::Decode { level: claimed_level(buf), error }),
        }
        if read_more(stream, buf).await.map_err(ConnectFailure::Io)? == 0 {
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

async fn refuse_malformed_connect(stream: &mut TcpStream, error: &protocol::DecodeError, level: Option<u8>) {
    let (version, reason_code) = match error {
        // [MQTT-3.1.2-2] answer an unknown level with return code 0x01 in the 3.1.1 format.
        protocol::DecodeError::UnsupportedProtocolVersion(_) => {
            (ProtocolVersion::V3_1_1, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
        }
        // A v5 client learns why; earlier versions are just closed [MQTT-4.8.0-1].
        _ if level == Some(5) => (ProtocolVersion::V5, error.reason_code()),
        _ => return,
    };
    let conn_ack = ConnAck { session_present: false, reason_code, properties: Properties::default() };
    let mut out = BytesMut::new();
    if protocol::encode(&Packet::ConnAck(conn_ack), version, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

async fn read_more(stream: &mut (impl futures_lite::AsyncRead + Unpin), buf: &mut BytesMut) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let result = stream.read(&mut buf[start..]).await;
    buf.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}

/// Runs on the core that received a hand-off.
pub fn take_handoff(shard: &Rc<Shard>, handoff: Handoff) {
    shard.stats.taken_in.set(shard.stats.taken_in.get() + 1);
    let stream = handoff::attach(handoff.fd);
    glommio::spawn_local(serve(shard.clone(), stream, handoff.connect, handoff.rest, handoff.accepted_on, handoff.peer))
        .detach();
}

/// Serves a connection on the core that owns its client id.
pub async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    connect: Box<Connect>,
    rest: BytesMut,
    accepted_on: ShardId,
    peer: SocketAddr,
) {
    let version = connect.protocol;
    let accepted = accept_connect(&connect, &shard.policy, || assign_client_id(shard.id, shard.cores, rand::random));
    let mut accepted = match accepted {
        Ok(accepted) => accepted,
        Err(conn_ack) => {
            tracing::debug!(shard = %shard.id, %peer, client_id = %connect.client_id, reason = ?conn_ack.reason_code, "CONNECT refused");
            let mut out = BytesMut::new();
            if protocol::encode(&Packet::ConnAck(conn_ack), version, &mut out).is_ok() {
                let _ = stream.write_all(&out).await;
            }
            return;
        }
    };
    if version.is_v5() {
        // Tells operators (and tests) which core owns the client and which accepted it.
        let props = &mut accepted.conn_ack.properties.user_properties;
        props.push(("berth-shard".into(), ByteString::from(shard.id.to_string())));
        props.push(("berth-accepted-on".into(), ByteString::from(accepted_on.to_string())));
    }
    let client_id = accepted.client_id.clone();
    let span = tracing::info_span!("conn", client_id = %client_id, shard = %shard.id, %peer);
    async move {
        let (serial, control, previous) = shard.register(&client_id);
        if let Some(previous) = previous {
            // Wait until the connection we take over has stopped, so the two never overlap.
            let _ = previous.recv().await;
        }
        tracing::debug!(accepted_on = %accepted_on, keep_alive = ?accepted.keep_alive, "connected");
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let (reader, writer) = futures_lite::io::split(stream);
        let (out, out_rx) = local_channel::new_unbounded();
        let writer_task = glommio::spawn_local(write_loop(writer, out_rx, version, accepted.client_max_packet_size));
        let _ = out.try_send(Packet::ConnAck(accepted.conn_ack.clone()));
        let link = Link::new(version, accepted.keep_alive, Instant::now());
        let end = read_loop(&shard, reader, rest, link, &out, control).await;
        tracing::debug!(?end, "connection ending");
        if let Some(reason_code) = end.disconnect_reason() {
            if version.is_v5() {
                let _ = out.try_send(Packet::Disconnect(Disconnect { reason_code, properties: Properties::default() }));
            }
        }
        drop(out);
        let _ = writer_task.await;
        shard.unregister(&client_id, serial);
    }
    .instrument(span)
    .await
}

// Fields are read through `Debug` in the log lines.
#[allow(dead_code)]
#[derive(Debug)]
enum End {
    ClientDisconnected,
    Closed,
    Io(std::io::Error),
    KeepAliveTimeout,
    Violation(ReasonCode, String),
    TakenOver,
    Shutdown,
}

impl End {
    /// The reason code of the DISCONNECT the server sends, if it sends one.
    fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            End::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            End::Violation(code, _) => Some(*code),
            End::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            End::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            End::ClientDisconnected | End::Closed | End::Io(_) => None,
        }
    }
}

enum Wake {
    Read(std::io::Result<usize>),
    Control(Option<Control>),
    Deadline,
}

async fn read_loop(
    shard: &Shard,
    mut reader: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut link: Link,
    out: &LocalSender<Packet>,
    control: LocalReceiver<Control>,
) -> End {
    let max = shard.config.max_packet_size;
    loop {
        loop {
            match protocol::decode(&mut buf, link.version, max) {
                Ok(Some(packet)) => match link.on_packet(packet, Instant::now()) {
                    Ok(LinkEvent::Reply(reply)) => {
                        let _ = out.try_send(reply);
                    }
                    Ok(LinkEvent::Forward(_packet)) => {
                        // Publish/subscribe routing plugs in here.
                    }
                    Ok(LinkEvent::Disconnected { .. }) => return End::ClientDisconnected,
                    Err(violation) => return End::Violation(violation.reason_code, violation.rule.to_string()),
                },
                Ok(None) => break,
                Err(error) => return End::Violation(error.reason_code(), error.to_string()),
            }
        }
        let deadline = link.deadline();
        let wake = future::or(
            future::or(async { Wake::Read(read_more(&mut reader, &mut buf).await) }, async {
                Wake::Control(control.recv().await)
            }),
            async {
                match deadline {
                    Some(at) => glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await,
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
                // `done` is dropped when this connection has fully stopped.
                let _keep_until_stopped = done;
                return End::TakenOver;
            }
            Wake::Control(Some(Control::Shutdown)) => return End::Shutdown,
            Wake::Control(None) => return End::Shutdown,
            Wake::Deadline => {
                if link.deadline().is_some_and(|at| at <= Instant::now()) {
                    return End::KeepAliveTimeout;
                }
            }
        }
    }
}

async fn write_loop(
    mut writer: WriteHalf<TcpStream>,
    packets: LocalReceiver<Packet>,
    version: ProtocolVersion,
    client_max_packet_size: Option<u32>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    while let Some(packet) = packets.recv().await {
        encode_for_client(&packet, version, client_max_packet_size, &mut buf);
        // Gather everything already queued into the same write.
        while buf.len() < WRITE_BATCH {
            match future::poll_once(packets.recv()).await {
                Some(Some(packet)) => encode_for_client(&packet, version, client_max_packet_size, &mut buf),
                _ => break,
            }
        }
        if writer.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = writer.flush().await;
    let _ = writer.close().await;
}

fn encode_for_client(packet: &Packet, version: ProtocolVersion, max: Option<u32>, buf: &mut BytesMut) {
    if let Some(max) = max {
        if protocol::encoded_len(packet, version) > max as usize {
            // [MQTT-3.1.2-25] never send a packet above the client's Maximum Packet Size.
            tracing::debug!("dropping a packet larger than the client's maximum packet size");
            return;
        }
    }
    if let Err(e) = protocol::encode(packet, version, buf) {
        tracing::warn!(error = %e, "cannot encode an outgoing packet");
    }
}
