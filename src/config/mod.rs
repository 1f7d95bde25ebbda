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

use crate::auth::{Acl, ApiKeys, Authenticator, PasswordFile};
pub use crate::session::state::Overflow;
pub use cli::Args;
pub(crate) use cluster::parse_nats;
pub use cluster::{ClusterArgs, ClusterConfig};
pub use limits::{Limits, LimitsArgs};
pub use listener::{Identity, Listener, ListenerTransport};
pub use settings::{BadSetting, Settings};
pub use tls::TlsListener;

/// The Session Expiry Interval that MQTT 5 defines as "never expires" (3.1.2.11.2), in
/// seconds; also the largest `max_session_expiry`, so that `now + expiry` cannot overflow.
pub const NEVER_EXPIRES: u64 = u32::MAX as u64;

mod cli;
mod cluster;
mod file;
mod limits;
#[cfg(test)]
mod limits_tests;
mod listener;
pub mod settings;
#[cfg(test)]
mod tests;
mod tls;

/// Where berth listens when neither `listen` nor a `[[listener]]` table says.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    1883,
));

/// An address to listen on: `IP:PORT`, or `NAME:PORT` with the name resolved now
/// (`localhost:1883`); a name that resolves to several addresses takes the first, IPv4
/// before IPv6, as most resolvers order `localhost`.
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    use std::net::ToSocketAddrs;
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` is not HOST:PORT (such as 127.0.0.1:1883)"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("`{text}`: `{port}` is not a port (0..=65535)"));
    }
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("`{text}`: cannot resolve `{host}`: {e}"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("`{text}`: `{host}` resolves to no address"))
}

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
    #[error("listener {index} ({address}): key `{key}`{}: {message}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Listener {
        /// The `[[listener]]` table's place in the file, from 1.
        index: usize,
        address: String,
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
    /// `listen` as given (key or flag): a plain TCP listener, the first one.
    pub listen: Option<SocketAddr>,
    /// Every listener, `listen` first (see `listener` for how they combine).
    pub listeners: Vec<Listener>,
    pub cores: usize,
    pub data_dir: PathBuf,
    pub log: String,
    /// A Mosquitto password file (`password_file`): usernames and password hashes.
    pub password_file: Option<PathBuf>,
    /// `allow_anonymous` as given; `None` takes the default (see [`Config::auth`]).
    pub allow_anonymous: Option<bool>,
    /// A Mosquitto ACL file (`acl_file`), read into [`Authenticator::acl`].
    pub acl_file: Option<PathBuf>,
    /// Whether, with a password file, a session belongs to the username that last took
    /// it (`session_ownership`; see [`Authenticator::owns`]).
    pub session_ownership: bool,
    /// The admin API's address (`admin_listen`).
    pub admin_listen: SocketAddr,
    pub admin_keys_file: Option<PathBuf>,
    /// The keys `admin_keys_file` holds, read when the configuration is.
    pub admin_keys: Option<Arc<ApiKeys>>,
    pub admin_allow_anonymous: bool,
    /// `admin_tls_cert` and `admin_tls_key`: the admin API speaks HTTPS with them.
    pub admin_tls_cert: Option<PathBuf>,
    /// How long an admin connection may stay silent while a read waits on it.
    pub admin_idle_timeout: Duration,
    pub admin_tls_key: Option<PathBuf>,
    /// The admin API's TLS settings, read from those files (swapped whole on SIGHUP).
    pub admin_tls: Option<Arc<TlsListener>>,
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
    /// This node's name, slot map and NATS servers in a cluster (`[cluster]`); empty: a
    /// single broker.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            listeners: vec![Listener::plain(DEFAULT_LISTEN)],
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            data_dir: PathBuf::from("./berth-data"),
            log: "info".to_string(),
            password_file: None,
            allow_anonymous: None,
            acl_file: None,
            session_ownership: true,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 18083)),
            admin_keys_file: None,
            admin_keys: None,
            admin_allow_anonymous: false,
            admin_tls_cert: None,
            admin_idle_timeout: Duration::from_secs(60),
            admin_tls_key: None,
            admin_tls: None,
            auth: Arc::new(Authenticator {
                passwords: None,
                allow_anonymous: true,
                acl: None,
                session_ownership: true,
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
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let path = args.config.clone();
        let mut tables = Vec::new();
        if let Some(path) = &path {
            tables = file::read_file(path)?.apply(&mut config, path)?;
        }
        args.apply(&mut config);
        config.listeners = config.listen.into_iter().map(Listener::plain).collect();
        config.listeners.extend(tables);
        if config.listeners.is_empty() {
            config.listeners.push(Listener::plain(DEFAULT_LISTEN));
        }
        listener::check_distinct(&config.listeners, config.listen.is_some(), path.as_deref())?;
        args.cluster.apply(&mut config.cluster);
        cluster::check(&mut config.cluster, &args.cluster, path.as_deref())?;
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
                "acl_file" => args.acl_file.is_some(),
                _ => args.allow_anonymous.is_some(),
            };
            bad(key, from_flag, message)
        })?);
        if let Some(path) = &config.admin_keys_file {
            let keys = ApiKeys::load(path).map_err(|message| {
                bad("admin_keys_file", args.admin_keys_file.is_some(), message)
            })?;
            config.admin_keys = Some(Arc::new(keys));
        }
        if config.admin_idle_timeout.is_zero() {
            return Err(bad(
                "admin_idle_timeout",
                args.admin_idle_timeout.is_some(),
                "must be at least 1".into(),
            ));
        }
        match (&config.admin_tls_cert, &config.admin_tls_key) {
            (Some(cert), Some(key)) => {
                let files = tls::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: None,
                    require_certificate: false,
                };
                let tls =
                    TlsListener::load(files, Identity::None).map_err(|(which, message)| {
                        let (key, from_flag) = if which == "key" {
                            ("admin_tls_key", args.admin_tls_key.is_some())
                        } else {
                            ("admin_tls_cert", args.admin_tls_cert.is_some())
                        };
                        bad(key, from_flag, message)
                    })?;
                config.admin_tls = Some(Arc::new(tls));
            }
            (Some(_), None) => {
                let message = "needs admin_tls_key too (the certificate's PEM key)".to_string();
                return Err(bad(
                    "admin_tls_cert",
                    args.admin_tls_cert.is_some(),
                    message,
                ));
            }
            (None, Some(_)) => {
                let message = "needs admin_tls_cert too (the key's PEM chain)".to_string();
                return Err(bad("admin_tls_key", args.admin_tls_key.is_some(), message));
            }
            (None, None) => {}
        }
        if config.admin_allow_anonymous && !config.admin_listen.ip().is_loopback() {
            let message = format!(
                "true needs a loopback admin_listen ({} is not): set admin_keys_file instead",
                config.admin_listen
            );
            let from_flag = args.admin_allow_anonymous.is_some();
            return Err(bad("admin_allow_anonymous", from_flag, message));
        }
        Ok(config)
    }

    /// Each listener's connection rate, in the configured order: its table's
    /// `max_connection_rate`, else the key's (0: no limit).
    pub fn connection_rates(&self) -> Vec<u32> {
        let default = self.limits.max_connection_rate;
        self.listeners
            .iter()
            .map(|l| l.max_connection_rate.unwrap_or(default))
            .collect()
    }

    /// Whether the admin API runs (see `server::admin`).
    pub fn admin_enabled(&self) -> bool {
        self.admin_keys_file.is_some() || self.admin_allow_anonymous
    }
}

/// Who may connect. `allow_anonymous` defaults to true only on a loopback address without a
/// password file (Mosquitto 2.0 defaults it to false once a listener is configured); a
/// broker listening beyond loopback with no authentication must be told so explicitly.
/// Every listener counts, except one that requires a client certificate (its clients are
/// authenticated by the certificate).
fn authenticator(config: &Config) -> Result<Authenticator, (&'static str, String)> {
    let open = config
        .listeners
        .iter()
        .find(|l| !l.address.ip().is_loopback() && !l.certificate_required());
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
        None if passwords.is_none() && open.is_some() => {
            return Err((
                "allow_anonymous",
                format!(
                    "berth would listen on {} (not a loopback address) with no \
                     authentication: set password_file, require client certificates on it, \
                     or allow_anonymous = true to accept any client",
                    open.map_or(DEFAULT_LISTEN, |l| l.address)
                ),
            ))
        }
        None => passwords.is_none(),
    };
    let acl = match &config.acl_file {
        Some(path) => Some(Arc::new(
            Acl::load(path).map_err(|e| ("acl_file", e.to_string()))?,
        )),
        None => None,
    };
    Ok(Authenticator {
        passwords,
        allow_anonymous,
        acl,
        session_ownership: config.session_ownership,
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
