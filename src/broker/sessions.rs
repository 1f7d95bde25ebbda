//! A session's life on its core: a client connects (a new session, a resumed one, or one
//! that Clean Start or an expiry ends first), disconnects (the session goes offline, or
//! ends with its connection), and an offline session expires.
//!
//! Invariants: a session is online between `connect` and `disconnect`, and only an offline
//! one has an expiry time; an entry of the expiry queue ends a session only if it is still
//! offline and its expiry time is that entry's (a reconnect or a new expiry makes older
//! entries stale); a session that ends leaves its subscriptions and share groups, drops its
//! references to stored messages, publishes its pending will, and, if persistent, is
//! journaled as ended.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::access::Readable;
use super::journal::Record;
use super::messages::Lookup;
use super::{Broker, Effects, Slot};
use crate::auth::Who;
use crate::protocol::Packet;
use crate::session::Session;

impl Broker {
    /// A client connected. Returns Session Present and the packets that resume its session,
    /// or `None` when the core already holds its maximum of sessions.
    /// `expiry` is the requested Session Expiry (3.1.1: 0 for Clean Session 1, the server
    /// maximum otherwise); it is capped by policy and the capped value returned.
    /// The connection gives no username: see [`Broker::connect_as`].
    pub fn connect(
        &mut self,
        client_id: &ByteString,
        clean_start: bool,
        expiry: Duration,
        receive_maximum: u16,
        now: Instant,
    ) -> Option<(bool, Duration, Vec<Packet>, Effects)> {
        self.connect_as(client_id, None, clean_start, expiry, receive_maximum, now)
    }

    /// [`Broker::connect`] for a connection with `username` (`None`: it gave none), which
    /// becomes the session's (see `access`).
    pub fn connect_as(
        &mut self,
        client_id: &ByteString,
        username: Option<&str>,
        clean_start: bool,
        expiry: Duration,
        receive_maximum: u16,
        now: Instant,
    ) -> Option<(bool, Duration, Vec<Packet>, Effects)> {
        let mut effects = Effects::default();
        let expiry = expiry.min(self.policy.max_session_expiry);
        // [MQTT-3.1.3-9] a new connection before the Will Delay Interval has passed
        // cancels the will.
        self.wills.take(client_id);
        let expired = self
            .sessions
            .get(client_id)
            .is_some_and(|slot| !slot.online && slot.expires_at.is_some_and(|at| at <= now));
        self.counters.sessions_expired += u64::from(expired);
        if clean_start || expired {
            // An expired session is gone even if the once-a-second sweep has not run yet.
            self.end_session(client_id, now, &mut effects);
        }
        let present = self.sessions.contains_key(client_id);
        if !present && self.sessions.len() >= self.policy.max_sessions {
            return None;
        }
        if !present {
            let sid = (!expiry.is_zero()).then(|| {
                let sid = self.next_sid;
                self.next_sid += 1;
                sid
            });
            let checkpoint = self.checkpoint_mark();
            self.sessions.insert(
                client_id.clone(),
                Box::new(Slot {
                    session: Session::new(client_id.clone()),
                    online: true,
                    expiry,
                    expires_at: None,
                    sid,
                    checkpoint,
                    username: None,
                }),
            );
            if let Some(sid) = sid {
                self.journal(&Record::SessionOpen {
                    sid,
                    client_id: client_id.clone(),
                    expiry_secs: expiry.as_secs(),
                });
            }
        } else {
            let slot = self.sessions.get_mut(client_id)?;
            let (sid, old_expiry) = (slot.sid, slot.expiry);
            slot.online = true;
            slot.expiry = expiry;
            slot.expires_at = None;
            match sid {
                Some(sid) => {
                    // SESSION_ONLINE also clears the will in the log: the new connection
                    // journals its own (`hold_will`).
                    self.wills.unlog(sid);
                    self.journal(&Record::SessionOnline { sid });
                    if old_expiry != expiry {
                        self.journal(&Record::SessionExpiry {
                            sid,
                            expiry_secs: expiry.as_secs(),
                        });
                    }
                }
                None if !expiry.is_zero() => self.promote(client_id, now),
                None => {}
            }
        }
        // What this connection's user may read decides what is resumed.
        self.set_username(client_id, username);
        let mut resume = Vec::new();
        let mut changes = Vec::new();
        let Broker {
            sessions,
            messages,
            journal,
            clock,
            acl,
            ..
        } = self;
        let slot = sessions.get_mut(client_id)?;
        let sid = slot.sid;
        let lookup = Lookup {
            table: messages,
            journal: journal.as_ref(),
            clock: *clock,
        };
        let lookup = Readable {
            messages: &lookup,
            acl: acl.as_deref(),
            who: Who {
                client_id,
                username: slot.username.as_deref(),
            },
        };
        slot.session
            .resume(receive_maximum, &lookup, now, &mut resume, &mut changes);
        self.settle(sid, &mut changes);
        self.share_presence(client_id, true, &mut effects);
        Some((present, expiry, resume, effects))
    }

    /// The client's connection ended. A session with no expiry ends with it.
    pub fn disconnect(
        &mut self,
        client_id: &ByteString,
        expiry: Option<Duration>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return effects;
        };
        if let Some(expiry) = expiry {
            slot.expiry = expiry.min(self.policy.max_session_expiry);
        }
        if slot.expiry.is_zero() {
            self.end_session(client_id, now, &mut effects);
            return effects;
        }
        slot.online = false;
        slot.session.compact();
        let at = now + slot.expiry;
        slot.expires_at = Some(at);
        let (sid, expiry) = (slot.sid, slot.expiry);
        self.expiries.push(Reverse((at, client_id.clone())));
        self.share_presence(client_id, false, &mut effects);
        if let Some(sid) = sid {
            let at_ms = self.clock.unix_ms(now);
            self.journal(&Record::SessionOffline {
                sid,
                at_ms,
                expiry_secs: expiry.as_secs(),
            });
        }
        effects
    }

    /// Ends sessions whose expiry has passed while offline, and publishes the wills whose
    /// delay has passed.
    pub fn expire(&mut self, now: Instant) -> Effects {
        let mut effects = Effects::default();
        while let Some((client_id, will)) = self.wills.next_due(now) {
            let published = self.publish(&client_id, will, now);
            effects.extend(published);
            self.drop_will(&client_id);
        }
        while let Some(Reverse((at, _))) = self.expiries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, client_id))) = self.expiries.pop() else {
                break;
            };
            let due = self
                .sessions
                .get(&client_id)
                .is_some_and(|slot| !slot.online && slot.expires_at == Some(at));
            if due {
                self.counters.sessions_expired += 1;
                self.end_session(&client_id, now, &mut effects);
            }
        }
        effects
    }

    pub(super) fn end_session(
        &mut self,
        client_id: &ByteString,
        now: Instant,
        effects: &mut Effects,
    ) {
        if let Some(will) = self.wills.take(client_id) {
            let published = self.publish(client_id, will, now);
            effects.extend(published);
        }
        let Some(slot) = self.sessions.remove(client_id) else {
            return;
        };
        self.checkpoint_forget(&slot);
        for filter in slot.session.subscriptions.keys() {
            self.remove_subscription(client_id, filter, effects);
        }
        for seq in slot.session.references() {
            self.messages.release(seq);
        }
        if let Some(sid) = slot.sid {
            self.wills.unlog(sid);
            self.exactly_once.end_session(sid);
            self.journal(&Record::SessionEnd { sid });
        }
    }
}
