//! One client connection's state machine, free of I/O and clocks (in the manner of
//! quinn-proto's `Connection`): every MQTT rule of a connection lives here, the socket code
//! in `server/` only carries out what it asks for.
//!
//! - [`Link::open`] / [`Opening::start`] (`open.rs`): CONNECT to CONNACK: acceptance, the
//!   requested and granted Session Expiry, the v5 CONNACK properties, the will held.
//! - [`Link::handle_packet`] (`checks.rs`, `inbound.rs`): one packet from the client, with
//!   the time of the read it came in; inbound topic aliases, empty topics, Receive
//!   Maximum, the store gate, and the acknowledgements held until what they promise is true.
//! - [`Link::close`] (`close.rs`): the end of the connection: the DISCONNECT the server
//!   sends, the will decision, the expiry in force.
//! - `fit.rs`: fitting outgoing packets to the client's limits (used by the writer task).
//!
//! **Invariant:** an acknowledgement of a QoS 1/2 PUBLISH leaves ([`Step::Send`]) only after
//! the driver has carried out the [`Step::Release`] that holds it: the message is durable in
//! this core's log and, when it was routed to other cores, they have processed it; when a
//! core refused to store a message of the batch, the acknowledgement says so (v5 0x97) or
//! the connection ends unacknowledged (3.x).

#[cfg(test)]
mod ack_tests;
mod checks;
mod close;
#[cfg(test)]
mod fake;
mod fit;
mod inbound;
mod limits;
#[cfg(test)]
mod limits_tests;
mod open;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::broker::{Effects, SubscribeOutcome};
use crate::protocol::{
    DecodeError, Packet, PacketId, ProtocolVersion, Publish, Subscribe, UnsubAck, Unsubscribe,
};
use checks::{check, Checked};

pub use checks::Violation;
pub use close::End;
pub use fit::{ClientLimits, Dropped, Fitted, Fitter};
pub use limits::{LimitHit, LinkLimits};
pub use open::{Opening, Refusal, Started};

/// The broker as a connection sees it: the calls the [`Link`] makes, all synchronous (the
/// driver implements it over its core's engine, store gate and refusal figures). A call
/// never waits: what must wait comes out as a [`Step`].
pub trait Engine {
    /// `username`: the connection's, which becomes the session's.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn connect(
        &mut self,
        client_id: &ByteString,
        username: Option<&str>,
        clean_start: bool,
        expiry: Duration,
        receive_maximum: u16,
        now: Instant,
    ) -> Option<(bool, Duration, Vec<Packet>, Effects)>;
    fn hold_will(&mut self, client_id: &ByteString, will: &Publish, delay_secs: u32);
    fn schedule_will(&mut self, client_id: &ByteString, will: Publish, at: Instant);
    fn drop_will(&mut self, client_id: &ByteString);
    /// Whether the ACL lets the session publish to `topic` (a refusal is counted).
    fn may_publish(&mut self, client_id: &ByteString, topic: &str) -> bool;
    fn publish(&mut self, client_id: &ByteString, publish: Publish, now: Instant) -> Effects;
    fn publish_exactly_once(
        &mut self,
        client_id: &ByteString,
        packet_id: PacketId,
        publish: Publish,
        now: Instant,
    ) -> Effects;
    /// Whether an inbound QoS 2 id is new (to be routed) rather than a resend.
    fn receive_qos2(&mut self, client_id: &ByteString, packet_id: PacketId) -> bool;
    fn awaiting_release(&self, client_id: &ByteString) -> usize;
    fn refuse_qos2(&mut self, client_id: &ByteString, packet_id: PacketId);
    fn journal_qos2_received(&mut self, client_id: &ByteString, packet_id: PacketId);
    fn on_ack(&mut self, client_id: &ByteString, packet: Packet, now: Instant) -> Effects;
    fn subscribe(
        &mut self,
        client_id: &ByteString,
        subscribe: Subscribe,
        now: Instant,
    ) -> SubscribeOutcome;
    fn unsubscribe(
        &mut self,
        client_id: &ByteString,
        unsubscribe: Unsubscribe,
    ) -> (UnsubAck, Effects);
    fn disconnect(
        &mut self,
        client_id: &ByteString,
        expiry: Option<Duration>,
        now: Instant,
    ) -> Effects;
    /// `Some` while the store gate takes no new QoS 1/2 messages.
    fn store_closed(&self) -> Option<StoreClosed>;
    /// What every core has refused to store so far (`gate::Refusals`).
    fn refusals(&self) -> Vec<u64>;
    /// Whether any core refused to store a message since `before` (a [`Engine::refusals`]).
    fn refused_since(&self, before: &[u64]) -> bool;
    /// Counts a QoS 1/2 PUBLISH refused because its message could not be stored.
    fn count_refused(&mut self);
    /// Counts a packet that ran into one of the connection's limits (`limits`).
    fn count_limit(&mut self, _hit: LimitHit) {}
}

