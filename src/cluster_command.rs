//! `berth cluster`: what the load balancer in front of a berth cluster needs, written from
//! the slot map file the nodes read (`cluster::slots` describes its format).
//!
//! - `berth cluster haproxy-map --slot-map FILE`: HAProxy's map, `<slot> <server name>`
//!   per line, for `map(PATH)` after `crc32,mod(4096)`;
//! - `berth cluster haproxy-config --slot-map FILE --bind ADDR --map PATH
//!   [--stats-socket PATH]`: a whole HAProxy 2.6 configuration (`cluster::haproxy`);
//! - `berth cluster forget-node --node NAME --slot-map FILE --nats URLS`: removes what a
//!   node that never comes back left in NATS (`nats::forget_node`), refused while the
//!   slot map gives it slots or its heartbeat is recent.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::cluster::{haproxy, SlotMap};

#[derive(Debug, Parser)]
#[command(
    name = "berth cluster",
    about = "Write the HAProxy map and configuration for a berth cluster's slot map"
)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print HAProxy's map file: one `<slot> <server name>` line per slot.
    HaproxyMap {
        /// The slot map file the nodes read (`--slot-map` of `berth`).
        #[arg(long)]
        slot_map: PathBuf,
    },
    /// Print an HAProxy 2.6 configuration that routes each CONNECT to its home node.
    HaproxyConfig {
        /// The slot map file the nodes read (`--slot-map` of `berth`).
        #[arg(long)]
        slot_map: PathBuf,
        /// The address HAProxy listens on for MQTT clients.
        #[arg(long)]
        bind: String,
        /// Where HAProxy finds the map `berth cluster haproxy-map` writes.
        #[arg(long)]
        map: String,
        /// The runtime API's unix socket (`set map` moves a slot).
        #[arg(long, default_value = "/run/haproxy/admin.sock")]
        stats_socket: String,
    },
    /// Remove a dead node's interest entries, heartbeat and stream from NATS (its stream's
    /// waiting messages are lost). Refused while the node is live or still owns slots.
    ForgetNode {
        /// The node's name (`--node` of `berth`).
        #[arg(long)]
        node: String,
        /// The slot map file the nodes read: it must give the node no slot.
        #[arg(long)]
        slot_map: PathBuf,
        /// The NATS server URL, or several separated by commas (`--nats` of `berth`).
        #[arg(long)]
        nats: String,
    },
}

/// Runs `berth cluster` with `args` (what follows `cluster` on the command line).
pub fn main(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = ClusterArgs::parse_from(std::iter::once("berth cluster".to_string()).chain(args));
    print!("{}", run(&args.command)?);
    Ok(())
}

fn read_map(path: &PathBuf) -> anyhow::Result<SlotMap> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SlotMap::parse(&text).with_context(|| format!("slot map {}", path.display()))
}

/// What the command prints.
fn run(command: &Command) -> anyhow::Result<String> {
    Ok(match command {
        Command::HaproxyMap { slot_map } => read_map(slot_map)?.haproxy_map(),
        Command::HaproxyConfig {
            slot_map,
            bind,
            map,
            stats_socket,
        } => {
            let slots = read_map(slot_map)?;
            haproxy::config(
                &slots,
                &haproxy::Layout {
                    bind,
                    map,
                    stats_socket,
                },
            )
        }
        Command::ForgetNode {
            node,
            slot_map,
            nats,
        } => {
            let slots = read_map(slot_map)?.slots_of(node);
            if slots > 0 {
                anyhow::bail!(
                    "node {node} owns {slots} slots in {}: move them to other nodes first",
                    slot_map.display()
                );
            }
            let servers: Vec<String> = nats.split(',').map(|u| u.trim().to_string()).collect();
            let gone = crate::nats::forget_node(&servers, node).map_err(anyhow::Error::msg)?;
            let stream = match gone.stream_messages {
                Some(n) => format!("its stream ({n} messages waiting in it)"),
                None => "no stream".to_string(),
            };
            format!(
                "node {node} forgotten: {} interest entries, {}, {stream}\n",
                gone.interest_entries,
                if gone.heartbeat {
                    "its heartbeat"
                } else {
                    "no heartbeat"
                },
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_map_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots.map");
        std::fs::write(&path, "node n1 127.0.0.2:1883\n0-4095 n2 1\n").unwrap();
        let err = run(&Command::HaproxyMap {
            slot_map: path.clone(),
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("slots.map") && text.contains("line 2"),
            "{text}"
        );
        std::fs::write(&path, "node n1 127.0.0.2:1883\n0-4095 n1 1\n").unwrap();
        let map = run(&Command::HaproxyMap { slot_map: path }).unwrap();
        assert_eq!(map.lines().count(), 4096);
        assert!(map.starts_with("0 n1\n1 n1\n"));
    }
}
