//! One MQTT client connection, driven by berth's own codec: open a TCP socket (bound to one
//! of several loopback source addresses when asked, so ephemeral ports never run out), lay
//! the run's transport over it (TLS, WebSocket, both: `transport`), CONNECT, then read
//! packets and queue packets to send.
//!
//! `Conn::next` flushes whatever was queued before it waits for the socket, so a task that
//! answers every packet it reads (PUBACK, PUBREC, PUBCOMP) sends its answers in batches.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use berth::protocol::{
    self, Connect, Packet, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::transport::{ReadHalf, Stream, Transport, WriteHalf};

const MAX_PACKET: u32 = 268_435_455;

/// Why a connection or an exchange failed; `kind` is the short name errors are counted by.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(kind: &'static str, e: io::Error) -> Failure {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => "connection_refused",
            io::ErrorKind::ConnectionReset => "connection_reset",
            io::ErrorKind::AddrNotAvailable => "no_source_port",
            _ => kind,
        };
        Failure::new(kind, e.to_string())
    }
}

/// Where and how to connect; shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub version: ProtocolVersion,
    /// Number of source addresses to spread over (127.0.0.2 onwards); 0 lets the kernel pick.
    pub source_ips: u32,
    pub keep_alive: u16,
    /// Seconds without progress before an exchange counts as failed.
    pub timeout: Duration,
    pub session_expiry: u32,
    /// CONNECT's User Name and Password, sent by every connection when given.
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    /// TLS and WebSocket layers over each TCP connection.
    pub transport: Transport,
}

impl Target {
    /// One connect (TCP, then the TLS handshake and WebSocket upgrade if any) before a run,
    /// so that a broker that is not there, or a certificate that does not verify, is a
    /// one-line error and not a report of every connection refused.
    pub async fn probe(&self) -> anyhow::Result<()> {
        let over = match self.transport.name() {
            "tcp" => String::new(),
            name => format!(" ({name})"),
        };
        let addr = self.addr;
        match tokio::time::timeout(self.timeout, self.open(0)).await {
            Err(_) => anyhow::bail!(
                "cannot connect to {addr}{over}: no answer in {:?}",
                self.timeout
            ),
            Ok(Err(f)) => anyhow::bail!("cannot connect to {addr}{over}: {}", f.detail),
            Ok(Ok(stream)) => {
                drop(stream);
                Ok(())
            }
        }
    }

    /// The TCP connection with the transport's layers over it, and how long the TCP
    /// connect alone took (SYN to established: what a full listen backlog stretches).
    async fn open(&self, index: u64) -> Result<(Stream, Duration), Failure> {
        let started = std::time::Instant::now();
        let tcp = self
            .tcp(index)
            .await
            .map_err(|e| Failure::io("connect_error", e))?;
        let tcp_connect = started.elapsed();
        Ok((self.transport.open(tcp, index).await?, tcp_connect))
    }

    async fn tcp(&self, index: u64) -> io::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.source_ips > 0 && self.addr.is_ipv4() {
            // Pick the port at connect() time from the whole 4-tuple, not at bind() time
            // from the local address alone: otherwise each source address gives only ~28k
            // ports in total, TIME_WAIT included.
            set_bind_address_no_port(&socket);
            let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
            let ip = Ipv4Addr::from(base + (index % self.source_ips as u64) as u32);
            socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a connection and completes CONNECT/CONNACK. `index` spreads source addresses.
    /// A CONNACK with an error code is a `connack_refused` failure.
    pub async fn connect(
        &self,
        index: u64,
        client_id: &str,
        clean_start: bool,
        persistent: bool,
    ) -> Result<(Conn, protocol::ConnAck), Failure> {
        let (stream, tcp_connect) = tokio::time::timeout(self.timeout, self.open(index))
            .await
            .map_err(|_| {
                let transport = self.transport.name();
                Failure::new(
                    "connect_timeout",
                    format!("{transport} connect to {}", self.addr),
                )
            })??;
        let mut conn = Conn::new(stream, self.version, self.timeout);
        conn.tcp_connect = tcp_connect;
        let mut properties = Properties::default();
        if self.version.is_v5() {
            if persistent {
                properties.session_expiry_interval = Some(self.session_expiry);
            }
            properties.receive_maximum = Some(u16::MAX);
        }
        conn.queue(&Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start,
            keep_alive: self.keep_alive,
            client_id: ByteString::from(client_id),
            will: None,
            username: self.username.clone(),
            password: self.password.clone(),
            properties,
        })));
        match conn.next().await? {
            Packet::ConnAck(ack) if ack.reason_code.is_error() => Err(Failure::new(
                "connack_refused",
                format!(
                    "{client_id}: CONNACK reason code 0x{:02x}",
                    ack.reason_code.0
                ),
            )),
            Packet::ConnAck(ack) => Ok((conn, ack)),
            other => Err(Failure::new(
                "protocol",
                format!("{client_id}: expected CONNACK, got {other:?}"),
            )),
        }
    }
}

