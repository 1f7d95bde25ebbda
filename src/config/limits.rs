//! The abuse limits: connections, connection rate, publish rate, topic depth, client-id
//! length, bans and flapping detection. Their flags ([`LimitsArgs`], flattened into
//! [`Args`](super::Args)), their file keys ([`LimitsFile`]), their defaults and checks.
//!
//! Kept apart from the other settings so that each limit is one place to read: what it
//! bounds, its unit, what "no limit" is, and its Mosquitto/EMQX counterpart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{BanList, FlappingPolicy};

/// The limits in force.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections the whole broker holds at once; `None`: no limit.
    pub max_connections: Option<usize>,
    /// New connections a second on the listener, all cores together; 0: no limit.
    pub max_connection_rate: u32,
    /// PUBLISH packets a second one client may send; 0: no limit.
    pub max_publish_rate: u32,
    /// Levels a topic name or filter may have.
    pub max_topic_levels: usize,
    /// Bytes a client id may have.
    pub max_clientid_len: usize,
    pub ban_file: Option<PathBuf>,
    /// The ban file's rules as read at start (and at each reload); empty without a file.
    pub bans: Arc<BanList>,
    /// `None` while flapping detection is off (`flapping_max_disconnects` 0).
    pub flapping: Option<FlappingPolicy>,
    pub flapping_max_disconnects: u32,
    pub flapping_window: Duration,
    pub flapping_ban: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_connection_rate: 0,
            max_publish_rate: 0,
            max_topic_levels: 128,
            max_clientid_len: 65535,
            ban_file: None,
            bans: Arc::new(BanList::default()),
            flapping: None,
            flapping_max_disconnects: 0,
            flapping_window: Duration::from_secs(60),
            flapping_ban: Duration::from_secs(300),
        }
    }
}

/// The limits' flags; each optional, so that one not given leaves the file in force.
#[derive(Debug, clap::Args, Default, Clone)]
pub struct LimitsArgs {
    /// Connections the whole broker holds at once (Mosquitto's `max_connections`); a
    /// connection over it is closed as soon as it is accepted. -1 or 0: no limit.
    #[arg(long)]
    pub max_connections: Option<i64>,
    /// New connections a second the listener accepts, all cores together (each core takes
    /// its share); one over it is closed at once, before anything is read. 0: no limit.
    #[arg(long)]
    pub max_connection_rate: Option<u32>,
    /// PUBLISH packets a second one client may send (a burst of one second's worth is
    /// allowed); one over it is dropped, answered with v5 PUBACK/PUBREC 0x97 Quota exceeded
    /// at QoS 1/2; a 3.1.1 client, which cannot be told, is disconnected. 0: no limit.
    #[arg(long)]
    pub max_publish_rate: Option<u32>,
    /// Levels a topic name or filter may have, 1..=65535: a deeper PUBLISH ends the
    /// connection (v5 DISCONNECT 0x90), a deeper filter is refused in SUBACK (v5 0x8F,
    /// 3.1.1 0x80).
    #[arg(long)]
    pub max_topic_levels: Option<usize>,
    /// Bytes a client id may have, 23..=65535; a longer one is refused with CONNACK v5
    /// 0x85 Client Identifier not valid, 3.1.1 return code 2.
    #[arg(long)]
    pub max_clientid_len: Option<usize>,
    /// Banned clients, one rule a line: `clientid ID`, `username NAME`, `network CIDR`
    /// (IPv4 or IPv6), `#` comments. They get CONNACK v5 0x8A Banned, 3.1.1 return code 5.
    /// Re-read on SIGHUP.
    #[arg(long)]
    pub ban_file: Option<PathBuf>,
    /// Flapping detection (EMQX's `flapping_detect`): this many disconnects of one client id
    /// within `flapping_window` ban it for `flapping_ban` (CONNACK v5 0x8A, 3.1.1 5).
    /// 0: off. EMQX's value when it is on is 15.
    #[arg(long)]
    pub flapping_max_disconnects: Option<u32>,
    /// Seconds over which flapping disconnects are counted.
    #[arg(long)]
    pub flapping_window: Option<u64>,
    /// Seconds a flapping client id stays banned.
    #[arg(long)]
    pub flapping_ban: Option<u64>,
}

/// The limits' keys in a config file, as `file::FileConfig` read them (serde cannot
/// flatten a struct into one that denies unknown fields, so they are listed there too).
#[derive(Debug, Default)]
pub(super) struct LimitsFile {
    pub max_connections: Option<i64>,
    pub max_connection_rate: Option<u32>,
    pub max_publish_rate: Option<u32>,
    pub max_topic_levels: Option<usize>,
    pub max_clientid_len: Option<usize>,
    pub ban_file: Option<PathBuf>,
    pub flapping_max_disconnects: Option<u32>,
    pub flapping_window: Option<u64>,
    pub flapping_ban: Option<u64>,
}

