//! The per-connection protocol state machine, free of I/O and clocks.
//!
//! [`connect`] decides whether a CONNECT is accepted and what the CONNACK says
//! ([`credentials`]: the refusal of its username and password; [`admission`]: of a client
//! the broker's limits keep out);
//! [`Link`] is one connection's whole state machine, from CONNECT to its end: it checks
//! every packet against the rules of its protocol version, calls the engine, and hands
//! its driver the steps to carry out (packets to write, effects to apply, waits before an
//! acknowledgement may leave). Time comes in as an argument, so all of it is testable
//! without sockets.
//! [`state`] is what outlives connections: a [`Session`]'s window, queue, inbound QoS 2
//! ids and (in `subscriptions`) its filters.

pub mod admission;
pub mod connect;
pub mod credentials;
pub mod link;
pub mod state;
mod subscriptions;

pub use connect::{accept_connect, Accepted, ConnectPolicy};
pub use link::{End, Engine, Link, Step};
pub use state::{Message, Session, Subscription};
