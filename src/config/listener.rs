//! Listeners: the addresses berth accepts on and the transport each speaks (`[[listener]]`
//! tables in the config file, Mosquitto's `listener` blocks).
//!
//! How `listen` and `[[listener]]` combine: `listen` (the key or the `--listen` flag, the
//! flag winning) is a plain TCP listener and comes first; each `[[listener]]` table adds
//! one more, in the order written. With neither, berth listens on plain TCP at
//! 127.0.0.1:1883 as it always has; a file with only `[[listener]]` tables listens only
//! where they say (as Mosquitto drops its default listener once one is configured).
//! The same address twice is an error (port 0 excepted: each picks its own port).
//!
//! Conventional ports: 1883 (tcp), 8883 (tls), 8083 with path `/mqtt` (ws), 8084 (wss).
//! A ws or wss listener upgrades on `path` (default `/mqtt`; another path gets 404); wss is
//! WebSocket inside TLS and takes the tls keys.
//!
//! A TLS listener's certificates are read here, when the configuration is read (at start
//! and on SIGHUP), so that a missing or unreadable file is an error naming the listener,
//! the key and the file, and a reload with a bad file changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::tls::{self, TlsListener};
use super::ConfigError;

/// One address berth accepts on, and what it speaks there.
#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub transport: ListenerTransport,
    /// This listener's `max_connection_rate`, when its table gives one (else the key's).
    pub max_connection_rate: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum ListenerTransport {
    Tcp,
    /// Shared with the running server, which takes new connections' settings from it; a
    /// reload swaps the certificates inside (see [`TlsListener::replace`]).
    Tls(Arc<TlsListener>),
    /// MQTT over WebSocket, upgrading on `path`.
    Ws {
        path: Arc<str>,
    },
    /// MQTT over WebSocket over TLS.
    Wss {
        tls: Arc<TlsListener>,
        path: Arc<str>,
    },
}

/// The path a ws or wss listener upgrades on when the table gives none.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

impl Listener {
    pub fn plain(address: SocketAddr) -> Listener {
        Listener {
            address,
            transport: ListenerTransport::Tcp,
            max_connection_rate: None,
        }
    }

    /// The transport's name as written in the config file.
    pub fn kind(&self) -> &'static str {
        match self.transport {
            ListenerTransport::Tcp => "tcp",
            ListenerTransport::Tls(_) => "tls",
            ListenerTransport::Ws { .. } => "ws",
            ListenerTransport::Wss { .. } => "wss",
        }
    }

    /// The listener's TLS settings, when it speaks TLS (tls and wss).
    pub fn tls(&self) -> Option<&Arc<TlsListener>> {
        match &self.transport {
            ListenerTransport::Tls(tls) | ListenerTransport::Wss { tls, .. } => Some(tls),
            _ => None,
        }
    }

    /// Whether every client of this listener is authenticated by its certificate.
    pub fn certificate_required(&self) -> bool {
        self.tls().is_some_and(|tls| tls.require_certificate)
    }
}

/// A `[[listener]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTable {
    address: Option<String>,
    transport: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    require_certificate: Option<bool>,
    use_identity_as_username: Option<bool>,
    use_subject_as_username: Option<bool>,
    path: Option<String>,
    max_connection_rate: Option<u32>,
}

/// Whose identity a certificate listener takes as the username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The CONNECT's own username and password count, as on a plain listener.
    None,
    /// `use_identity_as_username`: the client certificate's Common Name.
    CommonName,
    /// `use_subject_as_username`: its whole subject, as RFC 4514 writes it.
    Subject,
}

