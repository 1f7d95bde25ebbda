//! Slot homes: which node of a cluster a client id lives on.
//!
//! `slot = CRC-32(client id bytes) % 4096`, with the CRC-32 of Ethernet, gzip and PNG
//! (IEEE 802.3, reflected, init and final xor `0xFFFFFFFF`): the one HAProxy's `crc32`
//! converter computes, so that `req.payload(0,0),mqtt_field_value(connect,client_identifier),
//! crc32,mod(4096)` in HAProxy names the same slot as berth does. A [`SlotMap`] gives each
//! slot its owner node and the epoch of that ownership, and each node the address clients
//! are told to use for it. Within the home node, `FNV-1a % cores` picks the core as on a
//! single node (`ownership`); the two hashes are independent, so a node's slots do not
//! skew its cores.
//!
//! The map is a value: where it is read from (a file, or the NATS KV bucket `berth_slots`
//! with compare-and-swap on its revision: `crate::nats`) is not its concern;
//! [`SlotMap::may_become`] says which map may follow which (epochs only grow).
//! [`SlotMap::parse`] and [`SlotMap::render`] are its text form:
//!
//! ```text
//! # comments and blank lines are ignored
//! node n1 127.0.0.2:1883        # node NAME ADDRESS: every node a slot line names
//! node n2 127.0.0.3:1883
//! 0-2047 n1 1                   # SLOT NODE EPOCH, or FIRST-LAST NODE EPOCH
//! 2048 n2 1
//! 2049-4095 n2 1
//! ```
//!
//! **Invariants:** a map names an owner for every one of the 4,096 slots, exactly once;
//! every owner is a declared node with an address; pure (no I/O, no clock).

use std::collections::HashMap;
use std::fmt::Write as _;

/// How many slots there are. Changing it moves every client id: it is part of the
/// cluster's contract with its load balancers (`mod(4096)` in the HAProxy rule).
pub const SLOTS: u16 = 4096;

/// A slot, `0..SLOTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u16);

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The slot of a client id.
pub fn slot_of(client_id: &[u8]) -> Slot {
    Slot((crc32fast::hash(client_id) % u32::from(SLOTS)) as u16)
}

/// A slot map that does not read, or is not whole: the line (from 1, 0 for the map as a
/// whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if *.line > 0 { format!("line {}: ", .line) } else { String::new() })]
pub struct SlotMapError {
    pub line: usize,
    pub message: String,
}

/// A node of the cluster: its name (HAProxy's server name too) and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `host:port`, as clients are told to use it (MQTT 5 Server Reference).
    pub address: String,
}

/// Who owns a slot, and since which epoch (epochs only grow as a slot moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    /// Index into `nodes`.
    node: u16,
    epoch: u64,
}

/// Slot -> (node, epoch), node -> address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    nodes: Vec<Node>,
    /// `SLOTS` entries.
    owners: Box<[Owner]>,
}

