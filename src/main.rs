//! The `berth` binary: parse flags, load config, start the cores.

use std::io::Write;

use clap::Parser;

use berth::config::{Args, Config};

fn main() -> std::process::ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "berth: warning: bad log filter `{}` ({e}); using `info`",
            config.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let cores = config.cores;
    let result = berth::server::run(config, |addr| {
        tracing::info!(%addr, cores, "ready");
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "berth listening on {addr}");
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
