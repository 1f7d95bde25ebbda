//! Broker configuration: command-line flags (clap, [`cli`]) over an optional TOML file
//! ([`file`]) over the embedded defaults, merged and checked into one [`Config`].
//!
//! Every flag has a config key of the same name (dashes become underscores). Unknown keys
//! and bad values are errors that name the key and the file (or the flag, for a value given
//! on the command line), so a typo never silently falls back to a default. `--help` shows
//! the defaults, which are shown rather than set in clap so that the file still applies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Authenticator, PasswordFile};
pub use crate::session::state::Overflow;
pub use cli::Args;
pub use limits::{Limits, LimitsArgs};

/// The Session Expiry Interval that MQTT 5 defines as "never expires" (3.1.2.11.2), in
/// seconds; also the largest `max_session_expiry`, so that `now + expiry` cannot overflow.
pub const NEVER_EXPIRES: u64 = u32::MAX as u64;

mod cli;
mod file;
mod limits;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`{}: {message}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        key: &'static str,
        path: Option<PathBuf>,
        message: String,
    },
    /// A bad value given on the command line: named as the flag it was given as.
    #[error("flag --{}: {message}", .key.replace('_', "-"))]
    Flag { key: &'static str, message: String },
}

/// How far the log reaches beyond the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    Never,
    Interval,
    Always,
}

/// The configuration in force, after flags, file and defaults are merged and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub cores: usize,
    pub data_dir: PathBuf,
    pub log: String,
    /// A Mosquitto password file (`password_file`): usernames and password hashes.
    pub password_file: Option<PathBuf>,
    /// `allow_anonymous` as given; `None` takes the default (see [`Config::auth`]).
    pub allow_anonymous: Option<bool>,
    /// Who may connect, as these settings decide (the password file read at start and at
    /// each reload).
    pub auth: Arc<Authenticator>,
    pub connect_timeout: Duration,
    pub max_packet_size: u32,
    pub server_keep_alive: Option<u16>,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    /// Bound on QoS 0 bytes waiting for one connection's writer; 0: unbounded.
    pub max_outbox_bytes: usize,
    pub max_inflight_messages: u16,
    pub max_session_expiry: Duration,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_stored_bytes: u64,
    pub queue_overflow: Overflow,
    pub queue_qos0: bool,
    pub max_sessions: usize,
    /// Subscriptions per session; 0: no limit.
    pub max_subscriptions: usize,
    pub fsync: FsyncMode,
    pub fsync_interval: Duration,
    pub segment_size: u64,
    /// How often core 0 publishes `$SYS`; zero: never.
    pub sys_interval: Duration,
    /// How long a writer may make no progress before its connection is closed.
    pub write_timeout: Duration,
    /// Cap on keep alive (`max_keepalive`); `None` when 0 or 65535 (no cap).
    pub max_keepalive: Option<u16>,
    /// Whether v5 CONNACKs carry `berth-shard` and `berth-accepted-on` (internals).
    pub connack_debug_properties: bool,
    /// Connections, rates, topic depth, client-id length, bans, flapping (`limits`).
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            data_dir: PathBuf::from("./berth-data"),
            log: "info".to_string(),
            password_file: None,
            allow_anonymous: None,
            auth: Arc::new(Authenticator {
                passwords: None,
                allow_anonymous: true,
            }),
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1 << 20,
            server_keep_alive: None,
            receive_maximum: 1024,
            topic_alias_maximum: 10,
            max_outbox_bytes: 256 << 10,
            max_inflight_messages: 1024,
            max_session_expiry: Duration::from_secs(2 * 60 * 60),
            max_queued_messages: 1000,
            // 16 max-size messages, or the 1,000 of `max_queued_messages` at 16 KiB each:
            // the count binds for ordinary payloads, this for large ones.
            max_queued_bytes: 16 << 20,
            max_stored_bytes: 4 << 30,
            queue_overflow: Overflow::DropOldest,
            queue_qos0: false,
            max_sessions: 0,
            max_subscriptions: 10_000,
            fsync: FsyncMode::Interval,
            fsync_interval: Duration::from_millis(1000),
            segment_size: 64 << 20,
            sys_interval: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_keepalive: None,
            connack_debug_properties: false,
            limits: Limits::default(),
        }
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let path = args.config.clone();
        if let Some(path) = &path {
            file::read_file(path)?.apply(&mut config, path)?;
        }
        args.apply(&mut config);
        args.limits
            .apply(&mut config.limits)
            .map_err(|(key, message)| ConfigError::Flag { key, message })?;

        // A bad value names the flag when it came from one, else the key (and the file).
        let bad = |key: &'static str, from_flag: bool, message: String| {
            if from_flag {
                ConfigError::Flag { key, message }
            } else {
                ConfigError::Invalid {
                    key,
                    path: path.clone(),
                    message,
                }
            }
        };
        if config.cores == 0 || config.cores > 1024 {
            return Err(bad(
                "cores",
                args.cores.is_some(),
                format!("{} is not in 1..=1024", config.cores),
            ));
        }
        if config.max_packet_size < 64 || config.max_packet_size > 268_435_460 {
            let message = format!("{} is not in 64..=268435460", config.max_packet_size);
            return Err(bad(
                "max_packet_size",
                args.max_packet_size.is_some(),
                message,
            ));
        }
        if config.receive_maximum == 0 {
            return Err(bad(
                "receive_maximum",
                args.receive_maximum.is_some(),
                "must be at least 1".into(),
            ));
        }
        if config.max_inflight_messages == 0 {
            return Err(bad(
                "max_inflight_messages",
                args.max_inflight_messages.is_some(),
                "must be at least 1".into(),
            ));
        }
        if !(64 << 10..=1 << 30).contains(&config.segment_size) || config.segment_size % 4096 != 0 {
            let message = format!(
                "{} is not a multiple of 4096 in 65536..=1073741824",
                config.segment_size
            );
            return Err(bad("segment_size", args.segment_size.is_some(), message));
        }
        if config.fsync == FsyncMode::Interval && config.fsync_interval.is_zero() {
            return Err(bad(
                "fsync_interval_ms",
                args.fsync_interval_ms.is_some(),
                "must be at least 1 under fsync = \"interval\"".into(),
            ));
        }
        if config.max_queued_messages == 0 {
            return Err(bad(
                "max_queued_messages",
                args.max_queued_messages.is_some(),
                "must be at least 1".into(),
            ));
        }
        if config.connect_timeout.is_zero() {
            return Err(bad(
                "connect_timeout",
                args.connect_timeout.is_some(),
                "must be at least 1 second".into(),
            ));
        }
        if config.write_timeout.is_zero() {
            return Err(bad(
                "write_timeout",
                args.write_timeout.is_some(),
                "must be at least 1 second".into(),
            ));
        }
        let expiry = config.max_session_expiry.as_secs();
        if expiry == 0 || expiry > NEVER_EXPIRES {
            let message = if expiry == 0 {
                "0 is not allowed: it means no limit in some brokers and no persistent sessions \
                 in others; for sessions that never expire give 4294967295 (MQTT 5's \"never \
                 expires\")"
                    .to_string()
            } else {
                format!("{expiry} is not in 1..=4294967295 (4294967295: sessions never expire)")
            };
            return Err(bad(
                "max_session_expiry",
                args.max_session_expiry.is_some(),
                message,
            ));
        }
        if let (Some(cap), Some(server)) = (config.max_keepalive, config.server_keep_alive) {
            if server == 0 || server > cap {
                let message = format!("{server} is not in 1..={cap} (`max_keepalive`)");
                return Err(bad(
                    "server_keep_alive",
                    args.server_keep_alive.is_some(),
                    message,
                ));
            }
        }
        config
            .limits
            .check()
            .map_err(|(key, message)| bad(key, args.limits.given(key), message))?;
        config.log =
            log_filter(&config.log).map_err(|message| bad("log", args.log.is_some(), message))?;
        config.auth = Arc::new(authenticator(&config).map_err(|(key, message)| {
            let from_flag = match key {
                "password_file" => args.password_file.is_some(),
                _ => args.allow_anonymous.is_some(),
            };
            bad(key, from_flag, message)
        })?);
        Ok(config)
    }
}

/// Who may connect. `allow_anonymous` defaults to true only on a loopback address without a
/// password file (Mosquitto 2.0 defaults it to false once a listener is configured); a
/// broker listening beyond loopback with no authentication must be told so explicitly.
fn authenticator(config: &Config) -> Result<Authenticator, (&'static str, String)> {
    let loopback = config.listen.ip().is_loopback();
    let passwords = match &config.password_file {
        Some(path) => Some(Arc::new(
            PasswordFile::load(path).map_err(|e| ("password_file", e.to_string()))?,
        )),
        None => None,
    };
    let allow_anonymous = match config.allow_anonymous {
        Some(false) if passwords.is_none() => {
            return Err((
                "allow_anonymous",
                "false needs a password_file: without one there is nothing to check a \
                 username against"
                    .into(),
            ))
        }
        Some(allow) => allow,
        None if passwords.is_none() && !loopback => {
            return Err((
                "allow_anonymous",
                format!(
                    "berth would listen on {} (not a loopback address) with no \
                     authentication: set password_file, or allow_anonymous = true to accept \
                     any client",
                    config.listen
                ),
            ))
        }
        None => passwords.is_none(),
    };
    Ok(Authenticator {
        passwords,
        allow_anonymous,
    })
}

/// `max_keepalive` 0 and 65535 both mean that every keep alive is allowed (Mosquitto 2.0.13+
/// takes 0 that way; 65535 is the largest value there is).
fn keepalive_cap(v: u16) -> Option<u16> {
    (v != 0 && v != u16::MAX).then_some(v)
}

/// The tracing filter for a `log` value: a level by Mosquitto's name or tracing's, or a
/// tracing directive (`berth=debug,info`). A bare word that is no level is an error:
/// tracing would read it as a target name and silently log nothing.
pub fn log_filter(value: &str) -> Result<String, String> {
    let word = value.trim().to_ascii_lowercase();
    let level = match word.as_str() {
        "none" | "off" => "off",
        "error" => "error",
        "warning" | "warn" => "warn",
        "notice" | "information" | "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ if word.contains(['=', ',', ':', '[']) => {
            return tracing_subscriber::EnvFilter::try_new(value)
                .map(|_| value.to_string())
                .map_err(|e| format!("`{value}` is not a tracing directive: {e}"));
        }
        _ => {
            return Err(format!(
                "unknown log level `{value}` (error, warning, notice, information, debug, \
                 warn, info, trace, none, off, or a tracing directive such as `berth=debug`)"
            ))
        }
    };
    Ok(level.to_string())
}
