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
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::ApiKeys;
use crate::config::Settings;
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
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(&admin, request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(Io(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "admin API: connection ended with an error");
            }
        })
        .detach();
    }
}

/// A glommio socket as hyper's I/O: reads go through a small buffer of their own so that no
/// uninitialised memory is handed to the socket (no `unsafe`).
struct Io(TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let want = buf.remaining().min(chunk.len());
        let read = ready!(Pin::new(&mut self.0).poll_read(cx, &mut chunk[..want]))?;
        buf.put_slice(&chunk[..read]);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