/// Why the store takes no new QoS 1/2 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreClosed {
    /// A core's log cannot make its next segment.
    DiskFull,
    /// `max_stored_bytes` is reached.
    StoredBytes,
}

/// What the driver carries out, in the order [`Link::poll_step`] gives them.
#[derive(Debug)]
pub enum Step {
    /// Queue this packet for the connection's writer.
    Send(Packet),
    /// Carry out the engine's effects: packets to this core's clients, batches to the
    /// other cores (one channel message per core, in order).
    Apply(Effects),
    /// Wait until every other core has processed what this core sent it before (a SUBACK
    /// whose filter is new to this core waits for this).
    SyncPeers,
    /// Acknowledgements are held: wait until every other core has processed what this
    /// core sent it (when `sync_peers`), then until this core's log is durable, then call
    /// [`Link::release`], which queues them (as granted or refused).
    Release { sync_peers: bool },
}

/// One accepted connection's protocol state.
///
/// # Driver contract
///
/// 1. **Open.** [`Link::open`] with the decoded CONNECT: a [`Refusal`] is written and the
///    connection closed (lingering); an [`Opening`] names the client id. The driver
///    registers the id (waiting for a connection it takes over to stop), then calls
///    [`Opening::start`]: a `Refusal` again (session limit), or the `Link` and what
///    [`Started`] holds: effects to apply, then the writer is started with
///    [`Started::limits`], and the CONNACK and the resumed packets are queued, in order.
/// 2. **Read.** For each read's worth of bytes: read the clock once (`now`), decode
///    packets with [`Link::version`] and feed each to [`Link::handle_packet`] (a decode
///    error to [`Link::handle_decode_error`]) until the buffer holds no whole packet or
///    [`Link::is_ending`]; then call [`Link::end_of_read`], which batches the read's
///    cross-core effects and held acknowledgements.
/// 3. **Poll.** Take [`Link::poll_step`] until `None`, carrying out each [`Step`] before
///    taking the next (a `Release` ends with [`Link::release`], which adds steps).
/// 4. **Wait.** If [`Link::take_end`] gives an end, go to 5. Otherwise wait for more
///    bytes, or for [`Link::deadline`] (then call [`Link::handle_timeout`] and go to 3),
///    or for an end the driver sees itself ([`End::Closed`], [`End::TakenOver`], ...).
/// 5. **Close.** [`Link::close`] with the end and whether this connection still holds
///    the client id; poll and carry out its steps (a DISCONNECT, the will's effects);
///    then, if the connection still holds the id, apply [`Link::go_offline`]'s effects.
///    When `close` returns true a packet with a reason code was queued: the driver
///    closes without a TCP reset (drains the input, shuts the sending side).
///
/// The link never waits and never reads the clock: `now` comes in with every call that
/// needs it, and every wait (channel, sync, disk) is a [`Step`] for the driver.
#[derive(Debug)]
pub struct Link {
    version: ProtocolVersion,
    client_id: ByteString,
    keep_alive: Duration,
    last_packet: Instant,
    /// Topic aliases the client set on this connection, index alias - 1 (3.3.2.3.4);
    /// as many as our Topic Alias Maximum.
    aliases: Vec<Option<ByteString>>,
    /// Our Receive Maximum: inbound QoS 2 messages awaiting PUBREL at once.
    receive_maximum: u16,
    /// Session expiry in force; a v5 DISCONNECT may change it.
    expiry: Duration,
    max_session_expiry: Duration,
    zero_expiry_at_connect: bool,
    /// The CONNECT's will as the PUBLISH it becomes, and its Will Delay Interval.
    will: Option<(Publish, u32)>,
    /// This read's effects, carried out once per read so that one read's worth of
    /// publishes crosses to each core as one batch.
    pending: Effects,
    /// This read's acknowledgements of QoS 1/2 PUBLISH, held until [`Step::Release`].
    acks: Vec<Packet>,
    /// Whether a message of this read went to another core at QoS 1/2 (or retained).
    routed_on: bool,
    /// What every core had refused to store before this read's first QoS 1/2 PUBLISH was
    /// routed: its acknowledgements leave as success only if no figure rose.
    refusals_before: Option<Vec<u64>>,
    /// The same, for the acknowledgements a `Release` holds now.
    release_before: Option<Vec<u64>>,
    steps: VecDeque<Step>,
    end: Option<End>,
    /// Publish rate and topic depth (`limits`); none until the driver sets them.
    limits: LinkLimits,
}

