//! What the admin API sees of a core's sessions: a view of one, pages of them in client id
//! order, a session's subscriptions and held messages, and discarding them; and the
//! session policy it may change at run time.
//!
//! A page is the `limit` smallest client ids after a cursor that match the query, chosen in
//! one pass over the sessions with a heap of `limit + 1` (no sort of the whole map): a page
//! costs O(sessions x log limit) on the core, and pages walk every session exactly once
//! whatever connects or ends between them (an id is after the cursor or it is not).
//!
//! Invariant: discarding a session ends it exactly as an expiry does (subscriptions left,
//! references dropped, its will published, SESSION_END journaled).

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::messages::Lookup;
use super::{Broker, Effects, Slot};
use crate::protocol::{PacketId, QoS};
use crate::session::state::{Messages, Outbound, QueueLimits, Seq};
use crate::session::{Message, Subscription};

/// One session as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub client_id: ByteString,
    pub username: Option<String>,
    pub connected: bool,
    /// Whether it is journaled (it outlives its connection).
    pub persistent: bool,
    pub expiry_secs: u64,
    /// While offline: Unix milliseconds when it went offline and when it expires.
    pub disconnected_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    pub queued: usize,
    pub in_flight: usize,
    /// Messages its queue dropped (overflow policy) since the session began on this core.
    pub dropped: u64,
    pub subscriptions: usize,
}

/// Which sessions a listing or a bulk delete takes (every condition given must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    pub connected: Option<bool>,
    /// A substring of the client id.
    pub like_client_id: Option<String>,
    pub username: Option<String>,
    pub min_queue_len: usize,
}

impl SessionQuery {
    fn matches(&self, client_id: &str, slot: &Slot) -> bool {
        self.connected.is_none_or(|c| c == slot.online)
            && self
                .like_client_id
                .as_deref()
                .is_none_or(|like| client_id.contains(like))
            && self
                .username
                .as_deref()
                .is_none_or(|u| slot.username.as_deref() == Some(u))
            && slot.session.queued() + slot.session.in_flight() >= self.min_queue_len
    }
}

/// A message a session holds: sent and not yet acknowledged, or waiting in its queue.
#[derive(Debug, Clone)]
pub struct HeldMessage {
    pub seq: Seq,
    /// `Some` while in flight: its packet id, and whether PUBREL was sent (QoS 2).
    pub in_flight: Option<(PacketId, bool)>,
    /// The QoS and RETAIN it goes out with.
    pub qos: QoS,
    pub retain: bool,
    /// `None` if it can no longer be read (expired, or the log could not be read).
    pub message: Option<Arc<Message>>,
}

impl Broker {
    pub fn has_session(&self, client_id: &str) -> bool {
        self.sessions.contains_key(client_id)
    }

    /// A session's subscriptions, by filter.
    pub fn subscriptions_of(&self, client_id: &str) -> Option<Vec<(ByteString, Subscription)>> {
        let slot = self.sessions.get(client_id)?;
        let mut held: Vec<_> = slot
            .session
            .subscriptions
            .iter()
            .map(|(filter, sub)| (filter.clone(), sub.clone()))
            .collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        Some(held)
    }

    /// Up to `limit` of the messages a session holds with a number after `after`, in the
    /// order they arrived (in flight first, then queued), and whether more follow.
    pub fn held_messages(
        &self,
        client_id: &str,
        after: Option<Seq>,
        limit: usize,
    ) -> Option<(Vec<HeldMessage>, bool)> {
        let session = &self.sessions.get(client_id)?.session;
        let in_flight = session.in_flight_entries().map(|f| {
            let released = f.state == Outbound::Released;
            (f.entry, Some((f.packet_id, released)))
        });
        let queued = session.queued_entries().map(|q| (q, None));
        let mut held: Vec<_> = in_flight
            .chain(queued)
            .filter(|(entry, _)| after.is_none_or(|after| entry.seq() > after))
            .collect();
        held.sort_by_key(|(entry, _)| entry.seq());
        let more = held.len() > limit;
        held.truncate(limit);
        let lookup = Lookup {
            table: &self.messages,
            journal: self.journal.as_ref(),
            clock: self.clock,
        };
        let page = held
            .into_iter()
            .map(|(entry, in_flight)| HeldMessage {
                seq: entry.seq(),
                in_flight,
                qos: entry.qos(),
                retain: entry.retain(),
                message: lookup.get(entry.seq()),
            })
            .collect();
        Some((page, more))
    }

    /// The run-time part of the session policy: the cap on Session Expiry (for sessions
    /// that connect from now on) and the queue limits (for the next message queued).
    pub fn set_session_limits(&mut self, max_session_expiry: Duration, limits: QueueLimits) {
        self.policy.max_session_expiry = max_session_expiry;
        self.policy.limits = limits;
    }

    pub fn session_view(&self, client_id: &str, now: Instant) -> Option<SessionView> {
        let (client_id, slot) = self.sessions.get_key_value(client_id)?;
        Some(self.view_of(client_id, slot, now))
    }

    fn view_of(&self, client_id: &ByteString, slot: &Slot, now: Instant) -> SessionView {
        let offline = (!slot.online).then_some(slot.expires_at).flatten();
        let unix = |at: Instant| self.clock.unix_ms(at);
        SessionView {
            client_id: client_id.clone(),
            username: slot.username.as_deref().map(str::to_string),
            connected: slot.online,
            persistent: slot.sid.is_some(),
            expiry_secs: slot.expiry.as_secs(),
            disconnected_at_ms: offline
                .map(|at| unix(at.checked_sub(slot.expiry).unwrap_or(now).min(now))),
            expires_at_ms: offline.map(unix),
            queued: slot.session.queued(),
            in_flight: slot.session.in_flight(),
            dropped: slot.session.dropped,
            subscriptions: slot.session.subscriptions.len(),
        }
    }

    /// The first `limit` sessions (by client id) after `after` that `query` takes, and
    /// whether more follow.
    pub fn list_sessions(
        &self,
        query: &SessionQuery,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> (Vec<SessionView>, bool) {
        let mut smallest: BinaryHeap<&ByteString> = BinaryHeap::with_capacity(limit + 2);
        for (client_id, slot) in &self.sessions {
            if after.is_some_and(|after| &**client_id <= after) || !query.matches(client_id, slot) {
                continue;
            }
            if smallest.len() <= limit {
                smallest.push(client_id);
            } else if smallest.peek().is_some_and(|largest| client_id < *largest) {
                smallest.pop();
                smallest.push(client_id);
            }
        }
        let mut ids = smallest.into_sorted_vec();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let views = ids
            .into_iter()
            .filter_map(|id| {
                self.sessions
                    .get(id)
                    .map(|slot| self.view_of(id, slot, now))
            })
            .collect();
        (views, more)
    }

    /// The offline sessions `query` takes (a bulk delete ends them).
    pub fn offline_matching(&self, query: &SessionQuery) -> Vec<ByteString> {
        self.sessions
            .iter()
            .filter(|(id, slot)| !slot.online && query.matches(id, slot))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends `client_id`'s session now, as an expiry would; false if there is none. The
    /// caller has stopped its connection first, if it had one.
    pub fn discard_session(&mut self, client_id: &ByteString, now: Instant) -> (bool, Effects) {
        let mut effects = Effects::default();
        if !self.sessions.contains_key(client_id) {
            return (false, effects);
        }
        self.end_session(client_id, now, &mut effects);
        (true, effects)
    }
}
