//! `tunnel-server`: the public side of the tunnel.
//!
//! # Layout
//! - [`config`]: flags and environment, validated into [`config::Settings`].
//! - [`state`]: [`state::AppState`], shared by every handler.
//! - [`registry`]: the tunnels (a `DashMap`), their tokens, live connections and counters.
//! - [`auth`]: API keys and tokens, hashed and compared in constant time.
//! - [`access`]: per-tunnel basic auth and IP allow/deny lists.
//! - [`client_ip`]: the real client address (`X-Forwarded-For` from trusted proxies only).
//! - [`limits`]: rate limiters and request framing checks.
//! - [`framing`]: a guard that sees request heads as raw bytes, before hyper.
//! - [`api`]: the control API, health/readiness, and the router that ties all routes together.
//! - [`connect`]: the WebSocket endpoint tunnel clients connect to.
//! - [`proxy`]: the path-prefix reverse proxy for public requests.
//! - [`forwarding`]: header rules of the proxy (hop-by-hop, `X-Forwarded-*`, rewrites).
//! - [`error`]: every error a caller can see, mapped to a status and code in one place.
//! - [`server`]: the accept loop, expiry, and graceful shutdown.
//! - [`log_writer`]: log lines written in batches by a background thread.
//! - [`logging`]: log format and time zone; [`request_id`]: the id that ties one request's log
//!   lines together, on the server and in `tunnel-client`.
//! - [`metrics`]: Prometheus metrics and their own listener.
//! - [`openapi`]: the OpenAPI document of the control API, generated from the handlers.
//!
//! The request flow: public client → [`proxy`] → the tunnel's [`tunnel_protocol::mux`] stream
//! → client connection → `tunnel-client` → local service, and the response back the same way.

pub mod access;
pub mod api;
pub mod auth;
pub mod client_ip;
pub mod config;
pub mod connect;
pub mod error;
pub mod forwarding;
pub mod framing;
pub mod limits;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod registry;
pub mod request_id;
pub mod server;
pub mod state;

pub use config::Settings;
pub use metrics::run_with_metrics;
pub use server::run;
pub use state::AppState;
