//! `tunnel-server` binary: configuration, logging, signals; the work is in the library.

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

use std::process::ExitCode;
use std::sync::Arc;

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_server::config::{dev_key, Cluster, ServerArgs, Settings};
use tunnel_server::observe::logging;
use tunnel_server::peer::PeerClient;
use tunnel_server::server::Listeners;
use tunnel_server::state::SharedParts;
use tunnel_server::tunnel::registry::RegistryError;
use tunnel_server::tunnel::{RedisConfig, RedisRegistry};
use tunnel_server::AppState;

mod banner;

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::start();
    tunnel_protocol::heap::tune(tunnel_protocol::heap::SERVER_PURGE_DELAY_MS);
    // rustls (redis's rediss://) picks its crypto provider from its crate features, which
    // only feature unification with other crates enabled: built on its own
    // (`cargo build -p tunnel-server`) the server had none and panicked on the first TLS
    // connection to Redis, leaving the registry unavailable for good. (An error: one is set
    // already, which is fine.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The .env first, as it may configure the runtime too (`TUNNEL_WORKERS`,
    // `TOKIO_WORKER_THREADS`). A missing .env is normal; a malformed one is worth a warning.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("tunnel-server: ignoring .env: {e}");
        }
    }
    // The flags next, which say how many threads the runtime has; parsing them starts
    // nothing.
    let args = match ServerArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Then the runtime and the signal handlers, before anything else: from here on a SIGTERM
    // or Ctrl-C starts a graceful shutdown (at once, if it came before the server was up), and
    // never kills the process outright half-way through its start.
    let runtime = match args.workers.runtime() {
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

async fn serve(mut settings: Settings, mut signals: Signals) -> anyhow::Result<()> {
    // Dev mode: the key of the last run, so that a restart does not lock its clients out.
    let kept = settings.generated_key.clone().map(|fresh| {
        let kept = dev_key::load_or_keep(&fresh);
        if let Ok(k) = &kept {
            settings.use_dev_key(k.key.clone());
        }
        kept
    });
    let bind = settings.bind;
    let workers = settings.workers;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (TUNNEL_BIND)"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let mut more_public = Vec::new();
    if settings.bind_ipv6_loopback {
        // Best effort: a machine without IPv6 still has a working dev server on 127.0.0.1.
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, local.port()));
        match TcpListener::bind(v6).await {
            Ok(l) => more_public.push(l),
            Err(e) => tracing::info!(error = %e, "not listening on {v6} too"),
        }
    }
    let listening: Vec<String> = std::iter::once(local)
        .chain(more_public.iter().filter_map(|l| l.local_addr().ok()))
        .map(|a| a.to_string())
        .collect();
    let metrics_listener = match settings.metrics_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (TUNNEL_METRICS_BIND)"))?,
        ),
        None => None,
    };
    let (state, pod) = match settings.cluster.clone() {
        None => (Arc::new(AppState::new(settings, local)), None),
        Some(cluster) => {
            let (state, pod) = Pod::start(settings, &cluster, local).await?;
            (state, Some(pod))
        }
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    match &pod {
        None => {
            tracing::info!(listen = %listening.join(" "), metrics = %metrics_addr, public_url = %state.base_url, workers = %workers, "tunnel-server {} ready", env!("CARGO_PKG_VERSION"))
        }
        Some(pod) => tracing::info!(
            listen = %local,
            metrics = %metrics_addr,
            public_url = %state.base_url,
            workers = %workers,
            node = %pod.node,
            peer = %pod.peer_addr,
            advertise = %pod.advertise,
            redis = %pod.redis,
            connected = pod.connected,
            "tunnel-server {} ready", env!("CARGO_PKG_VERSION")
        ),
    }
    if let Some(kept) = kept {
        banner::print(&state, local, &listening, &kept);
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
    let (peer_listener, upkeep) = match pod {
        Some(pod) => (Some(pod.listener), Some((pod.stop, pod.tasks))),
        None => (None, None),
    };
    let listeners = Listeners {
        public: listener,
        more_public,
        metrics: metrics_listener,
        peer: peer_listener,
    };
    tunnel_server::server::serve(listeners, state).await;
    if let Some((stop, tasks)) = upkeep {
        stop.cancel();
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("registry tasks still running 5s after shutdown");
        }
    }
    Ok(())
}

/// What makes this process one pod among several: its peer listener and the background tasks
/// of its registry in Redis.
struct Pod {
    listener: TcpListener,
    peer_addr: SocketAddr,
    advertise: String,
    node: String,
    redis: String,
    connected: bool,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// How long start-up waits for Redis before it serves anyway (and recovers when Redis does).
const REDIS_START_WAIT: Duration = Duration::from_secs(5);

impl Pod {
    /// Binds the peer listener, builds the state around a registry in Redis and a client of
    /// the other pods, and starts the registry's tasks.
    async fn start(
        settings: Settings,
        cluster: &Cluster,
        local: SocketAddr,
    ) -> anyhow::Result<(Arc<AppState>, Self)> {
        let bind = cluster.peer_bind;
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} (TUNNEL_PEER_BIND)"))?;
        let peer_addr = listener
            .local_addr()
            .context("peer listener has no address")?;
        let advertise = cluster
            .peer_advertise
            .clone()
            .unwrap_or_else(|| peer_addr.to_string());
        let mut config = RedisConfig {
            url: cluster.redis_url.expose().to_string(),
            node: cluster.node_id.clone(),
            peer: advertise.clone(),
            lease: cluster.lease,
            cache: cluster.cache,
            keys: settings.api_keys.clone(),
            names: Default::default(),
        };
        let peers = PeerClient::new(&cluster.node_id, cluster.peer_secret.expose())
            .context("TUNNEL_NODE_ID or TUNNEL_PEER_SECRET")?;
        let mut registry = None;
        let state = AppState::with_registry(settings, local, |metrics, tasks, names| {
            config.names = names;
            let r = RedisRegistry::new(config, metrics, tasks.clients.clone())?;
            registry = Some(r.clone());
            Ok::<_, RegistryError>(SharedParts {
                registry: Arc::new(r),
                peers: Some(peers),
            })
        })
        .context("TUNNEL_REDIS_URL")?;
        let registry = registry.context("the registry was not built")?;
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        registry.spawn_upkeep(&tasks, stop.clone());
        let connected = registry.wait_connected(REDIS_START_WAIT).await;
        if !connected {
            tracing::warn!(
                "redis is not reachable yet: serving anyway; tunnels are unavailable until it is"
            );
        }
        let pod = Self {
            listener,
            peer_addr,
            advertise,
            node: cluster.node_id.clone(),
            redis: cluster.redis_url.redacted(),
            connected,
            stop,
            tasks,
        };
        Ok((Arc::new(state), pod))
    }
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
