//! What a session may do under the ACL in force, and whose session it is.
//!
//! Each core holds the ACL as an immutable snapshot ([`Broker::set_acl`], replaced whole
//! when a reload reads the file again). A session records the username of the connection
//! that last took it (journaled as SESSION_OWNER when it changes, and in its SNAPSHOT), so
//! that after a restart its deliveries still follow its user's rules and only that user
//! may take it over.
//!
//! Where the rules apply:
//! - SUBSCRIBE: a filter the ACL does not let the session read is refused (SUBACK 0x87,
//!   3.1.1 0x80) in [`Broker::subscribe`];
//! - PUBLISH: the session's Link asks [`Broker::may_publish`] before routing;
//! - delivery: [`Broker::deliver_to`] drops the recipients that may not read the topic
//!   (a retained message sent on subscribing included), and a session's queue is read
//!   through [`Readable`] when it is resumed or drained, so a message queued before the
//!   rules changed is not sent if the reader may no longer read it (it is dropped, as an
//!   expired one is).
//!
//! Invariant: with no ACL every check allows, at the cost of one branch.

use std::sync::Arc;

use bytestring::ByteString;

use super::journal::Record;
use super::publish::Recipient;
use super::Broker;
use crate::auth::{Acl, Who};
use crate::session::state::{Messages, Seq};
use crate::session::Message;

impl Broker {
    /// The ACL in force from now on (`None`: every client may do everything).
    pub fn set_acl(&mut self, acl: Option<Arc<Acl>>) {
        self.acl = acl;
    }

    /// `Some(username)` when this core holds a session for `client_id`: the username of
    /// the connection that last took it.
    pub fn session_username(&self, client_id: &ByteString) -> Option<Option<&str>> {
        self.sessions
            .get(client_id)
            .map(|slot| slot.username.as_deref())
    }

    /// Records the username of the connection that just took `client_id`'s session;
    /// journaled when it changed.
    pub fn set_username(&mut self, client_id: &ByteString, username: Option<&str>) {
        let Some(slot) = self.sessions.get_mut(client_id) else {
            return;
        };
        if slot.username.as_deref() == username {
            return;
        }
        slot.username = username.map(Box::from);
        if let Some(sid) = slot.sid {
            self.journal(&Record::SessionOwner {
                sid,
                username: username.map(ByteString::from),
            });
        }
    }

    /// Whether `client_id`'s session may publish to `topic`; a refusal is counted.
    pub fn may_publish(&mut self, client_id: &ByteString, topic: &str) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        let allowed = acl.may_publish(self.who(client_id), topic);
        self.counters.acl_refused += u64::from(!allowed);
        self.counters.acl_publish_refused += u64::from(!allowed);
        allowed
    }

    /// Whether `client_id`'s session may subscribe to `filter` (the filter inside a
    /// `$share/{group}/` one); a refusal is counted.
    pub(super) fn may_subscribe(&mut self, client_id: &ByteString, filter: &str) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        let allowed = acl.may_subscribe(self.who(client_id), filter);
        self.counters.acl_refused += u64::from(!allowed);
        allowed
    }

    /// Drops the recipients that may not read `topic`.
    pub(super) fn keep_readers(&mut self, targets: &mut Vec<Recipient>, topic: &str) {
        let Some(acl) = self.acl.clone() else {
            return;
        };
        let before = targets.len();
        targets.retain(|target| acl.may_read(self.who(&target.client_id), topic));
        self.counters.acl_denied += (before - targets.len()) as u64;
    }

    fn who<'a>(&'a self, client_id: &'a ByteString) -> Who<'a> {
        Who {
            client_id,
            username: self
                .sessions
                .get(client_id)
                .and_then(|slot| slot.username.as_deref()),
        }
    }
}

/// A session's view of the stored messages under the ACL in force: a message it may not
/// read is not there (so a resume or drain drops it unsent, as it does an expired one).
/// With no ACL it is `messages` as they are.
pub(super) struct Readable<'a, M: Messages> {
    pub messages: &'a M,
    pub acl: Option<&'a Acl>,
    pub who: Who<'a>,
}

impl<M: Messages> Messages for Readable<'_, M> {
    fn get(&self, seq: Seq) -> Option<Arc<Message>> {
        let message = self.messages.get(seq)?;
        match self.acl {
            Some(acl) if !acl.may_read(self.who, &message.topic) => None,
            _ => Some(message),
        }
    }

    fn size(&self, seq: Seq) -> usize {
        self.messages.size(seq)
    }
}
