//! `tunnel-client` binary: configuration, signals, exit codes; the work is in the library.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tunnel_client::{ClientArgs, ClientConfig, Status};

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    tunnel_protocol::heap::tune();
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("tunnel-client: ignoring .env: {e}");
        }
    }
    let args = match ClientArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let cfg = match ClientConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tunnel-client: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One thread: the client only moves bytes between one WebSocket and the local service, and
    // on a single thread no wake-up crosses threads (a futex call per request on a
    // multi-threaded runtime). Measured with bench/run.sh: +13% small requests per second.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tunnel-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.cancel();
            wait_for_signal().await;
            std::process::exit(130);
        });
        let (status, _) = tokio::sync::watch::channel(Status::Starting);
        match tunnel_client::run(cfg, shutdown, status).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunnel-client: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
