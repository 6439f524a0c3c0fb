//! Prometheus metrics: the families and where they are bumped. They are served as text on
//! `GET /metrics` by a listener of their own ([`super::metrics_server`]).
//!
//! # Families (all prefixed `tunnel_`)
//! | name | type | labels |
//! |---|---|---|
//! | `tunnel_tunnels_registered` | gauge | |
//! | `tunnel_tunnels_connected` | gauge | |
//! | `tunnel_client_connects_total` | counter | |
//! | `tunnel_client_disconnects_total` | counter | |
//! | `tunnel_requests_total` | counter | `tunnel`, `status_class` |
//! | `tunnel_request_duration_seconds` | histogram | |
//! | `tunnel_body_bytes_total` | counter | `direction` (`in`: public → local, `out`: local → public) |
//! | `tunnel_open_streams` | gauge | |
//! | `tunnel_websocket_sessions` | gauge | |
//! | `tunnel_rejections_total` | counter | `reason` |
//! | `tunnel_build_info` | info | `version` |
//!
//! Gauges that describe the registry (tunnels, connections, open streams) are sampled from it
//! at scrape time, so they cannot drift from the truth. Counters are bumped where the events
//! happen: the proxy (`crate::proxy`), the client endpoint (`crate::connect`) and, for
//! rejections, one middleware on the router (`crate::app::count_rejections`) that reads the
//! [`TunnelError`] every error response carries.
//!
//! # Bounded per-tunnel labels
//! Tunnels come and go, so `tunnel_requests_total{tunnel=…}` must not keep a series per tunnel
//! ever seen. A tunnel gets its own label value when it is registered, and its series are
//! removed when it is deleted or expires ([`TunnelRegistry::remove`], through [`RegistryEvents`]). At most
//! [`MAX_TUNNEL_LABELS`] tunnels have their own label at once; requests of any other tunnel
//! (and of a tunnel already removed while its last request finishes) count under
//! [`OTHER_TUNNEL`], which no tunnel id can equal.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry as PromRegistry;

use crate::error::TunnelError;
use crate::tunnel::registry::{RegistryEvents, TunnelRegistry};

/// Most tunnels with a `tunnel` label value of their own at once; the rest count under
/// [`OTHER_TUNNEL`]. With the default limits (100 tunnels per key) only a server with more than
/// ten busy keys reaches it.
pub const MAX_TUNNEL_LABELS: usize = 1000;

/// The `tunnel` label value of requests whose tunnel has no label of its own. The underscore
/// makes it impossible as a tunnel id, so it never mixes with a real tunnel.
pub const OTHER_TUNNEL: &str = "_other";

/// `status_class` label values. `none`: the request ended before any status was chosen (the
/// public client left while waiting for the response head).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Upper bounds of the request duration buckets, in seconds: from a fast local answer to a
/// long download or server-sent event stream.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Why the server itself refused or cut a request (the `reason` label of
/// `tunnel_rejections_total`).
///
/// To add one (a rate limit, a size limit…): add a variant, its label in [`Rejection::as_str`]
/// and in [`Rejection::ALL`], and map the [`TunnelError`] that answers it in
/// [`Rejection::of`]; rejections that are not an error response (like the idle timeout, which
/// cuts a body already under way) call [`Metrics::rejected`] where they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Missing or wrong API key or tunnel token.
    Unauthorized,
    /// No tunnel with the requested id.
    TunnelNotFound,
    /// The tunnel exists but has no client connected.
    TunnelOffline,
    /// `TUNNEL_MAX_STREAMS_PER_TUNNEL` requests already in flight.
    Overloaded,
    /// No response head within `TUNNEL_REQUEST_TIMEOUT_SECS`.
    GatewayTimeout,
    /// A response body or WebSocket silent for `TUNNEL_IDLE_TIMEOUT_SECS`.
    IdleTimeout,
    /// The server is draining.
    ShuttingDown,
}

