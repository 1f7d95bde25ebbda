//! The per-connection protocol state machine, free of I/O and clocks.
//!
//! [`connect`] decides whether a CONNECT is accepted and what the CONNACK says;
//! [`Link`] follows one accepted connection: it checks every packet against the rules of
//! its protocol version, answers what can be answered locally and reports the rest;
//! [`state`] is what outlives connections: a [`Session`]'s window, queue, inbound QoS 2
//! ids and (in `subscriptions`) its filters. Time comes in as an argument; results go
//! out as packets and a verdict, so all of it is testable without sockets.

pub mod connect;
mod link;
pub mod state;
mod subscriptions;

pub use connect::{accept_connect, Accepted, ConnectPolicy};
pub use link::{Link, LinkEvent};
pub use state::{Message, Session, Subscription};