/// Whether `name` may name a node: what an HAProxy server name allows, without the `:`
/// (it would make `set map` lines ambiguous), 1 to 64 characters.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `address` is `host:port` (a name, an IPv4 address or a bracketed IPv6 one, and
/// a port 1..=65535).
pub fn valid_address(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

impl SlotMap {
    /// Reads the text form (see the module's doc).
    pub fn parse(text: &str) -> Result<SlotMap, SlotMapError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<String, u16> = HashMap::new();
        // Slot lines name nodes that may be declared after them: resolved at the end.
        let mut assigned: Vec<Option<(String, u64, usize)>> = vec![None; usize::from(SLOTS)];
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |message: String| SlotMapError { line, message };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            if words[0] == "node" {
                let [_, name, address] = words[..] else {
                    return Err(bad("expected `node NAME ADDRESS`".into()));
                };
                if !valid_node_name(name) {
                    return Err(bad(format!(
                        "node name `{name}`: 1 to 64 letters, digits, `-`, `_` or `.`"
                    )));
                }
                if !valid_address(address) {
                    return Err(bad(format!("node {name}: `{address}` is not HOST:PORT")));
                }
                if index.contains_key(name) {
                    return Err(bad(format!("node {name} is declared twice")));
                }
                let at =
                    u16::try_from(nodes.len()).map_err(|_| bad("more than 65535 nodes".into()))?;
                index.insert(name.to_string(), at);
                nodes.push(Node {
                    name: name.to_string(),
                    address: address.to_string(),
                });
                continue;
            }
            let [range, name, epoch] = words[..] else {
                return Err(bad(
                    "expected `SLOT NODE EPOCH`, `FIRST-LAST NODE EPOCH` or `node NAME ADDRESS`"
                        .into(),
                ));
            };
            let (first, last) = parse_range(range).map_err(bad)?;
            let epoch: u64 = epoch
                .parse()
                .map_err(|_| bad(format!("epoch `{epoch}` is not a whole number")))?;
            for slot in first..=last {
                let entry = &mut assigned[usize::from(slot)];
                if let Some((_, _, before)) = entry {
                    return Err(bad(format!(
                        "slot {slot} is assigned on line {before} already"
                    )));
                }
                *entry = Some((name.to_string(), epoch, line));
            }
        }
        let mut owners = Vec::with_capacity(usize::from(SLOTS));
        let mut missing = Vec::new();
        for (slot, entry) in assigned.into_iter().enumerate() {
            match entry {
                Some((name, epoch, line)) => {
                    let node = *index.get(&name).ok_or_else(|| SlotMapError {
                        line,
                        message: format!("node {name} has no `node {name} ADDRESS` line"),
                    })?;
                    owners.push(Owner { node, epoch });
                }
                None => {
                    missing.push(slot as u16);
                    owners.push(Owner { node: 0, epoch: 0 });
                }
            }
        }
        if !missing.is_empty() {
            return Err(SlotMapError {
                line: 0,
                message: format!("slots without an owner: {}", ranges(&missing)),
            });
        }
        Ok(SlotMap {
            nodes,
            owners: owners.into_boxed_slice(),
        })
    }

    /// A map that gives the slots to `nodes` in equal runs, in their order, at epoch 1.
    pub fn even(nodes: Vec<Node>) -> SlotMap {
        assert!(!nodes.is_empty(), "a map needs a node");
        let n = nodes.len();
        let owners = (0..usize::from(SLOTS))
            .map(|slot| Owner {
                node: (slot * n / usize::from(SLOTS)) as u16,
                epoch: 1,
            })
            .collect();
        SlotMap { nodes, owners }
    }

    /// The owner of `slot` and the epoch of its ownership.
    pub fn owner(&self, slot: Slot) -> (&Node, u64) {
        let owner = self.owners[usize::from(slot.0 % SLOTS)];
        (&self.nodes[usize::from(owner.node)], owner.epoch)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// How many slots `name` owns.
    pub fn slots_of(&self, name: &str) -> usize {
        let Some(at) = self.nodes.iter().position(|n| n.name == name) else {
            return 0;
        };
        self.owners
            .iter()
            .filter(|o| usize::from(o.node) == at)
            .count()
    }

    /// Gives `slot` to `node` at the next epoch (what a move's compare-and-swap will
    /// write). `None` when no such node is declared.
    pub fn reassign(&self, slot: Slot, node: &str) -> Option<SlotMap> {
        let at = self.nodes.iter().position(|n| n.name == node)? as u16;
        let mut next = self.clone();
        let owner = &mut next.owners[usize::from(slot.0 % SLOTS)];
        *owner = Owner {
            node: at,
            epoch: owner.epoch + 1,
        };
        Some(next)
    }

    /// Gives the slots `first..=last` to `node`, each at its next epoch (a slot `node`
    /// owns already keeps its epoch). `address` declares `node` when the map does not
    /// name it yet. `Err`: an unknown node without an address, or a bad one.
    pub fn assign(
        &self,
        first: Slot,
        last: Slot,
        node: &str,
        address: Option<&str>,
    ) -> Result<SlotMap, String> {
        let mut next = self.clone();
        let at = match next.nodes.iter().position(|n| n.name == node) {
            Some(at) => at,
            None => {
                let address = address
                    .ok_or_else(|| format!("node {node} is not in the map: give its address"))?;
                if !valid_node_name(node) {
                    return Err(format!(
                        "node name `{node}`: 1 to 64 letters, digits, `-`, `_` or `.`"
                    ));
                }
                if !valid_address(address) {
                    return Err(format!("node {node}: `{address}` is not HOST:PORT"));
                }
                next.nodes.push(Node {
                    name: node.to_string(),
                    address: address.to_string(),
                });
                next.nodes.len() - 1
            }
        };
        let at = u16::try_from(at).map_err(|_| "more than 65535 nodes".to_string())?;
        if first > last || last.0 >= SLOTS {
            return Err(format!(
                "slot range {first}-{last} is not in 0..={}",
                SLOTS - 1
            ));
        }
        for slot in first.0..=last.0 {
            let owner = &mut next.owners[usize::from(slot)];
            if owner.node != at {
                *owner = Owner {
                    node: at,
                    epoch: owner.epoch + 1,
                };
            }
        }
        Ok(next)
    }

    /// Whether `next` may follow this map in the cluster's bucket: no slot's epoch shrinks,
    /// a slot that changes owner does so at a higher epoch, and no node changes address
    /// (clients and load balancers hold it). `Err` names the first slot or node that
    /// breaks it.
    pub fn may_become(&self, next: &SlotMap) -> Result<(), String> {
        for node in &self.nodes {
            if let Some(after) = next.node(&node.name) {
                if after.address != node.address {
                    return Err(format!(
                        "node {} would move from {} to {}",
                        node.name, node.address, after.address
                    ));
                }
            }
        }
        for slot in 0..SLOTS {
            let ((before, was), (after, is)) = (self.owner(Slot(slot)), next.owner(Slot(slot)));
            if is < was || (before.name != after.name && is == was) {
                return Err(format!(
                    "slot {slot}: {} at epoch {was} would become {} at epoch {is} \
                     (epochs only grow, and grow when the owner changes)",
                    before.name, after.name
                ));
            }
        }
        Ok(())
    }

    /// The text form: node lines, then one line per run of slots with the same owner and
    /// epoch. `parse(render(m)) == m`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(out, "node {} {}", node.name, node.address);
        }
        let mut start = 0usize;
        for slot in 1..=self.owners.len() {
            if slot < self.owners.len() && self.owners[slot] == self.owners[start] {
                continue;
            }
            let owner = self.owners[start];
            let name = &self.nodes[usize::from(owner.node)].name;
            if slot - 1 == start {
                let _ = writeln!(out, "{start} {name} {}", owner.epoch);
            } else {
                let _ = writeln!(out, "{start}-{} {name} {}", slot - 1, owner.epoch);
            }
            start = slot;
        }
        out
    }

    /// HAProxy's map file: one `<slot> <server name>` line per slot, for
    /// `map(PATH)` after `crc32,mod(4096)`.
    pub fn haproxy_map(&self) -> String {
        let mut out = String::with_capacity(usize::from(SLOTS) * 8);
        for (slot, owner) in self.owners.iter().enumerate() {
            let _ = writeln!(out, "{slot} {}", self.nodes[usize::from(owner.node)].name);
        }
        out
    }
}

