//! Broker configuration: command-line flags (clap) over an optional TOML file over the
//! embedded defaults.
//!
//! Every flag has a config key of the same name (dashes become underscores). Unknown keys
//! and bad values are errors that name the key and the file, so a typo never silently
//! falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub use crate::session::state::Overflow;

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
}

/// Command-line flags. Each is optional here so that a flag that was not given does not
/// override the config file.
#[derive(Debug, Parser, Default, Clone)]
#[command(
    name = "berth",
    version,
    about = "MQTT 3.1.1/5.0 broker built for persistent sessions at scale"
)]
pub struct Args {
    /// Address to listen on (every core accepts on it). Port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Number of cores (pinned executors) to run; default all.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Directory for the per-core message logs.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; every flag has a key of the same name.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log level: error, warning, notice, information, debug (Mosquitto's names), error,
    /// warn, info, debug, trace (tracing's), none or off; or a tracing directive
    /// (`berth=debug,info`). Re-read from the config file on SIGHUP; this flag still wins.
    #[arg(long)]
    pub log: Option<String>,
    /// Seconds an accepted connection may take to send its CONNECT.
    #[arg(long)]
    pub connect_timeout: Option<u64>,
    /// Largest packet the broker accepts, in bytes (told to v5 clients in CONNACK).
    #[arg(long)]
    pub max_packet_size: Option<u32>,
    /// Keep alive, in seconds, the server imposes on every client (v5 Server Keep Alive);
    /// unset means the client's own value is used.
    #[arg(long)]
    pub server_keep_alive: Option<u16>,
    /// How many QoS 1/2 PUBLISH packets a client may have unacknowledged towards the broker.
    #[arg(long)]
    pub receive_maximum: Option<u16>,
    /// Topic aliases a v5 client may set towards the broker (told in CONNACK); 0 disables.
    #[arg(long)]
    pub topic_alias_maximum: Option<u16>,
    /// Bytes of QoS 0 messages waiting to be written to one connected client; beyond it
    /// QoS 0 messages for that client are dropped (and counted). 0 means no limit.
    #[arg(long)]
    pub max_outbox_bytes: Option<usize>,
    /// How many QoS 1/2 messages the broker has unacknowledged towards one client: the
    /// smaller of this and the client's own Receive Maximum (3.1.1 clients have none).
    #[arg(long)]
    pub max_inflight_messages: Option<u16>,
    /// Longest Session Expiry granted, in seconds; also how long a 3.1.1 Clean Session 0
    /// session outlives its connection.
    #[arg(long)]
    pub max_session_expiry: Option<u64>,
    /// Messages queued per session beyond its inflight window (see `queue_overflow`).
    #[arg(long)]
    pub max_queued_messages: Option<usize>,
    /// Seconds between `$SYS/broker/...` updates; 0 turns `$SYS` off.
    #[arg(long)]
    pub sys_interval: Option<u64>,
    /// Payload bytes queued per session (default 16 MiB); 0 means no limit beyond
    /// `max_queued_messages`.
    #[arg(long)]
    pub max_queued_bytes: Option<usize>,
    /// Payload bytes of messages held for sessions, the whole broker together, beyond which
    /// QoS 1/2 publishes are refused as on a full disk (v5 0x97); 0 means no limit.
    #[arg(long)]
    pub max_stored_bytes: Option<u64>,
    /// What a full queue does with a new message: drop the oldest, or refuse the newest.
    #[arg(long, value_enum)]
    pub queue_overflow: Option<Overflow>,
    /// Whether QoS 0 messages are queued for offline sessions (`true`/`false`).
    #[arg(long)]
    pub queue_qos0: Option<bool>,
    /// Most sessions the broker holds; 0 means no limit. Each core holds its share.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Subscriptions one session may hold (default 10,000); beyond it a SUBSCRIBE's new
    /// filters get 0x97 Quota exceeded (3.1.1: 0x80). 0 means no limit.
    #[arg(long)]
    pub max_subscriptions: Option<usize>,
    /// How far the log is made durable before acknowledging: `never` (page cache: survives
    /// a process crash), `interval` (also msync every `fsync_interval_ms`), `always` (msync
    /// before every acknowledgement, in group commits: survives an OS crash).
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncMode>,
    /// Milliseconds between background msyncs under `fsync = "interval"`.
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Size of each log segment file, in bytes.
    #[arg(long)]
    pub segment_size: Option<u64>,
    /// Seconds a connection's writer may go without making progress (the client does not
    /// read) before the connection is closed.
    #[arg(long)]
    pub write_timeout: Option<u64>,
    /// Longest keep alive a client may ask for (Mosquitto's `max_keepalive`): a v5 client
    /// asking for more, or for 0, gets this as Server Keep Alive; a 3.1.1 client is
    /// refused with CONNACK 0x02. 0 or 65535: no cap.
    #[arg(long)]
    pub max_keepalive: Option<u16>,
}