/// A bad value: the key and what is wrong with it.
type Bad = (&'static str, String);

fn connections(key: &'static str, v: i64) -> Result<Option<usize>, Bad> {
    match v {
        -1 | 0 => Ok(None),
        n if n > 0 => Ok(Some(n as usize)),
        n => Err((
            key,
            format!("{n} is not -1, 0 (no limit) or a positive number"),
        )),
    }
}

impl LimitsFile {
    /// Lays the keys the file holds over `limits`; `path` is the config file (a ban file
    /// is found relative to it).
    pub(super) fn apply(self, limits: &mut Limits, path: &Path) -> Result<(), Bad> {
        if let Some(v) = self.max_connections {
            limits.max_connections = connections("max_connections", v)?;
        }
        let l = limits;
        l.max_connection_rate = self.max_connection_rate.unwrap_or(l.max_connection_rate);
        l.max_publish_rate = self.max_publish_rate.unwrap_or(l.max_publish_rate);
        l.max_topic_levels = self.max_topic_levels.unwrap_or(l.max_topic_levels);
        l.max_clientid_len = self.max_clientid_len.unwrap_or(l.max_clientid_len);
        if let Some(v) = self.ban_file {
            l.ban_file = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        l.flapping_max_disconnects = self
            .flapping_max_disconnects
            .unwrap_or(l.flapping_max_disconnects);
        if let Some(v) = self.flapping_window {
            l.flapping_window = Duration::from_secs(v);
        }
        if let Some(v) = self.flapping_ban {
            l.flapping_ban = Duration::from_secs(v);
        }
        Ok(())
    }
}

impl LimitsArgs {
    pub(super) fn apply(&self, l: &mut Limits) -> Result<(), Bad> {
        if let Some(v) = self.max_connections {
            l.max_connections = connections("max_connections", v)?;
        }
        l.max_connection_rate = self.max_connection_rate.unwrap_or(l.max_connection_rate);
        l.max_publish_rate = self.max_publish_rate.unwrap_or(l.max_publish_rate);
        l.max_topic_levels = self.max_topic_levels.unwrap_or(l.max_topic_levels);
        l.max_clientid_len = self.max_clientid_len.unwrap_or(l.max_clientid_len);
        if let Some(v) = &self.ban_file {
            l.ban_file = Some(v.clone());
        }
        l.flapping_max_disconnects = self
            .flapping_max_disconnects
            .unwrap_or(l.flapping_max_disconnects);
        if let Some(v) = self.flapping_window {
            l.flapping_window = Duration::from_secs(v);
        }
        if let Some(v) = self.flapping_ban {
            l.flapping_ban = Duration::from_secs(v);
        }
        Ok(())
    }

    /// Whether the flag for `key` was given (so that an error names the flag).
    pub(super) fn given(&self, key: &str) -> bool {
        match key {
            "max_connections" => self.max_connections.is_some(),
            "max_topic_levels" => self.max_topic_levels.is_some(),
            "max_clientid_len" => self.max_clientid_len.is_some(),
            "ban_file" => self.ban_file.is_some(),
            "flapping_window" => self.flapping_window.is_some(),
            "flapping_ban" => self.flapping_ban.is_some(),
            _ => false,
        }
    }
}

impl Limits {
    /// Checks the merged values and reads the ban file.
    pub(super) fn check(&mut self) -> Result<(), Bad> {
        if !(1..=65535).contains(&self.max_topic_levels) {
            let message = format!("{} is not in 1..=65535", self.max_topic_levels);
            return Err(("max_topic_levels", message));
        }
        if !(23..=65535).contains(&self.max_clientid_len) {
            // 23 bytes is what every server must accept [MQTT-3.1.3-5].
            let message = format!(
                "{} is not in 23..=65535 (every server must accept 23 bytes, [MQTT-3.1.3-5])",
                self.max_clientid_len
            );
            return Err(("max_clientid_len", message));
        }
        self.flapping = None;
        if self.flapping_max_disconnects > 0 {
            if self.flapping_window.is_zero() {
                return Err(("flapping_window", "must be at least 1 second".into()));
            }
            if self.flapping_ban.is_zero() {
                return Err(("flapping_ban", "must be at least 1 second".into()));
            }
            self.flapping = Some(FlappingPolicy {
                max_disconnects: self.flapping_max_disconnects,
                window: self.flapping_window,
                ban: self.flapping_ban,
            });
        }
        if let Some(path) = &self.ban_file {
            let list = BanList::load(path).map_err(|e| ("ban_file", e.to_string()))?;
            self.bans = Arc::new(list);
        }
        Ok(())
    }
}

/// Each limit flag's default, as `--help` shows it.
pub(super) fn shown_defaults(d: &Limits) -> Vec<(&'static str, String)> {
    vec![
        ("max_connections", "-1 (no limit)".into()),
        (
            "max_connection_rate",
            format!("{} (no limit)", d.max_connection_rate),
        ),
        (
            "max_publish_rate",
            format!("{} (no limit)", d.max_publish_rate),
        ),
        ("max_topic_levels", d.max_topic_levels.to_string()),
        ("max_clientid_len", d.max_clientid_len.to_string()),
        (
            "flapping_max_disconnects",
            format!("{} (off)", d.flapping_max_disconnects),
        ),
        ("flapping_window", d.flapping_window.as_secs().to_string()),
        ("flapping_ban", d.flapping_ban.as_secs().to_string()),
    ]
}
