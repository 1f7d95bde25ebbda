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
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("passwd") {
        return match berth::passwd::main(argv) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth passwd: error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
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
    let ws_path = config.ws_path.clone();
    let result = berth::server::run(config, reload, |addr, ws| {
        tracing::info!(%addr, cores, "ready");
        let mut stdout = std::io::stdout().lock();
        if let Some(ws) = ws {
            // Before the ready line, so that whoever waits for that line has this one too.
            let _ = writeln!(stdout, "berth websocket listening on {ws} path {ws_path}");
        }
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

fn filter_for(log: &str) -> EnvFilter {
    EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info"))
}