fn set_bind_address_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd owned by `socket` and a pointer to a c_int of the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub version: ProtocolVersion,
    timeout: Duration,
    /// How long its TCP connect took.
    pub tcp_connect: Duration,
}

impl Conn {
    fn new(stream: Stream, version: ProtocolVersion, timeout: Duration) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(1024),
            version,
            timeout,
            tcp_connect: Duration::ZERO,
        }
    }

    /// How long `next` waits for a packet before it fails.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn queue(&mut self, packet: &Packet) {
        protocol::encode(packet, self.version, &mut self.wbuf)
            .expect("the load generator only builds packets the codec accepts");
    }

    pub async fn flush(&mut self) -> Result<(), Failure> {
        if !self.wbuf.is_empty() {
            let out = self.wbuf.split();
            let io = self.stream.io();
            let write = async {
                io.write_all(&out).await?;
                // TLS and WebSocket hold back what they could not write at once.
                io.flush().await
            };
            write.await.map_err(|e| Failure::io("write_error", e))?;
        }
        Ok(())
    }

    /// A packet already read and buffered, without waiting for more.
    pub fn buffered(&mut self) -> Result<Option<Packet>, Failure> {
        protocol::decode(&mut self.rbuf, self.version, MAX_PACKET)
            .map_err(|e| Failure::new("decode_error", e.to_string()))
    }

    /// The next packet: one already buffered, else flush what is queued and read.
    pub async fn next(&mut self) -> Result<Packet, Failure> {
        // Read the clock only when there is something to wait for.
        let mut deadline = None;
        loop {
            if let Some(packet) = self.buffered()? {
                return Ok(packet);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.timeout);
            self.flush().await?;
            self.rbuf.reserve(16 * 1024);
            let read =
                tokio::time::timeout_at(deadline.into(), self.stream.io().read_buf(&mut self.rbuf));
            match read.await {
                Err(_) => return Err(Failure::new("timeout", "no packet from the broker in time")),
                Ok(Err(e)) => return Err(Failure::io("read_error", e)),
                Ok(Ok(0)) => {
                    return Err(Failure::new("closed", "the broker closed the connection"))
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Subscribes to `filters` and checks every grant.
    pub async fn subscribe(&mut self, filters: &[(String, QoS)]) -> Result<(), Failure> {
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).expect("1 is not 0"),
            properties: Properties::default(),
            filters: filters
                .iter()
                .map(|(f, qos)| {
                    let options = SubscriptionOptions {
                        qos: *qos,
                        ..Default::default()
                    };
                    (ByteString::from(f.as_str()), options)
                })
                .collect(),
        };
        self.queue(&Packet::Subscribe(subscribe));
        loop {
            match self.next().await? {
                Packet::SubAck(ack) => {
                    if let Some(bad) = ack.reason_codes.iter().find(|c| c.is_error()) {
                        return Err(Failure::new(
                            "suback_refused",
                            format!("SUBACK reason code 0x{:02x}", bad.0),
                        ));
                    }
                    return Ok(());
                }
                Packet::Publish(_) => continue, // retained or queued; not ours to count here
                other => {
                    return Err(Failure::new(
                        "protocol",
                        format!("expected SUBACK, got {other:?}"),
                    ))
                }
            }
        }
    }

    /// Sends DISCONNECT and waits briefly for the broker to close first, so the broker and
    /// not our side holds TIME_WAIT.
    pub async fn disconnect(mut self) {
        self.queue(&Packet::Disconnect(Default::default()));
        if self.flush().await.is_ok() {
            let mut scratch = [0u8; 256];
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                self.stream.io().read(&mut scratch),
            )
            .await;
        }
    }

    /// The stream's halves and the bytes already read, for a publisher's reader and writer
    /// tasks. The writer flushes after each write (TLS and WebSocket need it).
    pub fn into_split(self) -> (ReadHalf, BytesMut, WriteHalf) {
        let (r, w) = self.stream.split();
        (r, self.rbuf, w)
    }
}

/// Builds the answer to an incoming QoS 1/2 PUBLISH or PUBREL.
pub fn ack(packet_id: PacketId) -> protocol::Ack {
    protocol::Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    }
}

/// Nanoseconds on the machine's monotonic clock (CLOCK_MONOTONIC, the one `Instant` reads):
/// the clock payload send times are written in. It is the same clock in every process on the
/// machine, so a subscriber process measures the latency of a publisher process's messages.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Payload layout: stream (session or publisher) index u32 LE, sequence u32 LE, send time
/// (`now_ns`) u64 LE, then zero padding up to `size` (at least 16 bytes).
pub fn payload(stream: u32, seq: u32, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(16));
    b.put_u32_le(stream);
    b.put_u32_le(seq);
    b.put_u64_le(now_ns());
    b.resize(size.max(16), 0);
    b.freeze()
}

/// (stream, seq, send time) of a payload written by `payload`, or None if too short.
pub fn parse_payload(p: &Bytes) -> Option<(u32, u32, u64)> {
    if p.len() < 16 {
        return None;
    }
    let mut b = &p[..16];
    Some((b.get_u32_le(), b.get_u32_le(), b.get_u64_le()))
}
