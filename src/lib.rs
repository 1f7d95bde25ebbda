//! berth: an MQTT 3.1.1/5.0 broker built for persistent sessions at scale.
//!
//! The pipeline reads top to bottom: bytes -> [`protocol`] packets -> [`session`] state
//! machines -> per-core routing -> subscriber sessions -> bytes, with [`server`] owning the
//! sockets, the cores and the hand-off of connections between them.

#![deny(unsafe_code)]

pub mod auth;
pub mod broker;
mod clock;
pub mod cluster;
pub mod cluster_command;
pub mod config;
pub(crate) mod hash;
pub mod histogram;
pub mod nats;
pub mod ownership;
pub mod passwd;
pub mod protocol;
pub mod server;
pub mod session;
pub mod store;
pub mod topic;
pub mod websocket;
