//! How a connection's bytes travel: plain TCP, TLS (rustls with the ring provider, through
//! tokio-rustls), MQTT over WebSocket, or WebSocket over TLS (wss). A [`Transport`] is built
//! once per run from the options and lays its layers over each connection's TCP socket.
//!
//! TLS session resumption is off unless asked for, so every connection of a run is a full
//! handshake: the cost a storm of devices that come back without a ticket puts on a broker.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::conn::Failure;
use crate::ws::{self, Keys, WsStream};

/// Any stream a connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection's stream: TCP as it is (so a publisher splits it into halves without a
/// lock between them, as before TLS), or layers over it.
pub enum Stream {
    Tcp(TcpStream),
    Layered(Box<dyn Io>),
}

/// The halves of a split stream, for a publisher's reader and writer tasks.
pub type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
pub type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

impl Stream {
    pub fn io(&mut self) -> &mut dyn Io {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::Layered(layers) => layers.as_mut(),
        }
    }

    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Layered(layers) => {
                let (r, w) = tokio::io::split(layers);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// The TLS options of a run.
#[derive(Debug, Clone, Copy)]
pub struct TlsOptions<'a> {
    /// PEM file of the CA certificates to verify the broker's certificate against.
    pub cafile: Option<&'a Path>,
    /// Accept any certificate (handshake signatures are still checked).
    pub insecure: bool,
    /// Keep TLS sessions and resume them on reconnect.
    pub resume: bool,
}

/// The layers every connection of a run gets over its TCP socket.
#[derive(Clone, Default)]
pub struct Transport {
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// WebSocket: the HTTP path, and the Host header (host:port).
    ws: Option<(String, String)>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Transport {
    /// TLS when `tls` is given, WebSocket on `ws_path` when given, both for wss.
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<TlsOptions<'_>>,
        ws_path: Option<&str>,
    ) -> anyhow::Result<Transport> {
        let tls = match tls {
            None => None,
            Some(options) => {
                let name = ServerName::try_from(host.to_string())
                    .with_context(|| format!("{host} is not a TLS server name"))?;
                Some((TlsConnector::from(Arc::new(client_config(options)?)), name))
            }
        };
        let ws = match ws_path {
            Some(path) if !path.starts_with('/') => {
                anyhow::bail!("--ws takes an HTTP path such as /mqtt, not {path:?}")
            }
            Some(path) => Some((path.to_string(), format!("{host}:{port}"))),
            None => None,
        };
        Ok(Transport { tls, ws })
    }

    /// `tcp`, `tls`, `ws` or `wss`, as the listener tables name them.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// Lays the TLS handshake and the WebSocket upgrade over `tcp`; `seed` varies the
    /// WebSocket keys between connections.
    pub async fn open(&self, tcp: TcpStream, seed: u64) -> Result<Stream, Failure> {
        let stream = match &self.tls {
            None => Stream::Tcp(tcp),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::io("tls_error", e))?;
                Stream::Layered(Box::new(tls))
            }
        };
        let Some((path, host)) = &self.ws else {
            return Ok(stream);
        };
        let mut inner: Box<dyn Io> = match stream {
            Stream::Tcp(tcp) => Box::new(tcp),
            Stream::Layered(layers) => layers,
        };
        let mut keys = Keys::new(seed ^ crate::conn::now_ns());
        let key = keys.handshake_key();
        let fail = |e| Failure::io("ws_handshake", e);
        inner
            .write_all(ws::request(host, path, &key).as_bytes())
            .await
            .map_err(fail)?;
        inner.flush().await.map_err(fail)?;
        let mut head = Vec::with_capacity(512);
        loop {
            let mut chunk = [0u8; 1024];
            let n = inner.read(&mut chunk).await.map_err(fail)?;
            if n == 0 {
                return Err(Failure::new("ws_handshake", "closed during the upgrade"));
            }
            head.extend_from_slice(&chunk[..n]);
            match ws::response(&head, &key) {
                Ok(None) => continue,
                Ok(Some(consumed)) => {
                    let ws = WsStream::new(inner, &head[consumed..], keys);
                    return Ok(Stream::Layered(Box::new(ws)));
                }
                Err(why) => return Err(Failure::new("ws_handshake", why)),
            }
        }
    }
}

fn client_config(options: TlsOptions<'_>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if options.insecure {
        let verifier = Unverified(provider.signature_verification_algorithms);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let path = options.cafile.context(
            "--tls needs --cafile FILE to verify the broker's certificate, or --insecure",
        )?;
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("--cafile {}", path.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("--cafile {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("--cafile {}", path.display()))?;
        }
        if roots.is_empty() {
            anyhow::bail!("--cafile {}: no certificate in it", path.display());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if !options.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

/// `--insecure`: any certificate chain is taken, but the handshake's signatures are
/// checked, so the handshake costs what a verifying client's costs minus the chain.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
