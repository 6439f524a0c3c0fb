//! `tunnel-server` binary: configuration, logging, signals; the work is in the library.

#[cfg(feature = "alloc-count")]
mod alloc_count;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tunnel_server::config::{ServerArgs, Settings};
use tunnel_server::observe::logging;
use tunnel_server::AppState;

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::start();
    tunnel_protocol::heap::tune();
    // The .env first, as it may configure the runtime too (`TOKIO_WORKER_THREADS`).
    // A missing .env is normal; a malformed one is worth a warning.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("tunnel-server: ignoring .env: {e}");
        }
    }
    // Then the runtime and the signal handlers, before anything else: from here on a SIGTERM
    // or Ctrl-C starts a graceful shutdown (at once, if it came before the server was up), and
    // never kills the process outright half-way through its start.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tunnel-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = {
        let _context = runtime.enter();
        match Signals::register() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tunnel-server: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let args = match ServerArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let settings = match Settings::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tunnel-server: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log_guard = logging::init(settings.logging.format, settings.logging.timezone);
    match runtime.block_on(serve(settings, signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, mut signals: Signals) -> anyhow::Result<()> {
    let bind = settings.bind;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (TUNNEL_BIND)"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let metrics_listener = match settings.metrics_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (TUNNEL_METRICS_BIND)"))?,
        ),
        None => None,
    };
    let generated = settings.generated_key.clone();
    let state = Arc::new(AppState::new(settings, local));
    tracing::info!(listen = %local, public_url = %state.base_url, "tunnel-server {} ready", env!("CARGO_PKG_VERSION"));
    if let Some(key) = generated {
        let server = state
            .base_url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        println!();
        println!("  Dev mode: no TUNNEL_API_KEYS set, so this server listens on {local} only.");
        println!("  Generated API key (valid until the server stops): {key}");
        if let Some(sub) = state.urls.subdomain_url("NAME") {
            println!(
                "  Tunnels answer at {sub} (and {}): *.localhost is loopback, no DNS needed.",
                state.urls.path_url("NAME")
            );
        }
        println!();
        println!("  Expose a local service on port 3000 with:");
        println!("    tunnel-client --server {server} --api-key {key} --port 3000");
        println!("  or, from this repository:");
        println!("    cargo run --release -p tunnel-client -- --server {server} --api-key {key} --port 3000");
        println!();
    }
    let shutdown = state.shutdown.clone();
    // Lives as long as the process: the second signal exits it.
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("signal received, shutting down gracefully (again to exit at once)");
        shutdown.cancel();
        signals.next().await;
        tracing::warn!("second signal, exiting now");
        std::process::exit(130);
    });
    match metrics_listener {
        Some(metrics) => tunnel_server::run_with_metrics(listener, metrics, state).await,
        None => tunnel_server::run(listener, state).await,
    }
    Ok(())
}

/// SIGTERM and SIGINT, registered once up front (tokio registers `ctrl_c()` only when first
/// polled, which would leave a window where a signal kills the process outright).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// Resolves at the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
