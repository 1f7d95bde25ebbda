//! A TLS listener's settings: its certificate chain and key (PEM), the optional CA that
//! client certificates must chain to, and the rustls `ServerConfig` built from them.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3. The `ServerConfig` in force is swapped
//! whole on SIGHUP ([`TlsListener::replace`]): a new connection takes the one in force when
//! it is accepted, an existing one keeps the session it has (Mosquitto's behaviour). The
//! whole config is swapped rather than the key alone so that a renewed client CA applies
//! too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::listener::Identity;

/// The files a TLS listener is built from.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub require_certificate: bool,
}

#[derive(Debug)]
pub struct TlsListener {
    server: RwLock<Arc<ServerConfig>>,
    pub identity: Identity,
    pub require_certificate: bool,
}

/// A config key and what is wrong with its file.
type KeyError = (&'static str, String);

impl TlsListener {
    pub fn load(files: Files, identity: Identity) -> Result<TlsListener, KeyError> {
        Ok(TlsListener {
            server: RwLock::new(Arc::new(server_config(&files)?)),
            identity,
            require_certificate: files.require_certificate,
        })
    }

    /// The settings a connection accepted now gets.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.server.read() {
            Ok(server) => server.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts the settings `newer` holds in force for new connections (a reload).
    pub fn replace(&self, newer: &TlsListener) {
        let server = newer.current();
        match self.server.write() {
            Ok(mut current) => *current = server,
            Err(poisoned) => *poisoned.into_inner() = server,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &Files) -> Result<ServerConfig, KeyError> {
    let chain = certificates("cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key", &files.key)?).map_err(|e| {
        (
            "key",
            format!("{}: no PEM private key: {e}", files.key.display()),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("cert", e.to_string()))?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| ("ca", format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            // Without require_certificate a client may still present one, and it is checked.
            let verifier = if files.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| ("ca", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        (
            "key",
            format!(
                "{} does not fit {}: {e}",
                files.key.display(),
                files.cert.display()
            ),
        )
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| (key, format!("cannot read {}: {e}", path.display())))
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let pem = read(key, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (key, format!("{}: bad PEM: {e}", path.display())))?;
    if chain.is_empty() {
        return Err((key, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(chain)
}
