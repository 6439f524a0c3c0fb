//! `tunnel-server`: the public side of the tunnel.
//!
//! # Layout
//! The folders are the architecture. Each module imports only modules listed before it (or its
//! own children), never its parent: `ci/check-layout.py` checks that there is no import cycle
//! and no upward import.
//!
//! Foundations, which know nothing of requests:
//! - [`error`]: every error a caller can see, mapped to a status and code in one place, and
//!   the JSON shape of an error body.
//! - [`auth`]: API keys and tokens, hashed and compared in constant time.
//! - [`edge`]: what a public connection brings before any route sees it: the framing guard
//!   (request heads as raw bytes, before hyper), the peer and real client address.
//! - [`config`]: flags and environment, parsed and range-checked by clap into
//!   [`config::Settings`] and its groups (timeouts, limits, rates, logging, names and domains).
//! - [`tunnel`]: the [`tunnel::TunnelRegistry`] trait (the one place a registry shared by
//!   several processes will plug in), its in-memory implementation, one tunnel (ids, tokens,
//!   live client connection, counters, custom domain), who may take a name (blocked names,
//!   reservations, grace periods), its access rules (basic auth, IP lists), its public URLs.
//! - [`dns`]: custom-domain verification: the TXT value tied to a key, and the lookup.
//! - [`observe`]: metrics (types, and their own listener), log format and writer, request ids.
//! - [`peer`]: pod to pod, when several pods share a registry: the pooled client that forwards
//!   a public request to the pod holding its tunnel's client, and that pod's peer listener.
//! - [`limits`]: rate limiters and request framing checks.
//! - [`state`]: [`state::AppState`], shared by every handler, with the trackers of every task
//!   the server spawns.
//!
//! The parts that serve requests, which do not know each other:
//! - [`proxy`]: the reverse proxy for public requests, addressed by path prefix, subdomain or
//!   custom domain (entry, forward, response, upgrade, header rules, the access log line).
//! - [`connect`]: the WebSocket endpoint tunnel clients connect to.
//! - [`tcp`]: TCP tunnels: a public port's accept loop and the HTTP front door
//!   (`/api/tunnels/{id}/tcp`), both joined to the tunnel's multiplexer streams.
//! - [`control`]: the control API, health and readiness, and its OpenAPI document (it starts
//!   and ends a TCP tunnel's [`tcp`] side with the tunnel).
//!
//! Assembly, the only modules that know every part:
//! - [`app`]: the route table and the public dispatch: the one routing decision of a request
//!   ([`app::Route`]: the server's own path, a path prefix, a subdomain, another host).
//! - [`server`]: the accept loop, expiry, graceful shutdown, and the metrics listener beside.
//!
//! The request flow: public client → [`server`] (accept, [`edge`]) → [`app`] → [`proxy`] → the
//! tunnel's [`tunnel_protocol::mux`] stream → client connection → `tunnel-client` → local
//! service, and the response back the same way.

pub mod app;
pub mod auth;
pub mod config;
pub mod connect;
pub mod control;
pub mod dns;
pub mod edge;
pub mod error;
pub mod limits;
pub mod observe;
pub mod peer;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tcp;
pub mod tunnel;

pub use config::Settings;
pub use server::{run, run_with_metrics};
pub use state::AppState;
