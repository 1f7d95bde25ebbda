//! The command-line flags (clap). Each flag is optional so that one not given leaves the
//! config file's value (or the default) in force; [`Args::apply`] lays the given ones over
//! a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use super::{keepalive_cap, Config, FsyncMode, Overflow};

/// Command-line flags. Each is optional here so that a flag that was not given does not
/// override the config file.
#[derive(Debug, Parser, Default, Clone)]
#[command(
    name = "berth",
    version,
    about = "MQTT 3.1.1/5.0 broker built for persistent sessions at scale",
    after_help = "To write a password file: berth passwd --help\nFor a cluster's HAProxy configuration and map: berth cluster --help",
    // `--cores -1` is a bad value for --cores (and says so), not an unknown flag `-1`.
    allow_negative_numbers = true
)]
pub struct Args {
    /// Address to listen on with plain TCP (every core accepts on it); the first listener,
    /// before the config file's `[[listener]]` tables. The default applies only where the
    /// file has no `[[listener]]` table. Port 0 picks a free port; a host name is resolved
    /// at start (`localhost:1883`).
    #[arg(long, value_parser = super::listen_address)]
    pub listen: Option<SocketAddr>,
    /// Number of cores (executors, each pinned to its CPU) to run, 1..=1024. More than this
    /// machine's CPUs is allowed, with a warning: the executors then run unpinned (a data
    /// directory keeps the core count it was written with, which a smaller machine may need).
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
    /// Mosquitto password file (`mosquitto_passwd` or `berth passwd` writes one): clients
    /// must give a username and password it holds. Re-read on SIGHUP.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Whether a client without a username may connect: true or false. Default: true only
    /// on a loopback address without a password file; berth refuses to start on another
    /// address with no authentication unless this is true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Mosquitto ACL file: what each user may publish (write) and subscribe to or receive
    /// (read). Without one, every client may do everything. Re-read on SIGHUP.
    #[arg(long)]
    pub acl_file: Option<PathBuf>,
    /// With a password_file: a CONNECT whose username differs from the one that last took
    /// the client id's session is refused (v5 0x87, 3.1.1 return code 5) rather than
    /// taking it over or cleaning it. true or false.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub session_ownership: Option<bool>,
    /// Address of the admin HTTP API and `/metrics` (EMQX's port). It runs only with
    /// admin_keys_file or admin_allow_anonymous.
    #[arg(long, value_parser = super::listen_address)]
    pub admin_listen: Option<SocketAddr>,
    /// File of `key:secret` lines: the API keys the admin API takes over HTTP Basic.
    #[arg(long)]
    pub admin_keys_file: Option<PathBuf>,
    /// Run the admin API without keys: true or false; allowed only on a loopback
    /// admin_listen.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub admin_allow_anonymous: Option<bool>,
    /// PEM certificate chain: the admin API (and dashboard) speak HTTPS with it. Needs
    /// admin_tls_key.
    #[arg(long)]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of admin_tls_cert.
    #[arg(long)]
    pub admin_tls_key: Option<PathBuf>,
    /// Seconds an admin API connection may stay silent while the API waits for a request
    /// (or for its TLS handshake) before it is closed.
    #[arg(long)]
    pub admin_idle_timeout: Option<u64>,
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
    /// Longest Session Expiry granted, in seconds (1..=4294967295); also how long a 3.1.1
    /// Clean Session 0 session outlives its connection. 4294967295, MQTT 5's "never
    /// expires", lifts the cap. 0 is refused (it is no limit in some brokers, no persistence
    /// in others).
    #[arg(long)]
    pub max_session_expiry: Option<u64>,
    /// Messages queued per session beyond its inflight window (see `queue_overflow`).
    #[arg(long)]
    pub max_queued_messages: Option<usize>,
    /// Seconds between `$SYS/broker/...` updates; 0 turns `$SYS` off.
    #[arg(long)]
    pub sys_interval: Option<u64>,
    /// Payload bytes queued per session; 0 means no limit beyond
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
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub queue_qos0: Option<bool>,
    /// Most sessions the broker holds; 0 means no limit. Each core holds its share.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Subscriptions one session may hold; beyond it a SUBSCRIBE's new
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
    /// Put User Properties `berth-shard` (the core that owns the client) and
    /// `berth-accepted-on` (the core that accepted the connection), and in a cluster
    /// `berth-node` (this node's name), in every v5 CONNACK:
    /// internals, for tests and debugging. Given alone, the flag means `true`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub connack_debug_properties: Option<bool>,
    #[command(flatten)]
    pub limits: super::LimitsArgs,
    #[command(flatten)]
    pub cluster: super::ClusterArgs,
}

