//! Refusing a CONNECT: every refusal is counted here by its CONNACK reason code and why
//! (`IoStats::refused`, read by `/metrics`), then its CONNACK is written if one fits the
//! client. A connection closed at accept (`max_connections`, `max_connection_rate`) sends
//! no CONNACK and is counted by the limits instead.

use bytes::BytesMut;
use futures_lite::io::AsyncWriteExt;
use std::net::SocketAddr;

use super::io_stats::Refused;
use super::linger::linger;
use super::local::Core;
use super::transport::Transport;
use crate::protocol::{self, Connect, ReasonCode};
use crate::session::admission::{refuse_admission, NotAdmitted};
use crate::session::connect::Refusal;

/// Refuses a CONNECT the limits keep out (`server::limits`): its CONNACK, then close.
pub async fn not_admitted<S: Transport>(
    core: &Core,
    mut stream: S,
    connect: &Connect,
    why: NotAdmitted,
    peer: SocketAddr,
) {
    let refusal = refuse_admission(connect, &why);
    tracing::info!(core = %core.id, client_id = %connect.client_id, %peer, reason_code = %hex(refusal.reason_code), reason = %refusal.reason, "CONNECT refused");
    let limit = match why {
        NotAdmitted::ClientIdTooLong { .. } => "client_id_length",
        NotAdmitted::Banned(_) => "banned",
        NotAdmitted::Flapping { .. } => "flapping",
        NotAdmitted::OtherNode { .. } => "other_node",
    };
    send_refusal(core, &mut stream, refusal, Some(limit)).await;
    let _ = stream.flush().await;
    linger(stream).await;
}

/// A reason code as operators read it in the logs (`0x93`).
pub fn hex(code: ReasonCode) -> tracing::field::DisplayValue<String> {
    tracing::field::display(format!("0x{:02X}", code.0))
}

/// Counts a refused CONNECT (`why`: the limit that refused it; `None`: the reason code
/// says it) and writes its CONNACK, if the link left one that fits the client. Every
/// refusal of a CONNECT passes here.
pub async fn send_refusal(
    core: &Core,
    stream: &mut impl Transport,
    refusal: Refusal,
    why: Option<&'static str>,
) {
    core.stats.refused(Refused {
        code: Some(refusal.reason_code),
        why: why.unwrap_or(refusal.reason_code.description()),
    });
    let Some(packet) = refusal.conn_ack else {
        return;
    };
    let mut out = BytesMut::new();
    if protocol::encode(&packet, refusal.version, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
    }
}
