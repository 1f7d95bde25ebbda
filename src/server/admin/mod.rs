//! The admin HTTP API (`/api/v1`, JSON) and `/metrics`, served by hyper 1 (HTTP/1.1) on an
//! extra glommio executor of its own, unpinned, so that no core that serves clients is
//! disturbed; it asks the cores what they hold over channels ([`cores`]) and never reads
//! their state itself.
//!
//! - `api.rs`: the routes and their JSON; `sessions_api.rs`: those for a session's
//!   subscriptions and queue, `/publish` and `/settings`.
//! - `cores.rs`: the questions to the cores and how a core answers; `changes.rs`: how a
//!   core carries out the changes asked of it (subscribe, publish, settings).
//! - `metrics.rs`: the Prometheus text exposition.
//! - `dashboard.rs`: the dashboard page (`dashboard/`: HTML, JavaScript, CSS), compiled in.
//! - API keys (`key:secret` lines, HTTP Basic) are `auth::ApiKeys`, read by `config`.
//!
//! With `admin_tls_cert`/`admin_tls_key` it speaks HTTPS only, through the same TLS adapter
//! as the MQTT listeners (`server::tls`); the handshake runs inside the connection's first
//! reads on this executor, never on a core, and SIGHUP swaps the certificate for new
//! connections as it does for the listeners.
//!
//! It runs when `admin_keys_file` is set (every request must then carry a key) or
//! `admin_allow_anonymous` is true, which the configuration allows on a loopback address
//! only. Invariant: a request is answered from what the cores answered; nothing here
//! caches sessions.

mod api;
mod changes;
pub mod cores;
mod dashboard;
mod metrics;
mod sessions_api;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::{LocalExecutorBuilder, Placement};

use super::tls::TlsStream;
use crate::auth::ApiKeys;
use crate::config::{Identity, Settings, TlsListener};
use cores::Ask;

/// What the admin executor needs from the broker.
pub struct Admin {
    pub cores: Vec<flume::Sender<Ask>>,
    /// `None`: requests need no key (`admin_allow_anonymous`).
    pub keys: Option<Arc<ApiKeys>>,
    pub started: std::time::Instant,
    /// The run-time settings in force, and those changed at run time (kept in the data
    /// directory: `config::settings`). Only `PUT /api/v1/settings` changes them.
    pub settings: RefCell<(Settings, serde_json::Map<String, serde_json::Value>)>,
    pub data_dir: PathBuf,
    /// `Some`: connections speak TLS with the certificate in force when they are accepted.
    pub tls: Option<Arc<TlsListener>>,
    /// `admin_idle_timeout`.
    pub idle: Duration,
}

/// Binds `addr` and starts the admin executor; returns the address bound.
pub fn start(addr: SocketAddr, admin: Admin) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (admin_listen)"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let fd = listener.into_raw_fd();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("berth-admin")
        .io_memory(256 << 10)
        .ring_depth(128)
        .spawn(move || async move {
            // SAFETY: `fd` is the bound, listening, nonblocking socket taken above.
            let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
            serve(listener, Rc::new(admin)).await;
        })
        .map_err(|e| anyhow::anyhow!("cannot start the admin executor: {e}"))?;
    Ok(bound)
}

async fn serve(listener: glommio::net::TcpListener, admin: Rc<Admin>) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin API: accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        glommio::spawn_local(async move {
            let served = match &admin.tls {
                None => serve_connection(Io::new(stream, admin.idle), admin.clone()).await,
                Some(tls) => match TlsStream::accept(stream, tls.current(), Identity::None) {
                    Ok(stream) => {
                        serve_connection(Io::new(stream, admin.idle), admin.clone()).await
                    }
                    Err(error) => {
                        tracing::warn!(%error, "admin API: cannot start a TLS session");
                        return;
                    }
                },
            };
            if let Err(error) = served {
                tracing::debug!(%error, "admin API: connection ended with an error");
            }
        })
        .detach();
    }
}

/// Serves HTTP/1.1 requests on one connection until it closes or stays silent for
/// `admin_idle_timeout` while a read waits on it: a request's head, the next request on a
/// kept-alive connection, or a TLS handshake that never finishes. hyper times reads only
/// with a `Send` timer, which glommio's are not, so `Io` does it.
async fn serve_connection<S>(io: Io<S>, admin: Rc<Admin>) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let service = hyper::service::service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, std::convert::Infallible>(api::handle(&admin, request).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await
}

/// A glommio socket (plain or TLS) as hyper's I/O: reads go through a small buffer of their
/// own so that no uninitialised memory is handed to the socket (no `unsafe`), and a read
/// that has waited `idle` for its first byte fails with `TimedOut`, ending the connection.
struct Io<S> {
    stream: S,
    idle: Duration,
    deadline: Option<glommio::timer::Timer>,
}

impl<S> Io<S> {
    fn new(stream: S, idle: Duration) -> Io<S> {
        Io {
            stream,
            idle,
            deadline: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> hyper::rt::Read for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let want = buf.remaining().min(chunk.len());
        match Pin::new(&mut self.stream).poll_read(cx, &mut chunk[..want]) {
            Poll::Ready(read) => {
                self.deadline = None;
                buf.put_slice(&chunk[..read?]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let idle = self.idle;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| glommio::timer::Timer::new(idle));
                ready!(Pin::new(deadline).poll(cx));
                self.deadline = None;
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> hyper::rt::Write for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