impl Link {
    /// Holds the connection to `limits` from now on (the driver calls this once started).
    pub fn set_limits(&mut self, limits: LinkLimits) {
        self.limits = limits;
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client id, in an allocation of its own (not a slice of a read buffer).
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// When the connection must be closed if no packet arrives before: one and a half
    /// times the keep alive after the last packet [MQTT-3.1.2-24]. None when keep-alive
    /// is off.
    pub fn deadline(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            None
        } else {
            Some(self.last_packet + self.keep_alive + self.keep_alive / 2)
        }
    }

    /// The deadline's timer fired: ends the connection if it has really passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|at| at <= now) {
            self.end_with(End::KeepAliveTimeout);
        }
    }

    /// Whether a packet ended the connection: the driver decodes no more.
    pub fn is_ending(&self) -> bool {
        self.end.is_some()
    }

    /// The end a packet (or the keep-alive deadline) caused, once its steps are polled.
    pub fn take_end(&mut self) -> Option<End> {
        if self.steps.is_empty() {
            self.end.take()
        } else {
            None
        }
    }

    pub fn poll_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// A packet that failed to decode: the connection ends with its reason code.
    pub fn handle_decode_error(&mut self, error: DecodeError) {
        self.end_with(End::Violation(error.reason_code(), error.to_string()));
    }

    /// One packet from the client, read at `now`.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant, engine: &mut impl Engine) {
        if self.end.is_some() {
            return;
        }
        self.last_packet = now;
        match check(self.version, packet) {
            Ok(Checked::Reply(reply)) => self.steps.push_back(Step::Send(reply)),
            Ok(Checked::Discard) => {}
            Ok(Checked::Forward(packet)) => {
                if let Err(end) = self.forward(packet, now, engine) {
                    self.end_with(end);
                }
            }
            Ok(Checked::Disconnected {
                publish_will,
                session_expiry,
            }) => {
                let end = self.disconnected(publish_will, session_expiry);
                self.end_with(end);
            }
            Err(violation) => {
                self.end_with(End::Violation(
                    violation.reason_code,
                    violation.rule.to_string(),
                ));
            }
        }
    }

    /// The end of a read's worth of packets: its effects are carried out and its
    /// acknowledgements released (see [`Step::Release`]).
    pub fn end_of_read(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.steps.push_back(Step::Apply(pending));
        }
        self.release_before = self.refusals_before.take();
        let routed_on = std::mem::take(&mut self.routed_on);
        if !self.acks.is_empty() {
            self.steps.push_back(Step::Release {
                sync_peers: routed_on,
            });
        }
    }

    fn end_with(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
    }

    /// A packet for the publish/subscribe engine.
    fn forward(
        &mut self,
        packet: Packet,
        now: Instant,
        engine: &mut impl Engine,
    ) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, now, engine)?,
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                let effects = engine.on_ack(&self.client_id, packet, now);
                self.pending.to_clients.extend(effects.to_clients);
            }
            Packet::Subscribe(mut subscribe) => {
                let deep = self.limits.take_deep_filters(&mut subscribe);
                deep.iter()
                    .for_each(|_| engine.count_limit(LimitHit::FilterLevels));
                if subscribe.filters.is_empty() {
                    let refused = limits::all_refused(subscribe.packet_id, deep.len());
                    self.steps.push_back(Step::Send(refused));
                    return Ok(());
                }
                // What came before goes first, the subscription's interest next.
                let before = std::mem::take(&mut self.pending);
                if !before.is_empty() {
                    self.steps.push_back(Step::Apply(before));
                }
                let mut outcome = engine.subscribe(&self.client_id, subscribe, now);
                limits::merge_refused(&mut outcome.sub_ack, &deep);
                // The interest (cores, and the node's for a cluster) before the SUBACK.
                let to_clients = std::mem::take(&mut outcome.effects.to_clients);
                self.steps.push_back(Step::Apply(outcome.effects));
                if outcome.interest_changed {
                    self.steps.push_back(Step::SyncPeers);
                }
                // SUBACK first, then the retained messages it releases.
                self.steps
                    .push_back(Step::Send(Packet::SubAck(outcome.sub_ack)));
                self.steps.push_back(Step::Apply(Effects {
                    to_clients,
                    ..Effects::default()
                }));
            }
            Packet::Unsubscribe(unsubscribe) => {
                let (unsub_ack, effects) = engine.unsubscribe(&self.client_id, unsubscribe);
                if effects.node_interest.iter().any(|(_, present)| !present) {
                    // The node's last subscriber of a filter (or member of a group) left:
                    // the UNSUBACK waits until the other nodes no longer route it here,
                    // as a SUBACK waits until they do (bounded the same way).
                    let mut before = std::mem::take(&mut self.pending);
                    before.extend(effects);
                    self.steps.push_back(Step::Apply(before));
                    self.steps.push_back(Step::SyncPeers);
                } else {
                    self.pending.extend(effects);
                }
                self.steps
                    .push_back(Step::Send(Packet::UnsubAck(unsub_ack)));
            }
            _ => {}
        }
        Ok(())
    }
}