impl ListenerTable {
    /// Checks the table (the `index`th, from 1) and reads its certificates. `file` is the
    /// config file: paths in the table are relative to its directory.
    pub(super) fn build(self, index: usize, file: &Path) -> Result<Listener, ConfigError> {
        let shown = self.address.clone().unwrap_or_else(|| "?".into());
        let invalid = |key: &'static str, message: String| ConfigError::Listener {
            index,
            address: shown.clone(),
            key,
            path: Some(file.into()),
            message,
        };
        let Some(address) = &self.address else {
            return Err(invalid(
                "address",
                "is required (such as \"0.0.0.0:8883\")".into(),
            ));
        };
        let address: SocketAddr =
            super::listen_address(address).map_err(|e| invalid("address", e))?;
        let transport = self.transport.as_deref().unwrap_or("tcp");
        if self.path.is_some() && !matches!(transport, "ws" | "wss") {
            return Err(invalid(
                "path",
                "applies to ws and wss listeners only".into(),
            ));
        }
        let tls_keys = [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("ca", self.ca.is_some()),
            ("require_certificate", self.require_certificate.is_some()),
            (
                "use_identity_as_username",
                self.use_identity_as_username.is_some(),
            ),
            (
                "use_subject_as_username",
                self.use_subject_as_username.is_some(),
            ),
        ];
        let path: Arc<str> = match self.path.as_deref() {
            None => DEFAULT_WS_PATH.into(),
            Some(path) if path.starts_with('/') && !path.contains(['?', '#', ' ']) => path.into(),
            Some(path) => {
                let why = format!("`{path}` is not an HTTP path (it starts with /)");
                return Err(invalid("path", why));
            }
        };
        let kind = transport;
        let transport = match transport {
            "tcp" | "ws" => {
                if let Some((key, _)) = tls_keys.iter().find(|(_, given)| *given) {
                    return Err(invalid(
                        key,
                        format!("applies to tls and wss listeners only (this one is {kind})"),
                    ));
                }
                match kind {
                    "ws" => ListenerTransport::Ws { path },
                    _ => ListenerTransport::Tcp,
                }
            }
            "tls" | "wss" => {
                let dir = file.parent().unwrap_or(Path::new(""));
                let cert = dir.join(self.cert.ok_or_else(|| {
                    invalid("cert", "is required on a tls listener (a PEM chain)".into())
                })?);
                let key = dir.join(self.key.ok_or_else(|| {
                    invalid("key", "is required on a tls listener (a PEM key)".into())
                })?);
                let ca = self.ca.map(|ca| dir.join(ca));
                let require_certificate = self.require_certificate.unwrap_or(false);
                let identity = match (
                    self.use_identity_as_username.unwrap_or(false),
                    self.use_subject_as_username.unwrap_or(false),
                ) {
                    (true, true) => {
                        return Err(invalid(
                            "use_subject_as_username",
                            "cannot be set with use_identity_as_username".into(),
                        ))
                    }
                    (true, false) => Identity::CommonName,
                    (false, true) => Identity::Subject,
                    (false, false) => Identity::None,
                };
                if identity != Identity::None && !require_certificate {
                    let key = match identity {
                        Identity::CommonName => "use_identity_as_username",
                        _ => "use_subject_as_username",
                    };
                    return Err(invalid(key, "needs require_certificate = true".into()));
                }
                if require_certificate && ca.is_none() {
                    return Err(invalid(
                        "require_certificate",
                        "needs `ca`: the CA that signs client certificates".into(),
                    ));
                }
                let files = tls::Files {
                    cert,
                    key,
                    ca,
                    require_certificate,
                };
                let listener = TlsListener::load(files, identity)
                    .map_err(|(key, message)| invalid(key, message))?;
                let tls = Arc::new(listener);
                match kind {
                    "wss" => ListenerTransport::Wss { tls, path },
                    _ => ListenerTransport::Tls(tls),
                }
            }
            other => {
                return Err(invalid(
                    "transport",
                    format!("unknown transport `{other}` (tcp, tls, ws or wss)"),
                ))
            }
        };
        Ok(Listener {
            address,
            transport,
            max_connection_rate: self.max_connection_rate,
        })
    }
}

/// Checks that no address is listened on twice (port 0 picks a port per listener).
/// `first_is_listen`: the first listener came from `listen`, not from a table.
pub(super) fn check_distinct(
    listeners: &[Listener],
    first_is_listen: bool,
    file: Option<&Path>,
) -> Result<(), ConfigError> {
    for (i, listener) in listeners.iter().enumerate() {
        if listener.address.port() == 0 {
            continue;
        }
        if let Some(j) = listeners[..i]
            .iter()
            .position(|l| l.address == listener.address)
        {
            let earlier = if first_is_listen && j == 0 {
                "the `listen` address".to_string()
            } else {
                format!("listener {}'s address too", table_index(j, first_is_listen))
            };
            return Err(ConfigError::Listener {
                index: table_index(i, first_is_listen),
                address: listener.address.to_string(),
                key: "address",
                path: file.map(Into::into),
                message: format!("{} is {earlier}", listener.address),
            });
        }
    }
    Ok(())
}

/// The number a listener goes by in errors: its table's place in the file, from 1.
fn table_index(position: usize, first_is_listen: bool) -> usize {
    if first_is_listen {
        position
    } else {
        position + 1
    }
}
