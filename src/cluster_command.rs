//! `berth cluster`: what the load balancer in front of a berth cluster needs, written from
//! the slot map file the nodes read (`cluster::slots` describes its format).
//!
//! - `berth cluster haproxy-map --slot-map FILE` (or `--nats URL`: the bucket's map):
//!   HAProxy's map, `<slot> <server name>` per line, for `map(PATH)` after `crc32,mod(4096)`;
//! - `berth cluster haproxy-config --slot-map FILE --bind ADDR --map PATH
//!   [--stats-socket PATH]`: a whole HAProxy 2.6 configuration (`cluster::haproxy`);
//! - `berth cluster forget-node --node NAME --nats URLS [--slot-map FILE]`: removes what
//!   a node that never comes back left in NATS (`nats::forget_node`), refused while the
//!   bucket's slot map (or the file) gives it slots or its heartbeat is recent.
//! - `berth cluster slots --nats URL`: the slot map in force, from the cluster's bucket
//!   `berth_slots` (`nats::slots`), after a `# revision N` line;
//! - `berth cluster assign --nats URL --slots FIRST-LAST --node NAME [--address ADDR]
//!   [--revision N] [--haproxy-socket PATH... --haproxy-map PATH]`: gives the slots to the
//!   node at their next epochs, by compare-and-swap on revision N (or the one read now):
//!   refused when the map changed meanwhile; once the swap is in, each HAProxy named is told
//!   with `set map` for each slot over its runtime API. It moves
//!   no session (a session of a moved slot stays on its old node, unreachable through the
//!   map): for an empty slot range, a node that joins, or after the sessions are gone.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::cluster::{haproxy, slots, Slot, SlotMap};
use crate::nats;

