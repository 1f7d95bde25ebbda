//! A pipelined publisher: a writer task keeps up to `window` QoS 1/2 messages unacknowledged
//! (or writes QoS 0 as fast as the socket takes it, or at a fixed rate), while a reader task
//! takes PUBACK / PUBREC / PUBCOMP off the socket and opens the window again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::protocol::{self, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::conn::{ack, Conn, Failure};
use crate::transport::WriteHalf;

/// How one publisher sends.
pub struct PublishPlan {
    pub qos: QoS,
    /// Most QoS 1/2 messages unacknowledged at once.
    pub window: usize,
    /// Messages per second for this publisher; 0 means as fast as the broker takes them.
    pub rate: f64,
    /// Stop sending at this instant (throughput runs); None sends until the source runs dry.
    pub until: Option<Instant>,
    /// How long to wait for the last acknowledgements.
    pub drain: Duration,
}

/// What one publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub sent: u64,
    pub acked: u64,
}

/// Sends messages from `next(n)` (topic, payload for the n-th message; None when done)
/// and returns once every QoS 1/2 message is acknowledged or `drain` has passed.
pub async fn run<F>(conn: Conn, plan: PublishPlan, mut next: F) -> Result<Published, Failure>
where
    F: FnMut(u64) -> Option<(ByteString, Bytes)>,
{
    let version = conn.version;
    let (mut rd, mut rbuf, mut wr) = conn.into_split();
    let permits = Arc::new(Semaphore::new(plan.window.max(1)));
    let acked = Arc::new(AtomicU64::new(0));
    let (rel_tx, mut rel_rx) = mpsc::unbounded_channel::<PacketId>();

    let reader = {
        let (permits, acked) = (permits.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                while let Ok(Some(p)) = protocol::decode(&mut rbuf, version, 268_435_455) {
                    match p {
                        Packet::PubAck(_) | Packet::PubComp(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            permits.add_permits(1);
                        }
                        Packet::PubRec(a) => {
                            let _ = rel_tx.send(a.packet_id);
                        }
                        _ => {}
                    }
                }
                rbuf.reserve(16 * 1024);
                match rd.read_buf(&mut rbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
    };

    let write_err = |e: std::io::Error| Failure::new("write_error", e.to_string());
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut n = 0u64;
    let mut next_id = 0u16;
    let mut done = false;
    while !done {
        while let Ok(id) = rel_rx.try_recv() {
            encode(&Packet::PubRel(ack(id)), version, &mut buf);
        }
        if plan.until.is_some_and(|u| Instant::now() >= u) {
            done = true;
        }
        let due = if plan.rate > 0.0 {
            (started.elapsed().as_secs_f64() * plan.rate) as u64
        } else {
            u64::MAX
        };
        let mut batch = 0;
        while !done && batch < 64 && n < due {
            if plan.qos != QoS::AtMostOnce {
                match permits.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
            }
            let Some((topic, payload)) = next(n) else {
                done = true;
                if plan.qos != QoS::AtMostOnce {
                    permits.add_permits(1);
                }
                break;
            };
            let packet_id = (plan.qos != QoS::AtMostOnce).then(|| {
                next_id = next_id.checked_add(1).unwrap_or(1);
                PacketId::new(next_id).expect("never 0")
            });
            let publish = Publish {
                dup: false,
                qos: plan.qos,
                retain: false,
                topic,
                packet_id,
                properties: Properties::default(),
                payload,
            };
            encode(&Packet::Publish(publish), version, &mut buf);
            n += 1;
            batch += 1;
        }
        if !buf.is_empty() {
            send(&mut wr, &mut buf).await.map_err(write_err)?;
            continue;
        }
        if done {
            break;
        }
        // Nothing could be sent: wait for the window, a PUBREL to send, or the next due time.
        let wait_for_rate = if n >= due {
            Duration::from_secs_f64(
                ((n + 1) as f64 / plan.rate - started.elapsed().as_secs_f64()).max(0.0),
            )
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            permit = permits.acquire(), if n < due => drop(permit),
            Some(id) = rel_rx.recv() => encode(&Packet::PubRel(ack(id)), version, &mut buf),
            _ = tokio::time::sleep(wait_for_rate) => {}
        }
    }

    if plan.qos != QoS::AtMostOnce {
        let deadline = Instant::now() + plan.drain;
        while acked.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::select! {
                Some(id) = rel_rx.recv() => {
                    encode(&Packet::PubRel(ack(id)), version, &mut buf);
                    send(&mut wr, &mut buf).await.map_err(write_err)?;
                }
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    encode(&Packet::Disconnect(Default::default()), version, &mut buf);
    let _ = send(&mut wr, &mut buf).await;
    let mut reader = reader;
    if tokio::time::timeout(Duration::from_millis(500), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    Ok(Published {
        sent: n,
        acked: acked.load(Ordering::Relaxed),
    })
}

/// Writes `buf` out and empties it; the flush pushes out what TLS or WebSocket held back.
async fn send(wr: &mut WriteHalf, buf: &mut BytesMut) -> std::io::Result<()> {
    wr.write_all(buf).await?;
    wr.flush().await?;
    buf.clear();
    Ok(())
}

fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    protocol::encode(packet, version, buf).expect("the load generator only builds valid packets");
}
