//! What one TLS handshake costs the server: the CPU time rustls (ring provider, as berth
//! builds it) spends in the server's `process_new_packets` and `write_tls` calls for one
//! full handshake, which is what runs on a core's executor when a client connects to a TLS
//! listener. Client and server talk through memory, so no socket time is counted, and only
//! the server's calls are timed.
//!
//! Keys: ECDSA P-256 (rcgen) and, when the `openssl` CLI is present, RSA 2048; each over
//! TLS 1.3 and TLS 1.2. No session resumption (a storm of first connections).
//!
//! Run: `cargo bench --bench tls_handshake`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn configs(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    // Every handshake is a full one, as after a broker restart.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Moves everything `from` has to send into `to`; returns the server time it took when the
/// server is the side that processes or writes.
fn transfer(from: &mut dyn Side, to: &mut dyn Side) -> Duration {
    let mut spent = Duration::ZERO;
    let mut wire = Vec::new();
    let started = Instant::now();
    while from.wants_write() {
        from.write_tls(&mut wire);
    }
    if from.is_server() {
        spent += started.elapsed();
    }
    let mut slice = &wire[..];
    let started = Instant::now();
    while !slice.is_empty() {
        to.read_tls(&mut slice);
        to.process();
    }
    if to.is_server() {
        spent += started.elapsed();
    }
    spent
}

trait Side {
    fn is_server(&self) -> bool;
    fn wants_write(&self) -> bool;
    fn write_tls(&mut self, wire: &mut Vec<u8>);
    fn read_tls(&mut self, wire: &mut &[u8]);
    fn process(&mut self);
    fn handshaking(&self) -> bool;
}

macro_rules! side {
    ($t:ty, $server:expr) => {
        impl Side for $t {
            fn is_server(&self) -> bool {
                $server
            }
            fn wants_write(&self) -> bool {
                (**self).wants_write()
            }
            fn write_tls(&mut self, wire: &mut Vec<u8>) {
                (**self).write_tls(wire).unwrap();
            }
            fn read_tls(&mut self, wire: &mut &[u8]) {
                (**self).read_tls(wire).unwrap();
            }
            fn process(&mut self) {
                (**self).process_new_packets().unwrap();
            }
            fn handshaking(&self) -> bool {
                (**self).is_handshaking()
            }
        }
    };
}
side!(ServerConnection, true);
side!(ClientConnection, false);

fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Duration {
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let started = Instant::now();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut spent = started.elapsed();
    while c.handshaking() || s.handshaking() {
        spent += transfer(&mut c, &mut s);
        spent += transfer(&mut s, &mut c);
        spent += transfer(&mut c, &mut s);
    }
    spent
}

fn rsa_key() -> Option<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    // ring cannot make RSA keys: openssl makes one, rcgen signs its certificate with it.
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let pem = String::from_utf8(out.stdout).ok()?;
    let key = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).ok()?;
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).ok()?;
    let cert = params.self_signed(&key).ok()?;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some((CertificateDer::from(cert.der().to_vec()), der))
}

fn main() {
    let ecdsa = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut keys = vec![(
        "ecdsa-p256",
        CertificateDer::from(ecdsa.cert.der().to_vec()),
        PrivateKeyDer::from_pem_slice(ecdsa.key_pair.serialize_pem().as_bytes()).unwrap(),
    )];
    match rsa_key() {
        Some((cert, key)) => keys.push(("rsa-2048", cert, key)),
        None => println!("openssl not found: RSA not measured"),
    }
    const ROUNDS: u32 = 500;
    for (name, cert, key) in keys {
        for (label, version) in [
            ("TLS1.3", &rustls::version::TLS13),
            ("TLS1.2", &rustls::version::TLS12),
        ] {
            let (server, client) = configs(cert.clone(), key.clone_key(), version);
            for _ in 0..20 {
                handshake(&server, &client);
            }
            let mut times: Vec<Duration> =
                (0..ROUNDS).map(|_| handshake(&server, &client)).collect();
            times.sort();
            let mean = times.iter().sum::<Duration>() / ROUNDS;
            println!(
                "{name} {label}: server CPU per handshake mean {:.0} us, p50 {:.0} us, p99 {:.0} us ({:.0} handshakes/s per core)",
                mean.as_secs_f64() * 1e6,
                times[times.len() / 2].as_secs_f64() * 1e6,
                times[times.len() * 99 / 100].as_secs_f64() * 1e6,
                1.0 / mean.as_secs_f64()
            );
        }
    }
}
