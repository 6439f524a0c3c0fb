//! `tunnel-client` binary: configuration, signals, exit codes; the work is in the library.

#[cfg(feature = "alloc-count")]
mod alloc_count;

/// mimalloc instead of glibc's malloc: glibc's took about a fifth of the instructions of a
/// small request (callgrind, 20-40 allocations per request on each side); its options are set
/// in `tunnel_protocol::heap` and `.cargo/config.toml` (memory), which also says why its
/// own `GlobalAlloc` rather than the `mimalloc` crate's. Not in the
/// `alloc-count` build, which installs its counting allocator instead.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static ALLOCATOR: tunnel_protocol::heap::MiMalloc = tunnel_protocol::heap::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tunnel_client::config::{
    Cli, Command, ConfigCommand, ConnectArgs, FileArgs, ServerArgs, ServerUrl, StartArgs,
};
use tunnel_client::display::Printer;
use tunnel_client::file::{self, Overrides, Proto};
use tunnel_client::fleet::{self, FleetOptions, Selection};
use tunnel_client::sources::{self, Filled, Given};
use tunnel_client::tcp::consume::{self, FrontDoor};
use tunnel_client::{ClientArgs, ClientConfig, Status};

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::start();
    tunnel_protocol::heap::tune(tunnel_protocol::heap::CLIENT_PURGE_DELAY_MS);
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
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Where clap found `--server` and `--api-key` (flag or environment), for the line that
    // says where they came from.
    let given = givens(matches.subcommand().map_or(&matches, |(_, m)| m));
    match cli.command {
        None => http_tunnel(cli.http, given, &runtime, signals),
        Some(Command::Http(args)) => http_tunnel(args, given, &runtime, signals),
        Some(Command::Start(args)) => start(args, &runtime, signals),
        Some(Command::Config(ConfigCommand::Check(args))) => check(&args),
        Some(Command::Tcp(mut args)) => match fill(&mut args.server, given) {
            Ok(filled) => {
                let cfg = ClientConfig::from_tcp_args(args);
                one_tunnel(cfg, Some(&filled), &runtime, signals)
            }
            Err(code) => code,
        },
        Some(Command::Connect(args)) => connect(args, &runtime, signals),
    }
}

/// How clap got `--server` and `--api-key` (neither, for a subcommand without them).
fn givens(matches: &clap::ArgMatches) -> (Given, Given) {
    let how = |id: &str| {
        // `value_source` panics (debug builds) for an id the command does not have.
        let source = match matches.try_get_raw(id) {
            Ok(Some(_)) => matches.value_source(id),
            _ => None,
        };
        match source {
            Some(clap::parser::ValueSource::CommandLine) => Given::Flag,
            Some(clap::parser::ValueSource::EnvVariable) => Given::Env,
            _ => Given::No,
        }
    };
    (how("server"), how("api_key"))
}

