//! The HAProxy 2.6 configuration that routes each MQTT CONNECT to its client id's home
//! node: the frontend holds the connection until a whole, valid MQTT packet is there
//! (`tcp-request inspect-delay`, `mqtt_is_valid`), and the backend's `use-server` names
//! the server from the slot (through a variable: see the comment in [`config`]), computed
//! as berth computes it (`crc32,mod(4096)`, see
//! [`slots`](super::slots)), looked up in the map file that
//! [`SlotMap::haproxy_map`](super::SlotMap::haproxy_map) writes.
//!
//! Routing is stateless: several HAProxies with the same map agree without `peers`. A
//! rule naming a server that is down is skipped by HAProxy, and so is one for an empty
//! client id (the client gets an id from the node `leastconn` picks, one whose slot that
//! node owns). The stats socket takes `set map PATH SLOT NODE` when a slot moves.
//! Pure: it only writes text.

use std::fmt::Write as _;

use super::{Slot, SlotMap};

/// Where the generated configuration puts things.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    /// The frontend's `bind` address (`host:port`).
    pub bind: &'a str,
    /// The map file's path, as HAProxy will read it (and `set map` names it).
    pub map: &'a str,
    /// The runtime API's unix socket.
    pub stats_socket: &'a str,
}

/// The client id's slot, then its server, as one HAProxy sample expression.
pub fn server_expression(map_path: &str) -> String {
    format!(
        "req.payload(0,0),mqtt_field_value(connect,client_identifier),crc32,mod({}),map({map_path})",
        super::SLOTS
    )
}

/// The runtime API commands that make HAProxy's map at `map_path` route the slots
/// `first..=last` as `map` does: one `set map` per slot, in batches of `;`-separated commands
/// that each fit one line of the runtime API (its buffer is 16 KB by default).
pub fn set_map_commands(map: &SlotMap, map_path: &str, first: Slot, last: Slot) -> Vec<String> {
    const BATCH: usize = 100;
    let commands: Vec<String> = (first.0..=last.0)
        .map(|slot| {
            let (node, _) = map.owner(Slot(slot));
            format!("set map {map_path} {slot} {}", node.name)
        })
        .collect();
    commands
        .chunks(BATCH)
        .map(|batch| batch.join(";"))
        .collect()
}

/// A whole HAProxy configuration for `map`'s nodes.
pub fn config(map: &SlotMap, layout: &Layout<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HAProxy 2.6 in front of a berth cluster (`berth cluster haproxy-config`).\n\
         # Each CONNECT goes to the node that owns its client id's slot:\n\
         # crc32(client id) % 4096, looked up in {map_path}\n\
         # (`berth cluster haproxy-map` writes it; `set map` on the stats socket moves a slot).\n\
         global\n    \
             stats socket {socket} mode 600 level admin\n    \
             stats timeout 30s\n\
         \n\
         defaults\n    \
             mode tcp\n    \
             timeout connect 5s\n    \
             # Above 1.5 times the longest MQTT keep alive the clients use (the broker's\n    \
             # own limit): HAProxy closes a connection idle for longer.\n    \
             timeout client 15m\n    \
             timeout server 15m\n\
         \n\
         frontend mqtt\n    \
             bind {bind}\n    \
             # Wait (up to 5 s) for the whole CONNECT, then only MQTT goes on.\n    \
             tcp-request inspect-delay 5s\n    \
             tcp-request content reject unless {{ req.payload(0,0),mqtt_is_valid }}\n    \
             default_backend berth\n\
         \n\
         backend berth\n    \
             # Empty client ids (the node assigns one it owns) and down homes.\n    \
             balance leastconn\n    \
             # The home is computed into a variable first: HAProxy 2.6.12 evaluates\n    \
             # req.payload inside use-server's own log-format to nothing (measured).\n    \
             tcp-request content set-var(txn.berth_home) {expression} unless {{ req.payload(0,0),mqtt_field_value(connect,client_identifier) -m len 0 }}\n    \
             use-server %[var(txn.berth_home)] if {{ var(txn.berth_home) -m found }}",
        map_path = layout.map,
        socket = layout.stats_socket,
        bind = layout.bind,
        expression = server_expression(layout.map),
    );
    for node in map.nodes() {
        let _ = writeln!(out, "    server {} {} check", node.name, node.address);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Node;

    #[test]
    fn a_moved_range_is_set_in_batches_of_one_line_each() {
        let nodes = ["n1", "n2"].map(|name| Node {
            name: name.into(),
            address: "127.0.0.2:1883".into(),
        });
        let map = SlotMap::even(nodes.to_vec())
            .assign(Slot(10), Slot(260), "n2", None)
            .unwrap();
        let lines = set_map_commands(&map, "/m.map", Slot(10), Slot(260));
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("set map /m.map 10 n2;set map /m.map 11 n2;"));
        assert!(lines
            .iter()
            .all(|l| !l.contains('\n') && l.len() < 16 * 1024));
        assert_eq!(
            lines.iter().map(|l| l.split(';').count()).sum::<usize>(),
            251
        );
        assert!(lines[2].ends_with("set map /m.map 260 n2"));
    }

    #[test]
    fn one_server_per_node_and_the_rule_names_the_map() {
        let map = SlotMap::even(vec![
            Node {
                name: "n1".into(),
                address: "127.0.0.2:1883".into(),
            },
            Node {
                name: "n2".into(),
                address: "127.0.0.3:1883".into(),
            },
        ]);
        let text = config(
            &map,
            &Layout {
                bind: "127.0.0.1:1883",
                map: "/etc/haproxy/slots.map",
                stats_socket: "/run/haproxy/admin.sock",
            },
        );
        assert!(text.contains("    bind 127.0.0.1:1883\n"), "{text}");
        assert!(text.contains(
            "set-var(txn.berth_home) req.payload(0,0),mqtt_field_value(connect,client_identifier),crc32,mod(4096),map(/etc/haproxy/slots.map) unless"
        ));
        assert!(text.contains("use-server %[var(txn.berth_home)] if"));
        assert!(text.contains("    server n1 127.0.0.2:1883 check\n"));
        assert!(text.contains("    server n2 127.0.0.3:1883 check\n"));
        assert!(text.contains("stats socket /run/haproxy/admin.sock mode 600 level admin"));
    }
}
