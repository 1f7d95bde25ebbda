//! A connection's writer: takes packets off the outbox, has each fitted to what the
//! client negotiated (`session::link::fit`), and batches everything queued into one write.
//!
//! A write that makes no progress for `write_timeout` (the socket's write timeout: the
//! client has stopped reading) or fails ends the writer, which tells the read loop through
//! `failed` so that the whole connection closes; a connection never lives on without a
//! writer.

use std::rc::Rc;

use bytes::BytesMut;
use bytestring::ByteString;
use futures_lite::future;
use futures_lite::io::{AsyncWriteExt, WriteHalf};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};

use super::local::Core;
use super::outbox::QueuedBytes;
use super::transport::Transport;
use crate::broker::Outgoing;
use crate::protocol::{self, Packet, ProtocolVersion};
use crate::session::link::{ClientLimits, Dropped, Fitted, Fitter};

/// The writer stops gathering queued packets into one write at this many bytes.
const WRITE_BATCH: usize = 16 * 1024;
/// A write below this size lets go of a write buffer larger than it.
const IDLE_WRITE: usize = 512;

pub async fn write_loop<S: Transport>(
    core: Rc<Core>,
    (client_id, serial): (ByteString, u64),
    mut writer: WriteHalf<S>,
    packets: LocalReceiver<Outgoing>,
    queued: QueuedBytes,
    limits: ClientLimits,
    failed: LocalSender<std::io::Error>,
) {
    let mut fit = Fitter::new(limits);
    let mut buf = BytesMut::new();
    while let Some(packet) = packets.recv().await {
        let mut next = Some(packet);
        // Gather everything already queued into the same write.
        while let Some(outgoing) = next.take() {
            queued.taken(&outgoing);
            let packet = match outgoing {
                Outgoing::Packet(packet) => Some(*packet),
                Outgoing::Shared(shared) => match fit.as_is(&shared) {
                    Some(frame) => {
                        buf.extend_from_slice(frame);
                        core.stats.sent(shared.packet());
                        None
                    }
                    None => Some(shared.packet().clone()),
                },
            };
            if let Some(packet) = packet {
                match fit.fit(packet) {
                    Fitted::Send(packet) => encode(&packet, fit.version(), &mut buf, &core),
                    // Boxed: rare, and inline its state would size every connection's writer
                    // (1,584 bytes against about 620).
                    Fitted::Dropped(dropped) => {
                        Box::pin(discard(&core, &client_id, serial, dropped)).await
                    }
                }
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            if let Some(Some(packet)) = future::poll_once(packets.recv()).await {
                next = Some(packet);
            }
        }
        if buf.is_empty() {
            continue;
        }
        // The flush sends what a transport buffers itself (TLS records); plain TCP has none.
        if let Err(error) = writer.write_all(&buf).await {
            let _ = failed.try_send(error);
            return;
        }
        if let Err(error) = writer.flush().await {
            let _ = failed.try_send(error);
            return;
        }
        core.stats.wrote(buf.len());
        if buf.len() < IDLE_WRITE && buf.capacity() > IDLE_WRITE {
            // A small write (a PINGRESP, an acknowledgement) is most often the last for a
            // while: an idle connection holds no write buffer. A busy one keeps its own.
            buf = BytesMut::new();
        } else {
            buf.clear();
        }
    }
    let _ = writer.flush().await;
    let _ = writer.close().await;
}

fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut, core: &Core) {
    match protocol::encode(packet, version, buf) {
        Ok(_) => core.stats.sent(packet),
        Err(e) => tracing::warn!(error = %e, "cannot encode an outgoing packet"),
    }
}

/// A packet too large for the client: a PUBLISH is counted, and its completion (QoS 1/2)
/// handed to the engine while this connection (`serial`) still holds the session.
async fn discard(core: &Core, client_id: &ByteString, serial: u64, dropped: Dropped) {
    tracing::debug!("not sending a packet larger than the client's Maximum Packet Size");
    if !dropped.publish {
        return;
    }
    core.stats.publish_dropped();
    let Some(completion) = dropped.completion else {
        return;
    };
    if !core.is_current(client_id, serial) {
        return;
    }
    let effects = core
        .broker
        .borrow_mut()
        .on_ack(client_id, completion, std::time::Instant::now());
    core.apply(effects).await;
}
