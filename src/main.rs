//! The `sortd` binary: reads settings, sets up logging, tells systemd when it
//! is ready, and runs the application until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use sd_notify::NotifyState;
use sortd::config::Config;
use sortd::startup::Application;

fn main() -> ExitCode {
    let name = env!("CARGO_PKG_NAME");
    let version = sortd::VERSION;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            println!(
                "{name} {version}\n{}\n\nUsage: {name} [--help | --version | --defaults]\n\n\
                 Settings come from the environment (the systemd unit loads /etc/default/sortd):\n\
                 {}\n\n--defaults prints the default settings as an environment file.",
                env!("CARGO_PKG_DESCRIPTION"),
                Config::environment_help()
            );
            return ExitCode::SUCCESS;
        }
        Some("--defaults") => {
            print!("{}", Config::default().to_env());
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("{name} {version}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("{name}: unknown argument {other:?}; try --help");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    // A blank RUST_LOG (`RUST_LOG=` in /etc/default/sortd) means the default.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|filter| !filter.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let mut logger = env_logger::Builder::new();
    logger.parse_filters(&filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logger.format_timestamp(None); // journald stamps every line already
    }
    logger.init();

    sortd::memory::limit_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            log::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let listen = config.listen;
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(error) => {
            log::error!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let how = if app.socket_activated() {
        "socket from systemd"
    } else {
        "SORTD_LISTEN"
    };
    log::info!(
        "sortd {} listening on {} ({how})",
        sortd::VERSION,
        app.describe_address()
    );
    notify(&[NotifyState::Ready]);
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog(timeout / 2));
    }
    app.run_until(shutdown_signal()).await;
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Pings systemd's watchdog; stops pinging only if the runtime stalls.
async fn watchdog(every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

fn notify(state: &[NotifyState]) {
    // Without NOTIFY_SOCKET (not under systemd) this does nothing.
    if let Err(error) = sd_notify::notify(state) {
        log::warn!("cannot notify systemd: {error}");
    }
}

/// Resolves on the first SIGTERM or SIGINT, and tells systemd we are stopping.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(error) => {
            log::warn!("cannot watch SIGTERM ({error}); only SIGINT stops sortd");
            tokio::signal::ctrl_c().await.ok();
        }
    }
    notify(&[NotifyState::Stopping]);
}
