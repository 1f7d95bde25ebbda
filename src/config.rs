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
#[derive(Debug, Parser, Default)]
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
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
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
    /// Longest Session Expiry granted, in seconds; also how long a 3.1.1 Clean Session 0
    /// session outlives its connection.
    #[arg(long)]
    pub max_session_expiry: Option<u64>,
    /// Messages queued per session beyond its inflight window; the oldest is dropped past it.
    #[arg(long)]
    pub max_queued_messages: Option<usize>,
    /// Seconds between `$SYS/broker/...` updates; 0 turns `$SYS` off.
    #[arg(long)]
    pub sys_interval: Option<u64>,
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
    max_session_expiry: Option<u64>,
    max_queued_messages: Option<usize>,
    sys_interval: Option<u64>,
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
    pub max_session_expiry: Duration,
    pub max_queued_messages: usize,
    /// How often core 0 publishes `$SYS`; zero: never.
    pub sys_interval: Duration,
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
            max_session_expiry: Duration::from_secs(2 * 60 * 60),
            max_queued_messages: 1000,
            sys_interval: Duration::from_secs(10),
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
        if let Some(v) = file.max_session_expiry {
            config.max_session_expiry = Duration::from_secs(v);
        }
        if let Some(v) = file.max_queued_messages {
            config.max_queued_messages = v;
        }
        if let Some(v) = file.sys_interval {
            config.sys_interval = Duration::from_secs(v);
        }

        // Flags win over the file.
        config.listen = args.listen.unwrap_or(config.listen);
        config.cores = args.cores.unwrap_or(config.cores);
        config.data_dir = args.data_dir.unwrap_or(config.data_dir);
        config.log = args.log.unwrap_or(config.log);
        if let Some(v) = args.connect_timeout {
            config.connect_timeout = Duration::from_secs(v);
        }
        config.max_packet_size = args.max_packet_size.unwrap_or(config.max_packet_size);
        config.server_keep_alive = args.server_keep_alive.or(config.server_keep_alive);
        config.receive_maximum = args.receive_maximum.unwrap_or(config.receive_maximum);
        if let Some(v) = args.max_session_expiry {
            config.max_session_expiry = Duration::from_secs(v);
        }
        config.max_queued_messages = args
            .max_queued_messages
            .unwrap_or(config.max_queued_messages);
        if let Some(v) = args.sys_interval {
            config.sys_interval = Duration::from_secs(v);
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
        if config.connect_timeout.is_zero() {
            return Err(bad(
                "connect_timeout",
                args.connect_timeout.is_some(),
                "must be at least 1 second".into(),
            ));
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.message().to_string(),
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
}
