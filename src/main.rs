//! The `berth` binary: parse flags, load config, set up logging (reloadable on SIGHUP),
//! start the cores.

use std::io::Write;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

use berth::config::{Args, Config};
use berth::server::Reload;

fn main() -> std::process::ExitCode {
    // `berth passwd ...` writes password files; everything else runs the broker.
    // `berth cluster ...` writes a cluster's HAProxy map and configuration.
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("passwd") => {
            return match berth::passwd::main(argv) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth passwd: error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Some("cluster") => {
            return match berth::cluster_command::main(argv) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth cluster: error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        _ => {}
    }
    let args = Args::parse_showing_defaults();
    let config = match Config::from_args(args.clone()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // `Config` has checked the level already (config::log_filter).
    let (filter, level) = reload::Layer::new(filter_for(&config.log));
    use std::io::IsTerminal;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let mut reload = Reload::new(args);
    reload.on_reload("log", move |config| {
        if let Err(error) = level.reload(filter_for(&config.log)) {
            tracing::error!(%error, "cannot change the log level");
        }
    });

    let cores = config.cores;
    // One line per listener: `berth listening on ADDR` for plain TCP, `... ADDR (tls)` for
    // the others. The others come first, so that a reader that stops at the first plain line
    // (as tests and scripts do) has seen them all.
    let result = berth::server::run(config, reload, |bound| {
        let mut stdout = std::io::stdout().lock();
        let (plain, other): (Vec<_>, Vec<_>) = bound.iter().partition(|(_, kind)| *kind == "tcp");
        for (addr, kind) in other.into_iter().chain(plain) {
            tracing::info!(%addr, transport = kind, cores, "ready");
            let _ = match kind {
                "tcp" => writeln!(stdout, "berth listening on {addr}"),
                _ => writeln!(stdout, "berth listening on {addr} ({kind})"),
            };
        }
        let _ = stdout.flush();
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn filter_for(log: &str) -> EnvFilter {
    EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info"))
}