/// How far the log reaches beyond the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    Never,
    Interval,
    Always,
}

/// The keys a config file may hold. `deny_unknown_fields` turns a typo into an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    cores: Option<usize>,
    data_dir: Option<PathBuf>,
    log: Option<String>,
    connect_timeout: Option<u64>,
    max_packet_size: Option<u32>,
    server_keep_alive: Option<u16>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
    max_outbox_bytes: Option<usize>,
    max_inflight_messages: Option<u16>,
    max_session_expiry: Option<u64>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_stored_bytes: Option<u64>,
    queue_overflow: Option<Overflow>,
    queue_qos0: Option<bool>,
    max_sessions: Option<usize>,
    max_subscriptions: Option<usize>,
    fsync: Option<FsyncMode>,
    fsync_interval_ms: Option<u64>,
    segment_size: Option<u64>,
    sys_interval: Option<u64>,
    write_timeout: Option<u64>,
    max_keepalive: Option<u16>,
}

/// The configuration in force, after flags, file and defaults are merged and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub cores: usize,
    pub data_dir: PathBuf,
    pub log: String,
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
        }
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let (file, path) = match &args.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None => (FileConfig::default(), None),
        };
        let mut config = Config::default();
        let invalid = |key, message: String| ConfigError::Invalid {
            key,
            path: path.clone(),
            message,
        };

        if let Some(listen) = file.listen {
            config.listen = listen
                .parse()
                .map_err(|e| invalid("listen", format!("`{listen}`: {e}")))?;
        }
        if let Some(v) = file.cores {
            config.cores = v;
        }
        if let Some(v) = file.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = file.log {
            config.log = v;
        }
        if let Some(v) = file.connect_timeout {
            config.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.max_packet_size {
            config.max_packet_size = v;
        }
        config.server_keep_alive = file.server_keep_alive.or(config.server_keep_alive);
        if let Some(v) = file.receive_maximum {
            config.receive_maximum = v;
        }
        config.topic_alias_maximum = file
            .topic_alias_maximum
            .unwrap_or(config.topic_alias_maximum);
        config.max_outbox_bytes = file.max_outbox_bytes.unwrap_or(config.max_outbox_bytes);
        if let Some(v) = file.max_inflight_messages {
            config.max_inflight_messages = v;
        }
        if let Some(v) = file.max_session_expiry {
            config.max_session_expiry = Duration::from_secs(v);
        }
        if let Some(v) = file.max_queued_messages {
            config.max_queued_messages = v;
        }
        config.max_queued_bytes = file.max_queued_bytes.unwrap_or(config.max_queued_bytes);
        config.max_stored_bytes = file.max_stored_bytes.unwrap_or(config.max_stored_bytes);
        config.queue_overflow = file.queue_overflow.unwrap_or(config.queue_overflow);
        config.queue_qos0 = file.queue_qos0.unwrap_or(config.queue_qos0);
        config.max_sessions = file.max_sessions.unwrap_or(config.max_sessions);
        config.max_subscriptions = file.max_subscriptions.unwrap_or(config.max_subscriptions);
        config.fsync = file.fsync.unwrap_or(config.fsync);
        if let Some(v) = file.fsync_interval_ms {
            config.fsync_interval = Duration::from_millis(v);
        }
        config.segment_size = file.segment_size.unwrap_or(config.segment_size);
        if let Some(v) = file.sys_interval {
            config.sys_interval = Duration::from_secs(v);
        }
        if let Some(v) = file.write_timeout {
            config.write_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.max_keepalive {
            config.max_keepalive = keepalive_cap(v);
        }

        // Flags win over the file.
        config.listen = args.listen.unwrap_or(config.listen);
        config.cores = args.cores.unwrap_or(config.cores);
        config.data_dir = args.data_dir.unwrap_or(config.data_dir);
        config.log = args.log.clone().unwrap_or(config.log);
        if let Some(v) = args.connect_timeout {
            config.connect_timeout = Duration::from_secs(v);
        }
        config.max_packet_size = args.max_packet_size.unwrap_or(config.max_packet_size);
        config.server_keep_alive = args.server_keep_alive.or(config.server_keep_alive);
        config.receive_maximum = args.receive_maximum.unwrap_or(config.receive_maximum);
        config.topic_alias_maximum = args
            .topic_alias_maximum
            .unwrap_or(config.topic_alias_maximum);
        config.max_outbox_bytes = args.max_outbox_bytes.unwrap_or(config.max_outbox_bytes);
        config.max_inflight_messages = args
            .max_inflight_messages
            .unwrap_or(config.max_inflight_messages);
        if let Some(v) = args.max_session_expiry {
            config.max_session_expiry = Duration::from_secs(v);
        }
        config.max_queued_messages = args
            .max_queued_messages
            .unwrap_or(config.max_queued_messages);
        config.max_queued_bytes = args.max_queued_bytes.unwrap_or(config.max_queued_bytes);
        config.max_stored_bytes = args.max_stored_bytes.unwrap_or(config.max_stored_bytes);
        config.queue_overflow = args.queue_overflow.unwrap_or(config.queue_overflow);
        config.queue_qos0 = args.queue_qos0.unwrap_or(config.queue_qos0);
        config.max_sessions = args.max_sessions.unwrap_or(config.max_sessions);
        config.max_subscriptions = args.max_subscriptions.unwrap_or(config.max_subscriptions);
        config.fsync = args.fsync.unwrap_or(config.fsync);
        if let Some(v) = args.fsync_interval_ms {
            config.fsync_interval = Duration::from_millis(v);
        }
        config.segment_size = args.segment_size.unwrap_or(config.segment_size);
        if let Some(v) = args.sys_interval {
            config.sys_interval = Duration::from_secs(v);
        }
        if let Some(v) = args.write_timeout {
            config.write_timeout = Duration::from_secs(v);
        }
        if let Some(v) = args.max_keepalive {
            config.max_keepalive = keepalive_cap(v);
        }

        // A bad value names the file only when it came from the file.
        let bad = |key: &'static str, from_flag: bool, message: String| ConfigError::Invalid {
            key,
            path: if from_flag { None } else { path.clone() },
            message,
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
        config.log =
            log_filter(&config.log).map_err(|message| bad("log", args.log.is_some(), message))?;
        Ok(config)
    }
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

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        // Name the offending line (and so its key) as well as the file.
        let line = e.span().map(|span| {
            let start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
            let number = text[..span.start].matches('\n').count() + 1;
            let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            format!("line {number} `{}`: ", text[start..end].trim())
        });
        ConfigError::Parse {
            path: path.into(),
            message: format!("{}{}", line.unwrap_or_default(), e.message()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, text).unwrap();
        Config::from_args(Args {
            config: Some(path),
            ..Args::default()
        })
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::from_args(Args::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./berth-data"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = with_file("listen = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("berth.toml"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_file() {
        let err = with_file("listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(
            err.contains("`listen`") && err.contains("berth.toml"),
            "{err}"
        );
        let err = with_file("cores = 0\n").unwrap_err().to_string();
        assert!(
            err.contains("`cores`") && err.contains("berth.toml"),
            "{err}"
        );
    }

    #[test]
    fn public_broker_policy_can_be_configured() {
        let config = with_file(
            "max_session_expiry = 300\nmax_queued_messages = 1000\nqueue_qos0 = false\nqueue_overflow = \"refuse-newest\"\nfsync = \"always\"\n",
        )
        .unwrap();
        assert_eq!(config.max_session_expiry, Duration::from_secs(300));
        assert_eq!(config.max_queued_messages, 1000);
        assert!(!config.queue_qos0);
        assert_eq!(config.queue_overflow, Overflow::RefuseNewest);
        assert_eq!(config.fsync, FsyncMode::Always);
        let err = with_file("fsync = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fsync") && err.contains("berth.toml"), "{err}");
        let err = with_file("segment_size = 10\n").unwrap_err().to_string();
        assert!(err.contains("`segment_size`"), "{err}");
    }

    #[test]
    fn mqtt5_negotiation_and_outbox_keys() {
        let config = Config::from_args(Args::default()).unwrap();
        assert_eq!(config.topic_alias_maximum, 10);
        assert_eq!(config.max_outbox_bytes, 256 << 10);
        let config = with_file("topic_alias_maximum = 0\nmax_outbox_bytes = 131072\n").unwrap();
        assert_eq!(config.topic_alias_maximum, 0);
        assert_eq!(config.max_outbox_bytes, 131072);
        let err = with_file("topic_alias_maximum = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("topic_alias_maximum"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "cores = 3\nmax_packet_size = 1000\n").unwrap();
        let config = Config::from_args(Args {
            config: Some(path),
            cores: Some(1),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.cores, 1);
        assert_eq!(config.max_packet_size, 1000);
    }

    #[test]
    fn sys_interval_defaults_to_ten_seconds_and_zero_turns_it_off() {
        let config = Config::from_args(Args::default()).unwrap();
        assert_eq!(config.sys_interval, Duration::from_secs(10));
        assert!(with_file("sys_interval = 0\n")
            .unwrap()
            .sys_interval
            .is_zero());
        let config = Config::from_args(Args {
            sys_interval: Some(1),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.sys_interval, Duration::from_secs(1));
    }

    #[test]
    fn session_bounds_default_to_limits_and_zero_lifts_them() {
        let config = Config::from_args(Args::default()).unwrap();
        assert_eq!(config.max_subscriptions, 10_000);
        assert_eq!(config.max_queued_bytes, 16 << 20);
        assert_eq!(config.max_queued_messages, 1000);
        let config = with_file("max_subscriptions = 0\nmax_queued_bytes = 0\n").unwrap();
        assert_eq!(config.max_subscriptions, 0);
        assert_eq!(config.max_queued_bytes, 0);
        let err = with_file("max_subscriptions = -1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_subscriptions") && err.contains("berth.toml"),
            "{err}"
        );
    }

    #[test]
    fn log_levels_take_mosquitto_and_tracing_names_and_refuse_others() {
        for (given, filter) in [
            ("error", "error"),
            ("warning", "warn"),
            ("warn", "warn"),
            ("notice", "info"),
            ("information", "info"),
            ("info", "info"),
            ("debug", "debug"),
            ("trace", "trace"),
            ("none", "off"),
            ("off", "off"),
            ("WARNING", "warn"),
            ("berth=debug,info", "berth=debug,info"),
        ] {
            assert_eq!(log_filter(given).as_deref(), Ok(filter), "{given}");
        }
        let err = with_file("log = \"loud\"\n").unwrap_err().to_string();
        assert!(
            err.contains("`log`") && err.contains("berth.toml") && err.contains("loud"),
            "{err}"
        );
        let err = Config::from_args(Args {
            log: Some("verbose".into()),
            ..Args::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`log`") && !err.contains(" in "), "{err}");
        assert!(log_filter("berth=loud").is_err());
    }

    #[test]
    fn write_timeout_and_max_keepalive_keys() {
        let config = Config::from_args(Args::default()).unwrap();
        assert_eq!(config.write_timeout, Duration::from_secs(30));
        assert_eq!(config.max_keepalive, None);
        let config = with_file("write_timeout = 2\nmax_keepalive = 60\n").unwrap();
        assert_eq!(config.write_timeout, Duration::from_secs(2));
        assert_eq!(config.max_keepalive, Some(60));
        for no_cap in ["0", "65535"] {
            let config = with_file(&format!("max_keepalive = {no_cap}\n")).unwrap();
            assert_eq!(config.max_keepalive, None, "{no_cap}");
        }
        let err = with_file("write_timeout = 0\n").unwrap_err().to_string();
        assert!(err.contains("`write_timeout`"), "{err}");
        let err = with_file("max_keepalive = 60\nserver_keep_alive = 61\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server_keep_alive`"), "{err}");
    }
}
