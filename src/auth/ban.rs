//! Banned clients (`ban_file`): who may not connect at all, by client id, username or
//! source network, answered with CONNACK 0x8A Banned (3.1.1: return code 5).
//!
//! The file holds one rule a line, `#` starting a comment line:
//!
//! ```text
//! clientid  sensor-17
//! username  mallory
//! network   192.0.2.0/24
//! network   2001:db8::/32
//! network   198.51.100.7        # one address: /32 (or /128)
//! ```
//!
//! Client ids and usernames match exactly (EMQX's plain rules; its regex rules are not
//! here). An IPv4 peer seen as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) matches the
//! IPv4 rules. The list is immutable: a reload reads a new one and swaps it whole, so a
//! file that no longer reads leaves the old rules in force.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A ban file that could not be used, naming the file and, for a bad rule, its line.
#[derive(Debug, thiserror::Error)]
pub enum BanFileError {
    #[error("cannot read ban file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ban file {path} line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A source network: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (all its bits).
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|e| format!("`{text}` is not an address or CIDR network: {e}"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("`{text}`: prefix length is not in 0..={bits}"))?,
            None => bits,
        };
        Ok(Network { address, prefix })
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        let (net, peer, bits) = match (self.address, peer) {
            (IpAddr::V4(n), IpAddr::V4(p)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(p)), 32u32)
            }
            (IpAddr::V6(n), IpAddr::V6(p)) => (u128::from(n), u128::from(p), 128),
            _ => return false,
        };
        let prefix = u32::from(self.prefix);
        if prefix == 0 {
            return true;
        }
        let shift = bits - prefix;
        (net >> shift) == (peer >> shift)
    }
}

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`: match it as IPv4.
fn canonical(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The rules of one ban file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BanList {
    client_ids: HashSet<String>,
    usernames: HashSet<String>,
    networks: Vec<Network>,
}

/// Which rule banned a client, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Banned {
    ClientId,
    Username,
    Network,
}

impl Banned {
    pub fn reason(self) -> &'static str {
        match self {
            Banned::ClientId => "the client id is banned",
            Banned::Username => "the username is banned",
            Banned::Network => "the source address is banned",
        }
    }
}

impl BanList {
    pub fn load(path: &Path) -> Result<BanList, BanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| BanFileError::Read {
            path: path.into(),
            source,
        })?;
        BanList::parse(&text).map_err(|(line, message)| BanFileError::Line {
            path: path.into(),
            line,
            message,
        })
    }

    /// Parses a ban file's text; an error gives the (1-based) line and what is wrong.
    pub fn parse(text: &str) -> Result<BanList, (usize, String)> {
        let mut list = BanList::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| (index + 1, message);
            let (kind, value) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .ok_or_else(|| {
                    bad(format!(
                        "`{line}`: a rule is `clientid|username|network VALUE`"
                    ))
                })?;
            // A trailing comment after a network (ids and usernames may hold `#`).
            match kind {
                "clientid" => {
                    list.client_ids.insert(value.to_string());
                }
                "username" => {
                    list.usernames.insert(value.to_string());
                }
                "network" => {
                    let value = value.split('#').next().unwrap_or("").trim();
                    list.networks.push(Network::parse(value).map_err(bad)?);
                }
                other => {
                    return Err(bad(format!(
                        "unknown rule `{other}` (clientid, username or network)"
                    )))
                }
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.client_ids.is_empty() && self.usernames.is_empty() && self.networks.is_empty()
    }

    /// Whether a client with this id, username and source address is banned, and by what.
    pub fn check(&self, client_id: &str, username: Option<&str>, peer: IpAddr) -> Option<Banned> {
        if !client_id.is_empty() && self.client_ids.contains(client_id) {
            return Some(Banned::ClientId);
        }
        if username.is_some_and(|u| self.usernames.contains(u)) {
            return Some(Banned::Username);
        }
        self.networks
            .iter()
            .any(|n| n.contains(peer))
            .then_some(Banned::Network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_kind_of_rule_bans_what_it_names() {
        let list = BanList::parse(
            "# bans\n\nclientid  bad-device\nusername mallory\nnetwork 192.0.2.0/24\n\
             network 2001:db8::/32 # lab\nnetwork 198.51.100.7\n",
        )
        .unwrap();
        let here = ip("203.0.113.1");
        assert_eq!(list.check("bad-device", None, here), Some(Banned::ClientId));
        assert_eq!(list.check("bad-device2", None, here), None);
        assert_eq!(
            list.check("c", Some("mallory"), here),
            Some(Banned::Username)
        );
        assert_eq!(list.check("c", Some("alice"), here), None);
        assert_eq!(
            list.check("c", None, ip("192.0.2.200")),
            Some(Banned::Network)
        );
        assert_eq!(list.check("c", None, ip("192.0.3.1")), None);
        assert_eq!(
            list.check("c", None, ip("2001:db8:1::5")),
            Some(Banned::Network)
        );
        assert_eq!(list.check("c", None, ip("2001:db9::5")), None);
        assert_eq!(
            list.check("c", None, ip("198.51.100.7")),
            Some(Banned::Network)
        );
        assert_eq!(list.check("c", None, ip("198.51.100.8")), None);
        // An IPv4 client on a dual-stack listener.
        assert_eq!(
            list.check("c", None, ip("::ffff:192.0.2.9")),
            Some(Banned::Network)
        );
    }

    #[test]
    fn prefix_edges() {
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("255.1.2.3")));
        assert!(!all.contains(ip("::1")), "an IPv4 rule never matches IPv6");
        let one = Network::parse("10.0.0.1/32").unwrap();
        assert!(one.contains(ip("10.0.0.1")) && !one.contains(ip("10.0.0.0")));
        let v6 = Network::parse("::/0").unwrap();
        assert!(v6.contains(ip("2001:db8::1")));
        let odd = Network::parse("10.0.0.128/25").unwrap();
        assert!(odd.contains(ip("10.0.0.255")) && !odd.contains(ip("10.0.0.127")));
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, says) in [
            ("clientid a\nnetwork 10.0.0.0/33\n", 2, "prefix length"),
            ("network 10.0.0.300\n", 1, "not an address"),
            ("# c\nuser bob\n", 2, "unknown rule `user`"),
            ("clientid\n", 1, "a rule is"),
            ("network ::1/129\n", 1, "0..=128"),
        ] {
            let (at, message) = BanList::parse(text).unwrap_err();
            assert_eq!(at, line, "{text}");
            assert!(message.contains(says), "{message}");
        }
        assert!(BanList::parse("").unwrap().is_empty());
    }
}
