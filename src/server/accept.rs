//! Each core's accept loop: admission (`limits`), then the listener's transport (TLS
//! handshake, WebSocket upgrade) before the CONNECT is read (`connection::accepted`).

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use super::local::Core;
use super::tls::TlsStream;
use crate::config::ListenerTransport;

/// Accepts connections forever, backing off while the process is out of descriptors
/// (accept fails at once with EMFILE then, and retrying at once would spin). A ws or wss
/// listener's connections first upgrade to WebSocket on its path.
/// `index`: the listener's place in the configuration (its `max_connection_rate`).
pub async fn accept_loop(
    core: Rc<Core>,
    listener: TcpListener,
    transport: ListenerTransport,
    index: usize,
) {
    let mut backoff = Duration::from_millis(1);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                backoff = Duration::from_millis(1);
                core.stats.accepted.set(core.stats.accepted.get() + 1);
                // Over `max_connection_rate` or `max_connections`: closed unread (`limits`).
                let Some(slot) = core.limits.admit(std::time::Instant::now(), index) else {
                    drop(stream);
                    continue;
                };
                use super::connection::accepted;
                use super::websocket::accepted as upgraded;
                match &transport {
                    ListenerTransport::Tcp => {
                        glommio::spawn_local(accepted(core.clone(), stream, slot)).detach();
                    }
                    ListenerTransport::Ws { path } => {
                        let path: Rc<str> = Rc::from(&**path);
                        glommio::spawn_local(upgraded(core.clone(), stream, path, slot)).detach();
                    }
                    // The certificates in force now: a reload changes them for new clients.
                    ListenerTransport::Tls(tls) | ListenerTransport::Wss { tls, .. } => {
                        match TlsStream::accept(stream, tls.current(), tls.identity) {
                            Ok(stream) => match &transport {
                                ListenerTransport::Wss { path, .. } => {
                                    let path: Rc<str> = Rc::from(&**path);
                                    let upgrade = upgraded(core.clone(), stream, path, slot);
                                    glommio::spawn_local(upgrade).detach();
                                }
                                _ => {
                                    let accepted = accepted(core.clone(), stream, slot);
                                    glommio::spawn_local(accepted).detach();
                                }
                            },
                            Err(e) => {
                                tracing::warn!(core = %core.id, error = %e, "cannot start TLS")
                            }
                        }
                    }
                }
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) {
                    tracing::warn!(core = %core.id, error = %e, backoff_ms = backoff.as_millis() as u64, "accept: out of resources, backing off");
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                } else {
                    tracing::debug!(core = %core.id, error = %e, "accept failed");
                }
            }
        }
    }
}
