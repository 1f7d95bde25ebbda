//! `berth-loadgen`: drives any MQTT 3.1.1/5.0 broker on host:port with three scenarios
//! (`resume`, `throughput`, `connect`), over TCP, TLS, WebSocket or WebSocket over TLS, and
//! reports latency percentiles, rates, errors, loss and its own CPU use, so a reader can
//! tell whether the load generator was the bottleneck.
//!
//! Packets are encoded and decoded with berth's own codec (`berth::protocol`); the runtime is
//! tokio's multi-threaded scheduler. Exit status: 0 when no error was counted, 1 otherwise
//! (an error that stops the run, such as no broker listening, is one line on stderr).

mod conn;
mod connect;
mod overlay;
mod plot;
mod publisher;
mod report;
mod resume;
mod template;
mod throughput;
mod transport;
mod ws;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use berth::protocol::{ProtocolVersion, QoS};
use bytes::Bytes;
use bytestring::ByteString;
use clap::{Parser, Subcommand, ValueEnum};

use crate::conn::Target;
use crate::transport::{TlsOptions, Transport};

#[derive(Parser, Debug)]
#[command(
    name = "berth-loadgen",
    version,
    about = "Load generator for MQTT 3.1.1/5.0 brokers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Persistent sessions, messages queued while they are offline, then a reconnect storm;
    /// measures connect -> CONNACK, -> first and -> last queued message (resume latency).
    Resume(resume::Args),
    /// Publishers and subscribers in pairs, fan-in, fan-out or a shared subscription;
    /// measures messages/s in and out and end-to-end latency.
    Throughput(throughput::Args),
    /// Connection rate, then connections held with keep-alive (or persistent sessions left
    /// offline) for the broker's memory per connection or session.
    Connect(connect::Args),
    /// Overlays the latency curves of runs saved with --json (one broker each, say) in one
    /// SVG on one scale.
    Plot(overlay::Args),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

/// Options every scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The broker's host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The broker's TCP port (its TLS or WebSocket port with --tls or --ws).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Protocol version: 3.1.1 (Clean Session 0 for persistent sessions) or 5 (Clean Start 0 +
    /// Session Expiry Interval).
    #[arg(long, value_enum, default_value = "3.1.1")]
    pub mqtt: MqttVersion,
    /// User Name every connection sends in its CONNECT.
    #[arg(long)]
    pub username: Option<String>,
    /// Password every connection sends in its CONNECT (needs --username under 3.1.1).
    #[arg(long)]
    pub password: Option<String>,
    /// Connect over TLS (rustls, TLS 1.2 or 1.3), verifying the broker's certificate against
    /// --cafile, or not at all with --insecure. With --ws: secure WebSocket (wss).
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA certificate(s) the broker's certificate must chain to (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cafile: Option<PathBuf>,
    /// Accept the broker's certificate unverified (with --tls); the handshake's signatures
    /// are still checked.
    #[arg(long, requires = "tls", conflicts_with = "cafile")]
    pub insecure: bool,
    /// Resume TLS sessions (tickets) on reconnect; off by default, so every connection
    /// costs a full handshake.
    #[arg(long, requires = "tls")]
    pub tls_resume: bool,
    /// MQTT over WebSocket: upgrade on this HTTP path (e.g. /mqtt) with subprotocol mqtt;
    /// with --tls, over TLS (wss).
    #[arg(long, value_name = "PATH")]
    pub ws: Option<String>,
    /// The broker's name, for the summary, the JSON and plot titles (e.g. mosquitto).
    #[arg(long, default_value = "broker")]
    pub broker_name: String,
    /// Spread connections over this many source addresses 127.0.0.2, 127.0.0.3, ... so
    /// ephemeral ports never run out (loopback brokers only). 0: let the kernel pick.
    #[arg(long, default_value_t = 0)]
    pub source_ips: u32,
    /// Worker threads of the load generator (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep Alive asked in CONNECT, in seconds.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Seconds without an expected packet before an exchange counts as failed.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Session Expiry Interval (seconds) asked for persistent sessions under MQTT 5.
    #[arg(long, default_value_t = 3600)]
    pub session_expiry: u32,
    /// Client identifier prefix (`%p` in topic templates; the first topic level by default).
    /// Default: unique per run. Processes that share topics (--role) must give the same one.
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// The broker's pid: its CPU seconds and RSS (from /proc) are reported.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Write every number of the run as JSON into this file (`berth-loadgen plot` reads it).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write HdrHistogram percentile-distribution files (.hgrm, values in ms) into this
    /// directory.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Draw the latency percentile curves into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl Common {
    pub fn target(&self) -> anyhow::Result<Target> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}:{}", self.host, self.port))?
            .next()
            .with_context(|| format!("{} has no address", self.host))?;
        if self.source_ips > 0 && !addr.ip().is_loopback() {
            anyhow::bail!("--source-ips binds to 127.0.0.x: only for a broker on loopback");
        }
        Ok(Target {
            addr,
            version: match self.mqtt {
                MqttVersion::V311 => ProtocolVersion::V3_1_1,
                MqttVersion::V5 => ProtocolVersion::V5,
            },
            source_ips: self.source_ips,
            keep_alive: self.keep_alive,
            timeout: Duration::from_secs_f64(self.timeout),
            session_expiry: self.session_expiry,
            username: self.username.as_deref().map(ByteString::from),
            password: self.password.clone().map(Bytes::from),
            transport: self.transport()?,
        })
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        let tls = self.tls.then_some(TlsOptions {
            cafile: self.cafile.as_deref(),
            insecure: self.insecure,
            resume: self.tls_resume,
        });
        Transport::new(&self.host, self.port, tls, self.ws.as_deref())
    }

    pub fn prefix(&self) -> String {
        self.client_prefix.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("lg{}-{}", std::process::id(), secs % 100_000)
        })
    }

    pub fn finish(&self, report: report::Report) -> anyhow::Result<u64> {
        report.finish(
            &self.broker_name,
            self.json.as_deref(),
            self.hgrm.as_deref(),
            self.plot.as_deref(),
        )
    }
}

pub fn qos_arg(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {s}"))
}

/// Raises the open-file limit to the hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as u64
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            // An expected failure (no broker there, a bad option value): one line, no
            // backtrace, exit status 1 as for counted errors.
            eprintln!("berth-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand; returns the number of errors counted.
fn run(cli: Cli) -> anyhow::Result<u64> {
    let common = match &cli.scenario {
        Scenario::Resume(a) => &a.common,
        Scenario::Throughput(a) => &a.common,
        Scenario::Connect(a) => &a.common,
        Scenario::Plot(a) => return overlay::run(a),
    };
    let threads = common.threads;
    let nofile = raise_nofile();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build()?;
    let errors = rt.block_on(async move {
        match cli.scenario {
            Scenario::Resume(a) => resume::run(a, nofile).await,
            Scenario::Throughput(a) => throughput::run(a, nofile).await,
            Scenario::Connect(a) => connect::run(a, nofile).await,
            Scenario::Plot(a) => overlay::run(&a),
        }
    });
    // Connection tasks still draining must not hold the exit up.
    rt.shutdown_timeout(Duration::from_millis(200));
    errors
}

/// The file-descriptor budget: `wanted` open connections must fit under the limit.
pub fn check_fds(wanted: usize, nofile: u64) -> anyhow::Result<()> {
    if wanted as u64 + 64 > nofile {
        anyhow::bail!(
            "{wanted} connections open at once would not fit under the open-file limit {nofile}; \
             lower --concurrency (or run several load generators)"
        );
    }
    Ok(())
}
