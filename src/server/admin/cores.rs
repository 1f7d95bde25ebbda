//! The admin API's questions to the cores, and how a core answers them.
//!
//! The admin executor holds one [`flume`] sender per core; each core runs [`answer_loop`],
//! which takes one [`Ask`] at a time and answers on the one-shot channel it carries. A core
//! answers from its own state only (no core reads another's), so a request about one client
//! goes to its owner core and a listing asks the cores in turn. flume wakes a glommio task
//! from another thread (glommio's foreign waker); a round trip costs tens of microseconds,
//! nothing next to an HTTP request.

use std::rc::Rc;
use std::time::Instant;

use bytestring::ByteString;

use super::super::local::{ConnInfo, Core};
use super::changes;
use crate::broker::{HeldMessage, SessionQuery, SessionView, Stat};
use crate::config::Settings;
use crate::protocol::{Publish, ReasonCode};
use crate::session::state::Seq;
use crate::session::Subscription;

/// A question to one core.
pub enum Question {
    /// Up to `limit` sessions after `after` (client id order) that the query takes.
    List {
        query: SessionQuery,
        after: Option<String>,
        limit: usize,
    },
    /// One session.
    Get { client_id: String },
    /// Disconnect a client (DISCONNECT 0x98), keeping its session.
    Kick {
        client_id: String,
        publish_will: bool,
    },
    /// Discard a session, disconnecting its client first.
    Delete { client_id: String },
    /// Discard every offline session the query takes.
    DeleteOffline { query: SessionQuery },
    /// The core's figures, as `$SYS` publishes them.
    Stats,
    /// A session's subscriptions.
    Subscriptions { client_id: String },
    /// Subscribe a session (online or offline), as its SUBSCRIBE would.
    Subscribe {
        client_id: String,
        filter: String,
        subscription: Subscription,
    },
    /// Unsubscribe a session from one filter, as its UNSUBSCRIBE would.
    Unsubscribe { client_id: String, filter: String },
    /// Up to `limit` of a session's held messages numbered after `after`.
    Held {
        client_id: String,
        after: Option<Seq>,
        limit: usize,
    },
    /// Publish as the admin API (`$admin`), answered once it is as durable as a client's
    /// QoS 1/2 publish is when its acknowledgement leaves.
    Publish(Publish),
    /// Put run-time settings in force on this core.
    Settings(Settings),
}

/// A session with what its connection adds.
#[derive(Debug, Clone)]
pub struct Client {
    pub session: SessionView,
    pub connection: Option<ConnInfo>,
    pub core: usize,
}

pub enum Answer {
    Clients {
        clients: Vec<Client>,
        more: bool,
    },
    Client(Option<Client>),
    /// Whether there was something to act on.
    Done(bool),
    Deleted(usize),
    Stats(Vec<(Stat, u64)>),
    /// `None`: no such session.
    Subscriptions(Option<Vec<(ByteString, Subscription)>>),
    /// The SUBACK's or UNSUBACK's reason code; `None`: no such session.
    Reason(Option<ReasonCode>),
    Held(Option<(Vec<HeldMessage>, bool)>),
    Published(Result<(), changes::NotPublished>),
}

pub struct Ask {
    pub question: Question,
    pub reply: flume::Sender<Answer>,
}

/// Runs on each core until the admin executor is gone.
pub async fn answer_loop(core: Rc<Core>, asks: flume::Receiver<Ask>) {
    while let Ok(Ask { question, reply }) = asks.recv_async().await {
        let answer = answer(&core, question).await;
        let _ = reply.send(answer);
    }
}

async fn answer(core: &Rc<Core>, question: Question) -> Answer {
    let client = |session: SessionView| Client {
        connection: core.connection_info(&session.client_id),
        session,
        core: core.id.0,
    };
    match question {
        Question::List {
            query,
            after,
            limit,
        } => {
            let (sessions, more) =
                core.broker
                    .borrow()
                    .list_sessions(&query, after.as_deref(), limit, Instant::now());
            Answer::Clients {
                clients: sessions.into_iter().map(client).collect(),
                more,
            }
        }
        Question::Get { client_id } => {
            let session = core
                .broker
                .borrow()
                .session_view(&client_id, Instant::now());
            Answer::Client(session.map(client))
        }
        Question::Kick {
            client_id,
            publish_will,
        } => match core.kick(&client_id, publish_will, false) {
            Some(stopped) => {
                let _ = stopped.recv().await;
                Answer::Done(true)
            }
            None => Answer::Done(false),
        },
        Question::Delete { client_id } => Answer::Done(delete(core, &client_id).await),
        Question::DeleteOffline { query } => {
            let ids = core.broker.borrow().offline_matching(&query);
            let mut deleted = 0;
            for id in ids {
                deleted += usize::from(delete(core, &id).await);
            }
            Answer::Deleted(deleted)
        }
        Question::Stats => {
            let mut stats = core.broker.borrow().core_stats();
            core.stats.fill(&mut stats);
            // The limits' refusals too, as `$SYS` has them (`server::sys`).
            core.limits.fill(&mut stats);
            Answer::Stats(Stat::ALL.iter().map(|&s| (s, stats.get(s))).collect())
        }
        other => changes::answer(core, other).await,
    }
}

/// Discards `client_id`'s session: a connected client is disconnected with its session
/// discarded (it ends as the connection does); an offline session ends at once.
async fn delete(core: &Rc<Core>, client_id: &str) -> bool {
    if let Some(stopped) = core.kick(client_id, false, true) {
        let _ = stopped.recv().await;
        return true;
    }
    let client_id = ByteString::from(client_id);
    let (found, effects) = core
        .broker
        .borrow_mut()
        .discard_session(&client_id, Instant::now());
    core.apply(effects).await;
    found
}