/// `N` or `FIRST-LAST`, each below [`SLOTS`].
pub fn parse_range(range: &str) -> Result<(u16, u16), String> {
    let slot = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|&n| n < SLOTS)
            .ok_or_else(|| format!("slot `{s}` is not in 0..={}", SLOTS - 1))
    };
    match range.split_once('-') {
        Some((a, b)) => {
            let (first, last) = (slot(a)?, slot(b)?);
            if first > last {
                return Err(format!("slot range `{range}` runs backwards"));
            }
            Ok((first, last))
        }
        None => slot(range).map(|s| (s, s)),
    }
}

/// `[1, 2, 3, 7]` as `1-3, 7`, at most a few runs.
fn ranges(slots: &[u16]) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => runs.push((s, s)),
        }
    }
    let mut text: Vec<String> = runs
        .iter()
        .take(8)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if runs.len() > 8 {
        text.push(format!("and {} more runs", runs.len() - 8));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_the_ieee_one() {
        // The check value of CRC-32/ISO-HDLC (the one of Ethernet, gzip, PNG).
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b""), 0);
        assert_eq!(
            crc32fast::hash(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(slot_of(b"123456789"), Slot((0xCBF4_3926u32 % 4096) as u16));
        assert_eq!(slot_of(b"123456789"), Slot(0x926));
        assert_eq!(slot_of(b""), Slot(0));
    }

    fn three() -> &'static str {
        "# a map\n\
         node n1 127.0.0.2:1883\n\
         node n2 127.0.0.3:1883   # the second\n\
         node n3 host-3.example:1884\n\
         0-1364 n1 1\n\
         1365-2730 n2 1\n\
         2731 n3 4\n\
         2732-4095 n3 2\n"
    }

    #[test]
    fn a_map_reads_and_renders_back() {
        let map = SlotMap::parse(three()).unwrap();
        assert_eq!(map.nodes().len(), 3);
        assert_eq!(map.owner(Slot(0)).0.name, "n1");
        assert_eq!(map.owner(Slot(1365)).0.address, "127.0.0.3:1883");
        assert_eq!(map.owner(Slot(2731)), (map.node("n3").unwrap(), 4));
        assert_eq!(map.owner(Slot(4095)).1, 2);
        assert_eq!(map.slots_of("n1"), 1365);
        assert_eq!(map.slots_of("n4"), 0);
        assert_eq!(SlotMap::parse(&map.render()).unwrap(), map);
        let lines: Vec<_> = map.haproxy_map().lines().map(String::from).collect();
        assert_eq!(lines.len(), 4096);
        assert_eq!(lines[0], "0 n1");
        assert_eq!(lines[4095], "4095 n3");
    }

    #[test]
    fn a_reassigned_slot_moves_at_the_next_epoch() {
        let map = SlotMap::parse(three()).unwrap();
        let moved = map.reassign(Slot(17), "n3").unwrap();
        assert_eq!(moved.owner(Slot(17)), (moved.node("n3").unwrap(), 2));
        assert_eq!(moved.slots_of("n1"), 1364);
        assert!(map.reassign(Slot(17), "n9").is_none());
        assert_eq!(SlotMap::parse(&moved.render()).unwrap(), moved);
    }

    #[test]
    fn a_range_is_assigned_at_the_next_epochs_and_only_forward() {
        let map = SlotMap::parse(three()).unwrap();
        let moved = map.assign(Slot(1360), Slot(1369), "n3", None).unwrap();
        assert_eq!(moved.owner(Slot(1360)), (moved.node("n3").unwrap(), 2));
        assert_eq!(moved.owner(Slot(1370)).0.name, "n2");
        assert_eq!(moved.slots_of("n3") - map.slots_of("n3"), 10);
        map.may_become(&moved).unwrap();
        // Back is not forward: the epochs would shrink.
        assert!(moved.may_become(&map).unwrap_err().contains("slot 1360"));
        // A new node needs its address, and a good one.
        assert!(map.assign(Slot(0), Slot(0), "n4", None).is_err());
        assert!(map.assign(Slot(0), Slot(0), "n4", Some("nowhere")).is_err());
        let joined = map
            .assign(Slot(0), Slot(9), "n4", Some("127.0.0.5:1883"))
            .unwrap();
        assert_eq!(joined.slots_of("n4"), 10);
        map.may_become(&joined).unwrap();
        assert_eq!(SlotMap::parse(&joined.render()).unwrap(), joined);
        // Same owner, same epoch: nothing to raise.
        let again = joined.assign(Slot(0), Slot(9), "n4", None).unwrap();
        assert_eq!(again, joined);
        let readdressed = SlotMap::parse(&three().replace("host-3.example:1884", "h:1")).unwrap();
        assert!(map
            .may_become(&readdressed)
            .unwrap_err()
            .contains("node n3"));
    }

    #[test]
    fn an_even_map_splits_the_slots() {
        let nodes = (1..=3)
            .map(|i| Node {
                name: format!("n{i}"),
                address: format!("127.0.0.{}:1883", i + 1),
            })
            .collect();
        let map = SlotMap::even(nodes);
        let counts: Vec<_> = ["n1", "n2", "n3"].iter().map(|n| map.slots_of(n)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 4096);
        assert!(counts.iter().all(|&c| c == 1365 || c == 1366), "{counts:?}");
        assert_eq!(SlotMap::parse(&map.render()).unwrap(), map);
    }

    #[test]
    fn a_map_that_is_not_whole_or_wrong_says_where() {
        let err = |text: &str| SlotMap::parse(text).unwrap_err().to_string();
        let nodes = "node n1 127.0.0.2:1883\n";
        assert_eq!(
            err(&format!("{nodes}0-4094 n1 1\n")),
            "slots without an owner: 4095"
        );
        assert_eq!(
            err(&format!("{nodes}0-10 n1 1\n12 n1 1\n14-4095 n1 1\n")),
            "slots without an owner: 11, 13"
        );
        assert!(err(&format!("{nodes}0-4095 n1 1\n5 n1 1\n"))
            .starts_with("line 3: slot 5 is assigned on line 2"));
        assert!(err("0-4095 n2 1\n").contains("line 1: node n2 has no `node n2 ADDRESS`"));
        assert!(err(&format!("{nodes}0-4096 n1 1\n")).contains("line 2: slot `4096`"));
        assert!(err(&format!("{nodes}9-3 n1 1\n")).contains("runs backwards"));
        assert!(err(&format!("{nodes}0-4095 n1 x\n")).contains("epoch `x`"));
        assert!(err("node n1 nowhere\n").contains("line 1: node n1: `nowhere` is not HOST:PORT"));
        assert!(err("node n:1 a:1\n").contains("node name `n:1`"));
        assert!(err(&format!("{nodes}{nodes}")).contains("line 2: node n1 is declared twice"));
        assert!(err("0 n1\n").contains("line 1: expected"));
    }

    #[test]
    fn addresses_and_names() {
        for good in ["127.0.0.2:1883", "[::1]:1883", "broker-1.example:8883"] {
            assert!(valid_address(good), "{good}");
        }
        for bad in ["127.0.0.2", ":1883", "h:0", "h:70000", "[x]:1", "a b:1"] {
            assert!(!valid_address(bad), "{bad}");
        }
        assert!(valid_node_name("n1.eu-west_2"));
        assert!(
            !valid_node_name("") && !valid_node_name("a/b") && !valid_node_name(&"a".repeat(65))
        );
    }
}
