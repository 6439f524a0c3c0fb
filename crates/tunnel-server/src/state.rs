//! The state every handler shares: settings, the registry, and the shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::MuxConfig;

use crate::config::Settings;
use crate::dns::Verifier;
use crate::edge::host::{self, HostRules};
use crate::limits::RateLimits;
use crate::observe::events::EventBus;
use crate::observe::metrics::Metrics;
use crate::peer::PeerClient;
use crate::tunnel::names::NamePolicy;
use crate::tunnel::tcp::{PortPool, TcpTunnels};
use crate::tunnel::{MemoryRegistry, PublicUrls, TunnelRegistry};

/// Every task the server spawns besides its connections, by what ends it, so that shutdown
/// waits for each at the right time instead of cutting it off.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    /// Work for public requests (request body pumps, WebSocket sessions): drained with the
    /// public connections, within the grace period.
    pub requests: TaskTracker,
    /// Tunnel client sessions and the closing of client connections: they end once the client
    /// connections are closed, the last step of shutdown.
    pub clients: TaskTracker,
}

/// Shared by all handlers through `Arc<AppState>` (no globals).
#[derive(Debug)]
pub struct AppState {
    /// Validated settings.
    pub settings: Settings,
    /// Public base URL without trailing slash, e.g. `https://tunnels.example.com`.
    pub base_url: String,
    /// Every public URL of a tunnel, built from the base URL and `TUNNEL_DOMAIN`.
    pub urls: PublicUrls,
    /// The names this server answers to (`TUNNEL_DOMAIN` and the apex's other names).
    pub hosts: HostRules,
    /// Custom-domain TXT lookups; `None` when the system's resolver configuration could not
    /// be read (custom domains then stay unverified, and the start-up log says why).
    pub verifier: Option<Verifier>,
    /// All tunnels (shared with the metrics listener, which samples its gauges from it).
    pub registry: Arc<dyn TunnelRegistry>,
    /// Cancelled when shutdown begins: readiness fails and new requests are refused.
    pub shutdown: CancellationToken,
    /// Rate limiters.
    pub limits: RateLimits,
    /// Permits for tunnel clients between upgrade and hello.
    pub handshakes: Arc<Semaphore>,
    /// Permits for concurrent public connections.
    pub connections: Arc<Semaphore>,
    /// Prometheus metrics (served by [`crate::server::run_with_metrics`]).
    pub metrics: Arc<Metrics>,
    /// Spawned tasks, for the drain.
    pub tasks: Tasks,
    /// The live events of `GET /api/events`.
    pub events: Arc<EventBus>,
    /// The client of the other pods' peer listeners, when several pods share the registry
    /// (`None`: one process, or a registry of its own).
    pub peers: Option<PeerClient>,
    /// The TCP tunnels' own parts (access tokens, public ports, caps).
    pub tcp: TcpTunnels,
    /// The public ports of `TUNNEL_TCP_PORTS`.
    pub tcp_ports: Arc<PortPool>,
}

/// What makes a server one pod among several: the shared registry and the client of the other
/// pods, built by whoever assembles the server (they need the metrics and the task trackers of
/// the state, given to [`AppState::with_registry`]'s closure).
pub struct SharedParts {
    /// The registry.
    pub registry: Arc<dyn TunnelRegistry>,
    /// How to reach the other pods.
    pub peers: Option<PeerClient>,
}

impl AppState {
    /// Builds the state for a server listening on `local_addr`, with its registry in memory.
    pub fn new(settings: Settings, local_addr: SocketAddr) -> Self {
        let parts = |metrics: Arc<Metrics>, tasks: &Tasks, names: NamePolicy| {
            Ok::<_, std::convert::Infallible>(SharedParts {
                registry: Arc::new(MemoryRegistry::new(metrics, tasks.clients.clone(), names)),
                peers: None,
            })
        };
        match Self::with_registry(settings, local_addr, parts) {
            Ok(state) => state,
            Err(never) => match never {},
        }
    }

    /// Builds the state with the registry (and peer client) `parts` makes from the metrics
    /// (which observe the registry), the task trackers (where it closes clients) and the
    /// rules of names.
    pub fn with_registry<E>(
        settings: Settings,
        local_addr: SocketAddr,
        parts: impl FnOnce(Arc<Metrics>, &Tasks, NamePolicy) -> Result<SharedParts, E>,
    ) -> Result<Self, E> {
        let domain = settings.domains.domain.clone();
        let base_url = settings.public_url.clone().unwrap_or_else(|| {
            let host = if let Some(d) = &domain {
                d.clone()
            } else if local_addr.ip().is_unspecified() || local_addr.ip().is_loopback() {
                "localhost".to_string()
            } else {
                match local_addr {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                }
            };
            format!("http://{host}:{}", local_addr.port())
        });
        let urls = PublicUrls::new(&base_url, domain.as_deref(), settings.domains.url_style);
        let base_host = base_url
            .split_once("://")
            .map_or(base_url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .map(|a| host::normalize(a).into_owned());
        let hosts = HostRules {
            aliases: base_host
                .into_iter()
                .filter(|h| Some(h) != domain.as_ref())
                .collect(),
            domain,
        };
        let verifier = match Verifier::new(settings.domains.dns_resolver) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "custom domains cannot be verified (TUNNEL_DNS_RESOLVER)");
                None
            }
        };
        let names = NamePolicy::new(
            settings.domains.blocked_names.iter().cloned(),
            settings.domains.name_grace,
        );
        let metrics = Arc::new(Metrics::new());
        let tasks = Tasks::default();
        let SharedParts { registry, peers } = parts(metrics.clone(), &tasks, names)?;
        let tcp = &settings.tcp;
        let tcp_ports = Arc::new(PortPool::new(tcp.tcp_ports.0.clone(), tcp.tcp_bind_ip));
        Ok(Self {
            tcp: TcpTunnels::default(),
            tcp_ports,
            urls,
            hosts,
            verifier,
            limits: RateLimits::new(
                settings.rates.api_per_min,
                settings.rates.connect_per_min,
                settings.rates.public_per_sec,
            ),
            handshakes: Arc::new(Semaphore::new(settings.limits.max_pending_handshakes)),
            connections: Arc::new(Semaphore::new(settings.limits.max_connections)),
            settings,
            base_url,
            registry,
            shutdown: CancellationToken::new(),
            metrics,
            tasks,
            events: Arc::new(EventBus::default()),
            peers,
        })
    }

    /// WebSocket URL a client connects to for tunnel `id`.
    pub fn websocket_url(&self, id: &str) -> String {
        let ws_base = if let Some(rest) = self.base_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base_url.clone()
        };
        format!("{ws_base}/api/tunnel/connect/{id}")
    }

    /// Scheme the public uses to reach us.
    pub fn public_proto(&self) -> &'static str {
        if self.base_url.starts_with("https://") {
            "https"
        } else {
            "http"
        }
    }

    /// Multiplexer settings for client connections.
    pub fn mux_config(&self) -> MuxConfig {
        let s = &self.settings;
        MuxConfig {
            initial_window: s.limits.window_bytes,
            max_window: s.limits.max_window_bytes,
            max_frame_size: 64 * 1024,
            max_streams: s.limits.max_streams_per_tunnel,
            ping_interval: s.timeouts.ping_interval,
            dead_after: s.timeouts.ping_interval * 3 + Duration::from_secs(1),
        }
    }
}