impl Rejection {
    /// Every reason, so that each has a series (at 0) from the start: `rate()` and alerts
    /// work before the first occurrence.
    pub const ALL: [Rejection; 7] = [
        Rejection::Unauthorized,
        Rejection::TunnelNotFound,
        Rejection::TunnelOffline,
        Rejection::Overloaded,
        Rejection::GatewayTimeout,
        Rejection::IdleTimeout,
        Rejection::ShuttingDown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::TunnelNotFound => "tunnel_not_found",
            Rejection::TunnelOffline => "tunnel_offline",
            Rejection::Overloaded => "overloaded",
            Rejection::GatewayTimeout => "gateway_timeout",
            Rejection::IdleTimeout => "idle_timeout",
            Rejection::ShuttingDown => "shutting_down",
        }
    }

    /// The rejection an error response stands for, if it is one. Failures of the client or
    /// the local service (502s) are not rejections: they show in `tunnel_requests_total`.
    pub fn of(error: &TunnelError) -> Option<Self> {
        match error {
            TunnelError::Unauthorized => Some(Rejection::Unauthorized),
            TunnelError::TunnelNotFound => Some(Rejection::TunnelNotFound),
            TunnelError::TunnelOffline => Some(Rejection::TunnelOffline),
            TunnelError::Overloaded => Some(Rejection::Overloaded),
            TunnelError::Timeout => Some(Rejection::GatewayTimeout),
            TunnelError::ShuttingDown => Some(Rejection::ShuttingDown),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    tunnel: String,
    status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric of the server. One per server state, told by its registry of every tunnel
/// that comes and goes (no global registry: tests run many servers in one process).
#[derive(Debug)]
pub struct Metrics {
    registry: PromRegistry,
    tunnels_registered: Gauge,
    tunnels_connected: Gauge,
    client_connects: Counter,
    client_disconnects: Counter,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histogram,
    body_bytes: Family<DirectionLabels, Counter>,
    /// The `in` and `out` series of `body_bytes`, held: a counter shares its value with its
    /// clones, and looking a series up in the family hashed its labels and took the family's
    /// lock for every response body and request body (about 230 instructions each time,
    /// callgrind).
    body_in: Counter,
    body_out: Counter,
    open_streams: Gauge,
    websocket_sessions: Gauge,
    rejections: Family<ReasonLabels, Counter>,
    /// Tunnels with a `tunnel` label of their own, each with its `tunnel_requests_total`
    /// series once used. Requests are counted under its read lock and series removed under its
    /// write lock, so a request finishing while its tunnel is removed can never re-create a
    /// series after the removal.
    labelled: RwLock<HashMap<String, RequestSeries>>,
    /// The series of [`OTHER_TUNNEL`], which are never removed.
    other: RequestSeries,
}

/// A tunnel's `tunnel_requests_total` series, one per status class (indexed as
/// [`STATUS_CLASSES`]), each taken from the family at its first request and held after: looking
/// a series up in the family copied the tunnel id into a new label set, hashed it and took the
/// family's lock on every request (about 900 instructions and an allocation, callgrind). A
/// series is created only when a request of its class comes, so `/metrics` lists the same
/// series as before.
#[derive(Debug, Default)]
struct RequestSeries([OnceLock<Counter>; STATUS_CLASSES.len()]);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("tunnel");
        let m = Self {
            tunnels_registered: Gauge::default(),
            tunnels_connected: Gauge::default(),
            client_connects: Counter::default(),
            client_disconnects: Counter::default(),
            requests: Family::default(),
            request_duration: Histogram::new(DURATION_BUCKETS),
            body_bytes: Family::default(),
            body_in: Counter::default(),
            body_out: Counter::default(),
            open_streams: Gauge::default(),
            websocket_sessions: Gauge::default(),
            rejections: Family::default(),
            labelled: RwLock::new(HashMap::new()),
            other: RequestSeries::default(),
            registry: PromRegistry::default(),
        };
        m.register(&mut registry);
        for reason in Rejection::ALL {
            let _ = m.rejections.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        let body = |direction| {
            m.body_bytes
                .get_or_create(&DirectionLabels { direction })
                .clone()
        };
        let (body_in, body_out) = (body("in"), body("out"));
        Self {
            registry,
            body_in,
            body_out,
            ..m
        }
    }

    /// Registers every family in `registry`, with its help text.
    fn register(&self, registry: &mut PromRegistry) {
        registry.register(
            "tunnels_registered",
            "Tunnels in the registry (created, not yet deleted or expired)",
            self.tunnels_registered.clone(),
        );
        registry.register(
            "tunnels_connected",
            "Tunnels with a tunnel-client connected",
            self.tunnels_connected.clone(),
        );
        registry.register(
            "client_connects",
            "Tunnel clients that authenticated and completed the handshake",
            self.client_connects.clone(),
        );
        registry.register(
            "client_disconnects",
            "Tunnel client connections that ended, for any reason",
            self.client_disconnects.clone(),
        );
        registry.register(
            "requests",
            "Public requests that reached a tunnel, by tunnel and status class",
            self.requests.clone(),
        );
        registry.register(
        "request_duration_seconds",
        "Public request duration, from arrival to the end of the response body (WebSocket sessions excluded)",
        self.request_duration.clone(),
    );
        registry.register(
            "body_bytes",
            "Body bytes through tunnels: in = public client to local service, out = back",
            self.body_bytes.clone(),
        );
        registry.register(
            "open_streams",
            "Streams (public requests and WebSocket sessions) open on client connections",
            self.open_streams.clone(),
        );
        registry.register(
            "websocket_sessions",
            "Public WebSocket sessions currently open",
            self.websocket_sessions.clone(),
        );
        registry.register(
            "rejections",
            "Requests the server refused or cut itself, by reason",
            self.rejections.clone(),
        );
        registry.register(
            "build",
            "Version of this tunnel-server",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
    }

    fn labelled(&self) -> RwLockReadGuard<'_, HashMap<String, RequestSeries>> {
        // No code under the lock can panic; recover from poison anyway.
        self.labelled.read().unwrap_or_else(|e| e.into_inner())
    }

    fn labelled_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, RequestSeries>> {
        self.labelled.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A tunnel was registered: it gets a label of its own if there is room.
    pub fn tunnel_registered(&self, id: &str) {
        let mut labelled = self.labelled_mut();
        if labelled.len() < MAX_TUNNEL_LABELS && !labelled.contains_key(id) {
            labelled.insert(id.to_string(), RequestSeries::default());
        }
    }

    /// A tunnel was removed (deleted or expired): its series go.
    pub fn tunnel_removed(&self, id: &str) {
        let mut labelled = self.labelled_mut();
        if labelled.remove(id).is_some() {
            for status_class in STATUS_CLASSES {
                self.requests.remove(&RequestLabels {
                    tunnel: id.to_string(),
                    status_class,
                });
            }
        }
    }

    /// A public request through tunnel `id` ended with `status` (0: none was chosen) after
    /// `elapsed`. `websocket`: a WebSocket session, kept out of the duration histogram where
    /// its length would drown the request latencies.
    pub fn request_finished(&self, id: &str, status: u16, elapsed: Duration, websocket: bool) {
        let class = status_class_index(status);
        {
            let labelled = self.labelled();
            let (tunnel, series) = match labelled.get_key_value(id) {
                Some((tunnel, series)) => (tunnel.as_str(), series),
                None => (OTHER_TUNNEL, &self.other),
            };
            series.0[class]
                .get_or_init(|| {
                    self.requests
                        .get_or_create(&RequestLabels {
                            tunnel: tunnel.to_string(),
                            status_class: STATUS_CLASSES[class],
                        })
                        .clone()
                })
                .inc();
        }
        if !websocket {
            self.request_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Body bytes from a public client towards the local service.
    pub fn bytes_in(&self, n: u64) {
        self.body_in.inc_by(n);
    }

    /// Body bytes from the local service towards a public client.
    pub fn bytes_out(&self, n: u64) {
        self.body_out.inc_by(n);
    }

    /// A tunnel client completed its handshake.
    pub fn client_connected(&self) {
        self.client_connects.inc();
    }

    /// A tunnel client connection ended.
    pub fn client_disconnected(&self) {
        self.client_disconnects.inc();
    }

    /// The server refused or cut a request.
    pub fn rejected(&self, reason: Rejection) {
        self.rejections
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts `response` if it is an error the server answered itself (error responses carry
    /// their [`TunnelError`] as an extension, see [`TunnelError::json_response`]).
    pub fn count_rejection(&self, response: &http::Response<axum::body::Body>) {
        if let Some(reason) = response
            .extensions()
            .get::<TunnelError>()
            .and_then(Rejection::of)
        {
            self.rejected(reason);
        }
    }

    /// A public WebSocket session opened; it counts as open until the guard is dropped.
    pub fn websocket_opened(self: &Arc<Self>) -> WebSocketGuard {
        self.websocket_sessions.inc();
        WebSocketGuard(self.clone())
    }

    /// The text exposition, after sampling the gauges that describe `tunnels`.
    pub fn render(&self, tunnels: &dyn TunnelRegistry) -> Result<String, fmt::Error> {
        let all = tunnels.local();
        let connections: Vec<_> = all.iter().filter_map(|t| t.connection()).collect();
        let streams: usize = connections.iter().map(|c| c.mux.open_streams()).sum();
        self.tunnels_registered.set(gauge_value(all.len()));
        self.tunnels_connected.set(gauge_value(connections.len()));
        self.open_streams.set(gauge_value(streams));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `2xx` for 204 and so on; `none` for 0 (or anything outside 100..=599).
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// The index in [`STATUS_CLASSES`] of `status`'s class.
fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

impl RegistryEvents for Metrics {
    fn registered(&self, id: &str) {
        self.tunnel_registered(id);
    }

    fn removed(&self, id: &str) {
        self.tunnel_removed(id);
    }
}

/// Keeps `tunnel_websocket_sessions` up while a session lives.
#[derive(Debug)]
pub struct WebSocketGuard(Arc<Metrics>);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.websocket_sessions.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        m.render(&crate::tunnel::MemoryRegistry::default())
            .unwrap_or_default()
    }

    /// `t` holds `tunnel_requests_total` of `tunnel` and `class` at `count`.
    fn assert_series(t: &str, tunnel: &str, class: &str, count: u64) {
        let line =
            format!(r#"tunnel_requests_total{{tunnel="{tunnel}",status_class="{class}"}} {count}"#);
        assert!(t.contains(&line), "{line} not in:\n{t}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(308), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(0), "none");
    }

    #[test]
    fn removed_tunnels_lose_their_series() {
        let m = Metrics::new();
        m.tunnel_registered("abc");
        m.request_finished("abc", 200, Duration::from_millis(3), false);
        m.request_finished("abc", 502, Duration::from_millis(3), false);
        let t = text(&m);
        assert_series(&t, "abc", "2xx", 1);
        m.tunnel_removed("abc");
        // A request that finishes after its tunnel was removed folds into `_other`.
        m.request_finished("abc", 200, Duration::from_millis(3), false);
        let t = text(&m);
        assert!(!t.contains(r#"tunnel="abc""#), "{t}");
        assert_series(&t, "_other", "2xx", 1);
        assert!(t.contains("tunnel_request_duration_seconds_count 3"), "{t}");
    }

    #[test]
    fn a_tunnel_registered_again_counts_from_zero() {
        let m = Metrics::new();
        m.tunnel_registered("abc");
        m.request_finished("abc", 200, Duration::ZERO, false);
        m.request_finished("abc", 204, Duration::ZERO, false);
        // Registered again while live (a reconnect): the series it holds keep counting.
        m.tunnel_registered("abc");
        m.request_finished("abc", 200, Duration::ZERO, false);
        let t = text(&m);
        assert_series(&t, "abc", "2xx", 3);
        assert!(
            !t.contains(r#"status_class="4xx""#),
            "no series before its first request: {t}"
        );
        // Removed, then created again under the same id: a new series, not the old one's count.
        m.tunnel_removed("abc");
        m.tunnel_registered("abc");
        m.request_finished("abc", 200, Duration::ZERO, false);
        m.request_finished("abc", 404, Duration::ZERO, false);
        let t = text(&m);
        assert_series(&t, "abc", "2xx", 1);
        assert_series(&t, "abc", "4xx", 1);
    }

    #[test]
    fn the_label_set_is_capped() {
        let m = Metrics::new();
        for i in 0..MAX_TUNNEL_LABELS + 10 {
            let id = format!("t{i}");
            m.tunnel_registered(&id);
            m.request_finished(&id, 200, Duration::ZERO, false);
        }
        let t = text(&m);
        let series = t
            .lines()
            .filter(|l| l.starts_with("tunnel_requests_total{"))
            .count();
        assert_eq!(series, MAX_TUNNEL_LABELS + 1, "own labels plus _other");
        assert_series(&t, "_other", "2xx", 10);
    }

    #[test]
    fn every_reason_is_exposed_from_the_start() {
        let t = text(&Metrics::new());
        for reason in Rejection::ALL {
            let line = format!(
                r#"tunnel_rejections_total{{reason="{}"}} 0"#,
                reason.as_str()
            );
            assert!(t.contains(&line), "{line} missing in\n{t}");
        }
        assert!(t.contains("tunnel_tunnels_registered 0"), "{t}");
        assert!(t.contains(r#"tunnel_build_info{version=""#), "{t}");
    }
}