#[derive(Debug, Parser)]
#[command(
    name = "berth cluster",
    about = "Write the HAProxy map and configuration for a berth cluster's slot map, read and change the slot map in NATS"
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
        #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
        slot_map: Option<PathBuf>,
        /// Or the cluster's NATS servers: the map in force, from the bucket `berth_slots`.
        #[arg(long)]
        nats: Option<String>,
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
        /// The slot map file the nodes read, where the cluster's bucket holds no map yet:
        /// neither may give the node a slot.
        #[arg(long)]
        slot_map: Option<PathBuf>,
        /// The NATS server URL, or several separated by commas (`--nats` of `berth`).
        #[arg(long)]
        nats: String,
    },
    /// Print the slot map in the cluster's NATS bucket, after a `# revision N` line.
    Slots {
        /// The NATS server URL, or several separated by commas (`--nats` of `berth`).
        #[arg(long)]
        nats: String,
    },
    /// Give a slot range to a node, by compare-and-swap on the map's revision; prints the
    /// new map as `slots` does.
    Assign {
        #[arg(long)]
        nats: String,
        /// `SLOT` or `FIRST-LAST`, in 0..=4095.
        #[arg(long)]
        slots: String,
        /// The node that is to own them.
        #[arg(long)]
        node: String,
        /// The node's `host:port`, when the map does not name it yet (a node that joins).
        #[arg(long)]
        address: Option<String>,
        /// The revision the change is based on (as `slots` printed it): refused when the
        /// map is no longer at it. Without it, the revision read now.
        #[arg(long)]
        revision: Option<u64>,
        /// An HAProxy runtime API socket to tell, once the swap is in (`set map` for each
        /// slot); repeat it for each HAProxy. Needs --haproxy-map.
        #[arg(long, requires = "haproxy_map")]
        haproxy_socket: Vec<PathBuf>,
        /// The map file's path as HAProxy names it (`map(PATH)` in its configuration).
        #[arg(long, requires = "haproxy_socket")]
        haproxy_map: Option<String>,
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
        Command::HaproxyMap { slot_map, nats } => match (slot_map, nats) {
            (Some(path), _) => read_map(path)?.haproxy_map(),
            (None, Some(nats)) => nats::slots::current(&servers(nats)?)
                .map_err(anyhow::Error::msg)?
                .0
                .haproxy_map(),
            (None, None) => anyhow::bail!("give --slot-map or --nats"),
        },
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
            let servers: Vec<String> = nats.split(',').map(|u| u.trim().to_string()).collect();
            // The map in force is the bucket's once a node seeded it (`nats::slots`); the
            // file counts too when given, as a node without NATS reads it.
            let in_bucket = nats::slots::current(&servers);
            if let Ok((map, revision)) = &in_bucket {
                let slots = map.slots_of(node);
                if slots > 0 {
                    anyhow::bail!(
                        "node {node} owns {slots} slots in the cluster's slot map (revision \
                         {revision}): move them to other nodes first (berth cluster assign)"
                    );
                }
            }
            match (slot_map, &in_bucket) {
                (Some(slot_map), _) => {
                    let slots = read_map(slot_map)?.slots_of(node);
                    if slots > 0 {
                        anyhow::bail!(
                            "node {node} owns {slots} slots in {}: move them to other nodes first",
                            slot_map.display()
                        );
                    }
                }
                (None, Err(error)) => anyhow::bail!(
                    "no slot map to check that node {node} owns no slot ({error}): give --slot-map"
                ),
                (None, Ok(_)) => {}
            }
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
        Command::Slots { nats } => {
            nats::slots::show(&servers(nats)?).map_err(anyhow::Error::msg)?
        }
        Command::Assign {
            nats,
            slots,
            node,
            address,
            revision,
            haproxy_socket,
            haproxy_map,
        } => {
            let (first, last) =
                slots::parse_range(slots).map_err(|e| anyhow::anyhow!("--slots: {e}"))?;
            let ask = nats::slots::Assign {
                first: Slot(first),
                last: Slot(last),
                node,
                address: address.as_deref(),
                revision: *revision,
            };
            if let Some(path) = haproxy_map {
                if path.is_empty() || path.contains(|c: char| c.is_whitespace() || c == ';') {
                    anyhow::bail!("--haproxy-map `{path}`: a path without spaces or `;`");
                }
            }
            let (map, revision) =
                nats::slots::assign(&servers(nats)?, &ask).map_err(anyhow::Error::msg)?;
            if let Some(path) = haproxy_map {
                let commands = haproxy::set_map_commands(&map, path, ask.first, ask.last);
                for socket in haproxy_socket {
                    tell_haproxy(socket, &commands).with_context(|| {
                        format!(
                            "the slot map is at revision {revision}, but HAProxy at {} was not \
                             told: run this again with --revision {revision}, or `set map` by hand",
                            socket.display()
                        )
                    })?;
                }
            }
            format!("# revision {revision}\n{}", map.render())
        }
    })
}

/// Sends each line to HAProxy's runtime API (one connection per line, as the API closes
/// it after answering); `set map` answers nothing when it succeeds.
fn tell_haproxy(socket: &PathBuf, lines: &[String]) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    for line in lines {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        stream.write_all(line.as_bytes())?;
        stream.write_all(b"\n")?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .with_context(|| format!("no answer from {}", socket.display()))?;
        if !answer.trim().is_empty() {
            anyhow::bail!("HAProxy answered: {}", answer.trim());
        }
    }
    Ok(())
}

fn servers(nats: &str) -> anyhow::Result<Vec<String>> {
    crate::config::parse_nats(nats).map_err(|e| anyhow::anyhow!("--nats: {e}"))
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
            slot_map: Some(path.clone()),
            nats: None,
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("slots.map") && text.contains("line 2"),
            "{text}"
        );
        std::fs::write(&path, "node n1 127.0.0.2:1883\n0-4095 n1 1\n").unwrap();
        let map = run(&Command::HaproxyMap {
            slot_map: Some(path),
            nats: None,
        })
        .unwrap();
        assert_eq!(map.lines().count(), 4096);
        assert!(map.starts_with("0 n1\n1 n1\n"));
    }
}
