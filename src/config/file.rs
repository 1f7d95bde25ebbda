//! The TOML config file: its keys, how it is read, and how its values are laid over the
//! defaults. `deny_unknown_fields` turns a typo into an error; a parse error names the file
//! and the offending line (and so its key).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::cluster::ClusterTable;
use super::limits::LimitsFile;
use super::listener::ListenerTable;
use super::{keepalive_cap, Config, ConfigError, FsyncMode, Listener, Overflow};

/// The keys a config file may hold. `deny_unknown_fields` turns a typo into an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    listen: Option<String>,
    cores: Option<usize>,
    data_dir: Option<PathBuf>,
    log: Option<String>,
    password_file: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    acl_file: Option<PathBuf>,
    session_ownership: Option<bool>,
    admin_listen: Option<String>,
    admin_keys_file: Option<PathBuf>,
    admin_allow_anonymous: Option<bool>,
    admin_tls_cert: Option<PathBuf>,
    admin_tls_key: Option<PathBuf>,
    admin_idle_timeout: Option<u64>,
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
    // The limits (`limits::LimitsFile`).
    max_connections: Option<i64>,
    max_connection_rate: Option<u32>,
    max_publish_rate: Option<u32>,
    max_topic_levels: Option<usize>,
    max_clientid_len: Option<usize>,
    ban_file: Option<PathBuf>,
    flapping_max_disconnects: Option<u32>,
    flapping_window: Option<u64>,
    flapping_ban: Option<u64>,
    fsync: Option<FsyncMode>,
    fsync_interval_ms: Option<u64>,
    segment_size: Option<u64>,
    sys_interval: Option<u64>,
    write_timeout: Option<u64>,
    max_keepalive: Option<u16>,
    connack_debug_properties: Option<bool>,
    /// `[[listener]]` tables: listeners beside (or instead of) `listen`.
    #[serde(default)]
    listener: Vec<ListenerTable>,
    /// `[cluster]`: this node in a cluster (`cluster`).
    cluster: Option<ClusterTable>,
}

impl FileConfig {
    /// Lays the keys the file holds over `config`; `path` is the file, named in errors.
    /// Returns the listeners its `[[listener]]` tables add (see `listener`).
    pub(super) fn apply(
        self,
        config: &mut Config,
        path: &Path,
    ) -> Result<Vec<Listener>, ConfigError> {
        let file = self;
        let invalid = |key, message: String| ConfigError::Invalid {
            key,
            path: Some(path.into()),
            message,
        };

        if let Some(listen) = file.listen {
            config.listen = Some(super::listen_address(&listen).map_err(|e| invalid("listen", e))?);
        }
        if let Some(v) = file.cores {
            config.cores = v;
        }
        if let Some(v) = file.password_file {
            // Relative to the config file, as a user reading the file would expect.
            config.password_file = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        config.allow_anonymous = file.allow_anonymous.or(config.allow_anonymous);
        if let Some(v) = file.acl_file {
            config.acl_file = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        config.session_ownership = file.session_ownership.unwrap_or(config.session_ownership);
        if let Some(v) = &file.admin_listen {
            config.admin_listen =
                super::listen_address(v).map_err(|e| invalid("admin_listen", e))?;
        }
        if let Some(v) = file.admin_keys_file {
            config.admin_keys_file = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        config.admin_allow_anonymous = file
            .admin_allow_anonymous
            .unwrap_or(config.admin_allow_anonymous);
        if let Some(v) = file.admin_idle_timeout {
            config.admin_idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.admin_tls_cert {
            config.admin_tls_cert = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        if let Some(v) = file.admin_tls_key {
            config.admin_tls_key = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
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
        config.connack_debug_properties = file
            .connack_debug_properties
            .unwrap_or(config.connack_debug_properties);
        let limits = LimitsFile {
            max_connections: file.max_connections,
            max_connection_rate: file.max_connection_rate,
            max_publish_rate: file.max_publish_rate,
            max_topic_levels: file.max_topic_levels,
            max_clientid_len: file.max_clientid_len,
            ban_file: file.ban_file,
            flapping_max_disconnects: file.flapping_max_disconnects,
            flapping_window: file.flapping_window,
            flapping_ban: file.flapping_ban,
        };
        if let Some(table) = file.cluster {
            table.apply(&mut config.cluster, path);
        }
        limits
            .apply(&mut config.limits, path)
            .map_err(|(key, message)| invalid(key, message))?;
        file.listener
            .into_iter()
            .enumerate()
            .map(|(i, table)| table.build(i + 1, path))
            .collect()
    }
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
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
