//! What other nodes send this one: QoS 0 messages from core NATS and QoS 1/2 messages
//! from this node's stream, each handed to the core that owns its publisher's client id (so
//! that one publisher's messages keep their order on this node).
//!
//! Invariants: a stream message is acknowledged only once its core answered that it is
//! stored, and acknowledgements go in the order the stream delivered; a refused one is
//! nacked (JetStream delivers it again); a body that does not decode is logged and
//! terminated, never routed.

use std::rc::Rc;

use async_nats::jetstream::{self, consumer};
use futures_lite::StreamExt;

use super::bridge::{prepare, MAX_ACK_PENDING, RETRY};
use super::{keys, wire, ToCore};
use crate::ownership::owner_of;

/// QoS 0 messages other nodes send here, to the core that owns their publisher's id (so
/// that one publisher's messages keep their order).
pub(super) async fn take_qos0(
    client: async_nats::Client,
    node: String,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
) {
    let subject = keys::q0_subject(&node);
    let mut messages = loop {
        match client.subscribe(subject.clone()).await {
            Ok(messages) => break messages,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot subscribe to {subject}, trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    while let Some(message) = messages.next().await {
        match wire::decode_with_groups(&message.payload) {
            Ok((publisher, publish, groups)) => {
                let core = owner_of(&publisher, to_cores.len()).0;
                let inject = ToCore::Inject {
                    publisher,
                    publish,
                    groups,
                    stream_seq: None,
                    done: None,
                };
                let _ = to_cores[core].send_async(inject).await;
            }
            Err(error) => tracing::warn!(%error, "cluster: a QoS 0 message from NATS dropped"),
        }
    }
}

/// The node's stream: each message routed here, acknowledged once stored, in order.
pub(super) async fn take_stream(
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    (js, replicas): (jetstream::Context, usize),
    node: String,
    to_cores: Rc<Vec<flume::Sender<ToCore>>>,
) {
    let (pending, mut answers) = tokio::sync::mpsc::channel(MAX_ACK_PENDING as usize);
    // Tests only: stored messages are never acknowledged, as if the node were killed
    // between storing and acknowledging each (the stream delivers them again).
    let hold_acks = std::env::var_os("BERTH_TEST_HOLD_STREAM_ACKS").is_some();
    tokio::task::spawn_local(async move {
        while let Some((message, done)) = answers.recv().await {
            let done: flume::Receiver<bool> = done;
            let message: jetstream::Message = message;
            let acked = match done.recv_async().await {
                Ok(true) if hold_acks => {
                    tracing::info!(
                        "cluster: test hook: a stored stream message left unacknowledged"
                    );
                    Ok(())
                }
                Ok(true) => message.ack().await,
                // Refused (a full disk) or the core stopped: JetStream delivers it again.
                _ => message.ack_with(jetstream::AckKind::Nak(Some(RETRY))).await,
            };
            if let Err(error) = acked {
                tracing::warn!(%error, "cluster: a stream acknowledgement was not sent");
            }
        }
    });
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                // The stream or its consumer may be gone (deleted by hand): made again.
                tracing::warn!(%error, "cluster: cannot read this node's stream, trying again");
                tokio::time::sleep(RETRY).await;
                if let Ok((_, _, _, again)) = prepare(&js, &node, false, replicas).await {
                    consumer = again;
                }
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "cluster: reading this node's stream again");
                    break;
                }
            };
            let (publisher, publish, groups) = match wire::decode_with_groups(&message.payload) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::warn!(%error, "cluster: a stream message dropped");
                    let _ = message.ack_with(jetstream::AckKind::Term).await;
                    continue;
                }
            };
            let Ok(info) = message.info() else {
                // Without its stream sequence a QoS 2 message could be taken twice.
                tracing::warn!("cluster: a stream message without its metadata dropped");
                let _ = message.ack_with(jetstream::AckKind::Term).await;
                continue;
            };
            let stream_seq = Some(info.stream_sequence);
            let core = owner_of(&publisher, to_cores.len()).0;
            let (done, answer) = flume::bounded(1);
            let inject = ToCore::Inject {
                publisher,
                publish,
                groups,
                stream_seq,
                done: Some(done),
            };
            if to_cores[core].send_async(inject).await.is_err() {
                return; // the cores have stopped
            }
            if pending.send((message, answer)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
