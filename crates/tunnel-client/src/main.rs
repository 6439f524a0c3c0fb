//! `tunnel-client` binary: configuration, signals, exit codes; the work is in the library.

#[cfg(feature = "alloc-count")]
mod alloc_count;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tunnel_client::{ClientArgs, ClientConfig, Status};

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::start();
    tunnel_protocol::heap::tune();
    // The .env first, as it may configure what follows.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("tunnel-client: ignoring .env: {e}");
        }
    }
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
    // Then the signal handlers, before anything else: from here on a Ctrl-C or SIGTERM is a
    // graceful exit (at once, if it came before the tunnel was up), never a kill half-way
    // through the start (say between creating the tunnel and being able to delete it).
    let signals = {
        let _context = runtime.enter();
        match Signals::register() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tunnel-client: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
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
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        // The first signal: leave gracefully (in-flight requests finish, the tunnel is
        // deleted). The second: leave now.
        tokio::spawn(async move {
            let mut signals = signals;
            signals.next().await;
            trigger.cancel();
            signals.next().await;
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

/// SIGINT (Ctrl-C) and SIGTERM, listened to from the moment they are registered: a signal
/// that comes before anyone waits for it is kept, not lost (nor deadly).
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