impl Args {
    /// Lays the flags that were given over `config`: flags win over the file.
    pub(super) fn apply(&self, config: &mut Config) {
        config.listen = self.listen.or(config.listen);
        config.cores = self.cores.unwrap_or(config.cores);
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.log {
            config.log = v.clone();
        }
        if let Some(v) = &self.password_file {
            config.password_file = Some(v.clone());
        }
        config.allow_anonymous = self.allow_anonymous.or(config.allow_anonymous);
        if let Some(v) = &self.acl_file {
            config.acl_file = Some(v.clone());
        }
        config.session_ownership = self.session_ownership.unwrap_or(config.session_ownership);
        config.admin_listen = self.admin_listen.unwrap_or(config.admin_listen);
        if let Some(v) = &self.admin_keys_file {
            config.admin_keys_file = Some(v.clone());
        }
        config.admin_allow_anonymous = self
            .admin_allow_anonymous
            .unwrap_or(config.admin_allow_anonymous);
        if let Some(v) = self.admin_idle_timeout {
            config.admin_idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = &self.admin_tls_cert {
            config.admin_tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.admin_tls_key {
            config.admin_tls_key = Some(v.clone());
        }
        if let Some(v) = self.connect_timeout {
            config.connect_timeout = Duration::from_secs(v);
        }
        config.max_packet_size = self.max_packet_size.unwrap_or(config.max_packet_size);
        config.server_keep_alive = self.server_keep_alive.or(config.server_keep_alive);
        config.receive_maximum = self.receive_maximum.unwrap_or(config.receive_maximum);
        config.topic_alias_maximum = self
            .topic_alias_maximum
            .unwrap_or(config.topic_alias_maximum);
        config.max_outbox_bytes = self.max_outbox_bytes.unwrap_or(config.max_outbox_bytes);
        config.max_inflight_messages = self
            .max_inflight_messages
            .unwrap_or(config.max_inflight_messages);
        if let Some(v) = self.max_session_expiry {
            config.max_session_expiry = Duration::from_secs(v);
        }
        config.max_queued_messages = self
            .max_queued_messages
            .unwrap_or(config.max_queued_messages);
        config.max_queued_bytes = self.max_queued_bytes.unwrap_or(config.max_queued_bytes);
        config.max_stored_bytes = self.max_stored_bytes.unwrap_or(config.max_stored_bytes);
        config.queue_overflow = self.queue_overflow.unwrap_or(config.queue_overflow);
        config.queue_qos0 = self.queue_qos0.unwrap_or(config.queue_qos0);
        config.max_sessions = self.max_sessions.unwrap_or(config.max_sessions);
        config.max_subscriptions = self.max_subscriptions.unwrap_or(config.max_subscriptions);
        config.fsync = self.fsync.unwrap_or(config.fsync);
        if let Some(v) = self.fsync_interval_ms {
            config.fsync_interval = Duration::from_millis(v);
        }
        config.segment_size = self.segment_size.unwrap_or(config.segment_size);
        if let Some(v) = self.sys_interval {
            config.sys_interval = Duration::from_secs(v);
        }
        if let Some(v) = self.write_timeout {
            config.write_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_keepalive {
            config.max_keepalive = keepalive_cap(v);
        }
        config.connack_debug_properties = self
            .connack_debug_properties
            .unwrap_or(config.connack_debug_properties);
    }

    /// Parses the command line, `--help` showing each flag's default.
    pub fn parse_showing_defaults() -> Args {
        let matches = Args::command_showing_defaults().get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The parser, with each flag's default (from [`Config::default`]) added to its help.
    /// The defaults are shown, not set: a flag that was not given must leave the config
    /// file's value in force, so clap never sees them as default values.
    pub fn command_showing_defaults() -> clap::Command {
        let mut command = Args::command();
        let defaults = Config::default();
        let limits = super::limits::shown_defaults(&defaults.limits);
        for (id, default) in shown_defaults(&defaults).into_iter().chain(limits) {
            command = command.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        command
    }
}

/// Each flag's default in the flag's own unit. `config`, `password_file` and `acl_file`
/// have none, and
/// `server_keep_alive` none to show (unset, the client's own keep alive is used).
fn shown_defaults(d: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("listen", super::DEFAULT_LISTEN.to_string()),
        ("cores", format!("{} (the CPUs here)", d.cores)),
        ("data_dir", d.data_dir.display().to_string()),
        ("log", d.log.clone()),
        (
            "allow_anonymous",
            "true on a loopback listen address without password_file, else false".into(),
        ),
        ("session_ownership", d.session_ownership.to_string()),
        ("admin_listen", d.admin_listen.to_string()),
        ("admin_allow_anonymous", d.admin_allow_anonymous.to_string()),
        (
            "admin_idle_timeout",
            d.admin_idle_timeout.as_secs().to_string(),
        ),
        ("connect_timeout", d.connect_timeout.as_secs().to_string()),
        ("max_packet_size", d.max_packet_size.to_string()),
        ("receive_maximum", d.receive_maximum.to_string()),
        ("topic_alias_maximum", d.topic_alias_maximum.to_string()),
        ("max_outbox_bytes", d.max_outbox_bytes.to_string()),
        ("max_inflight_messages", d.max_inflight_messages.to_string()),
        (
            "max_session_expiry",
            d.max_session_expiry.as_secs().to_string(),
        ),
        ("max_queued_messages", d.max_queued_messages.to_string()),
        ("sys_interval", d.sys_interval.as_secs().to_string()),
        ("max_queued_bytes", d.max_queued_bytes.to_string()),
        ("max_stored_bytes", d.max_stored_bytes.to_string()),
        ("queue_overflow", value_name(&d.queue_overflow)),
        ("queue_qos0", d.queue_qos0.to_string()),
        ("max_sessions", d.max_sessions.to_string()),
        ("max_subscriptions", d.max_subscriptions.to_string()),
        ("fsync", value_name(&d.fsync)),
        (
            "fsync_interval_ms",
            d.fsync_interval.as_millis().to_string(),
        ),
        ("segment_size", d.segment_size.to_string()),
        ("write_timeout", d.write_timeout.as_secs().to_string()),
        (
            "max_keepalive",
            d.max_keepalive
                .map_or("0 (no cap)".into(), |v| v.to_string()),
        ),
        (
            "connack_debug_properties",
            d.connack_debug_properties.to_string(),
        ),
        ("node", "none (a single broker, not in a cluster)".into()),
        ("advertise", "the slot map's address for this node".into()),
        ("slot_map", "none (needed with --node)".into()),
        (
            "nats",
            "none (no NATS bridge: nothing crosses to other nodes)".into(),
        ),
        (
            "nats_replicas",
            "3 when the NATS server is in a cluster, else 1".into(),
        ),
    ]
}

/// The name a value of a `--flag VALUE` enum is given by.
fn value_name(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