/// The server and key filled in from the file and the dev key (exit 64 if they cannot be).
fn fill(args: &mut ServerArgs, (server, key): (Given, Given)) -> Result<Filled, ExitCode> {
    sources::fill(args, server, key).map_err(|e| {
        eprintln!("tunnel-client: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `tunnel-client [FLAGS]`, `tunnel-client 3000`, `tunnel-client http 3000`.
fn http_tunnel(
    mut args: ClientArgs,
    given: (Given, Given),
    runtime: &Runtime,
    signals: Signals,
) -> ExitCode {
    // The port (and name) first: a usage error says so before anything is looked up.
    if args.local_port.or(args.port).is_none() {
        return one_tunnel(ClientConfig::from_args(args), None, runtime, signals);
    }
    match fill(&mut args.server, given) {
        Ok(filled) => one_tunnel(
            ClientConfig::from_args(args),
            Some(&filled),
            runtime,
            signals,
        ),
        Err(code) => code,
    }
}

/// Logs to stderr, `warn` unless `RUST_LOG` says otherwise.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The shutdown token that the first SIGINT/SIGTERM cancels (in-flight requests finish, the
/// tunnels are deleted); the second leaves at once.
fn shutdown_on(signals: Signals) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let mut signals = signals;
        signals.next().await;
        trigger.cancel();
        signals.next().await;
        std::process::exit(130);
    });
    shutdown
}

/// `tunnel-client [FLAGS]` or `tunnel-client tcp PORT`: the one tunnel the flags describe.
fn one_tunnel(
    cfg: Result<ClientConfig, tunnel_client::config::ConfigError>,
    filled: Option<&Filled>,
    runtime: &Runtime,
    signals: Signals,
) -> ExitCode {
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tunnel-client: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logs();
    if let Some(filled) = filled {
        let printer = Printer::new(true);
        for line in filled.lines() {
            printer.info(&line);
        }
    }
    runtime.block_on(async {
        let shutdown = shutdown_on(signals);
        let (status, _) = tokio::sync::watch::channel(Status::Starting);
        match tunnel_client::run(cfg, shutdown, status).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunnel-client: {e}");
                let unauthorized = matches!(
                    e,
                    tunnel_client::ClientError::Api(tunnel_client::control::ApiError::Unauthorized)
                );
                if let Some(hint) = filled.and_then(Filled::unauthorized_hint) {
                    if unauthorized {
                        eprintln!("tunnel-client: {hint}");
                    }
                }
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// `tunnel-client connect ID --listen ADDR`: the local listener of a TCP tunnel's front door,
/// until Ctrl-C.
fn connect(args: ConnectArgs, runtime: &Runtime, signals: Signals) -> ExitCode {
    let server = match ServerUrl::parse(&args.server) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tunnel-client: invalid TUNNEL_SERVER: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let credential = args.token.or(args.api_key).unwrap_or_default();
    if credential.trim().is_empty() {
        eprintln!("tunnel-client: invalid TUNNEL_ACCESS_TOKEN: empty (or give --api-key)");
        return ExitCode::from(EXIT_CONFIG);
    }
    let door = FrontDoor::new(&server, &args.tunnel_id, credential.trim());
    let printer = Printer::new(!args.quiet);
    init_logs();
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tunnel-client: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let local = listener.local_addr().map_or(args.listen, |a| a);
        printer.info(&format!(
            "listening on {local}: connections go to TCP tunnel {} ({})",
            args.tunnel_id, door.url
        ));
        let shutdown = shutdown_on(signals);
        consume::serve(listener, door, printer, shutdown).await;
        ExitCode::SUCCESS
    })
}

/// The config file's path: `--config`, or the default place.
fn config_path(args: &FileArgs) -> Result<PathBuf, String> {
    args.config
        .clone()
        .or_else(file::default_path)
        .ok_or_else(|| "no config file: give --config PATH (no config directory is known)".into())
}

/// `tunnel-client start`: tunnels of the config file, followed while it changes.
fn start(args: StartArgs, runtime: &Runtime, signals: Signals) -> ExitCode {
    let overrides = Overrides {
        server: args.server.server.clone(),
        api_key: args.server.api_key.clone(),
        quiet: args.quiet,
    };
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Names(args.names.clone())
    };
    let loaded = config_path(&args.server.file).and_then(|path| {
        let set = file::load(&path, &overrides).map_err(|e| e.to_string())?;
        fleet::check_selection(&set, &selection).map_err(|e| e.to_string())?;
        Ok((path, set))
    });
    let (path, set) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tunnel-client: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logs();
    let opts = FleetOptions {
        path,
        overrides,
        selection,
        watch: !args.no_watch,
        debounce: Duration::from_millis(150),
    };
    runtime.block_on(async {
        let shutdown = shutdown_on(signals);
        let printer = Printer::new(!args.quiet);
        fleet::run(opts, set, printer, shutdown).await;
        ExitCode::SUCCESS
    })
}

/// `tunnel-client config check`: the file's tunnels, or its errors (exit status 64).
fn check(args: &FileArgs) -> ExitCode {
    let set = config_path(args)
        .and_then(|path| file::load(&path, &Overrides::default()).map_err(|e| e.to_string()));
    match set {
        Ok(set) => {
            println!("{}: {} tunnel(s)", set.path.display(), set.tunnels.len());
            for t in &set.tunnels {
                let proto = match t.proto {
                    Proto::Http => "http",
                    Proto::Tcp => "tcp",
                };
                let local = t.config.local_authority();
                println!("  {:<12} {proto:<4} {local}", t.name);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
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
