//! The application: the route table (control API, client endpoint, health) and the public
//! dispatch that sends everything else to the proxy.
//!
//! The one module besides [`crate::server`] that knows every part: the parts do not know each
//! other's routes.
//!
//! # Routing
//! Every public request gets one routing decision, [`route`], from its host and path, in this
//! order: a host `<label>.TUNNEL_DOMAIN` is tunnel `label`, every path of it (so an app's own
//! `/api/…` works); on the apex (`TUNNEL_DOMAIN`, the public URL's host, an IP address, or
//! any host when `TUNNEL_DOMAIN` is unset) the server's own paths go to the route table and
//! the rest is read as a path prefix; a deeper name is refused; any other host is a custom
//! domain if one is verified for it, and refused (`unknown_host`) otherwise. The control API,
//! health, readiness, the client endpoint and OpenAPI exist on the apex only.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::Service;

use crate::connect;
use crate::control::{api, events, openapi};
use crate::edge::client_ip::is_trusted;
use crate::edge::host::{request_host, HostClass, HostRules};
use crate::edge::PeerAddr;
use crate::error::TunnelError;
use crate::proxy::{self, Addressed};
use crate::state::AppState;
use crate::tcp;

/// The routing decision of a public request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One of the server's own paths on the apex: the route table.
    Server,
    /// Any other path on the apex: `/<id>/…`, the path-prefix proxy.
    Prefix,
    /// `<label>.TUNNEL_DOMAIN`: every path is tunnel `label`'s.
    Subdomain(String),
    /// `a.b.TUNNEL_DOMAIN`: refused.
    Nested,
    /// Any other host: a verified custom domain, or refused.
    Foreign(String),
}

/// Routes a request for `host` (normalized, `None` when it sent none) and `path`.
pub fn route(hosts: &HostRules, host: Option<&str>, path: &str) -> Route {
    match hosts.classify(host) {
        HostClass::Apex if is_server_path(path) => Route::Server,
        HostClass::Apex => Route::Prefix,
        HostClass::Subdomain(label) => Route::Subdomain(label.to_string()),
        HostClass::Nested => Route::Nested,
        HostClass::Foreign(host) => Route::Foreign(host.to_string()),
    }
}

/// Routes `req`: its host is `X-Forwarded-Host` when the peer is a trusted proxy, `Host`
/// otherwise. Without `TUNNEL_DOMAIN` the host does not matter and is not read.
pub fn route_request(state: &AppState, req: &Request) -> Route {
    let path = req.uri().path();
    if state.hosts.domain.is_none() {
        return route(&state.hosts, None, path);
    }
    let trusted = &state.settings.trusted_proxies;
    let peer_trusted = !trusted.is_empty()
        && req
            .extensions()
            .get::<PeerAddr>()
            .is_some_and(|p| is_trusted(p.0.ip(), trusted));
    let host = request_host(req.headers(), peer_trusted);
    route(&state.hosts, host.as_deref(), path)
}

/// Builds the whole application: control API, client endpoint, and the proxy as fallback.
///
/// The control API and the client endpoint are rate limited per client address; health and
/// readiness are not (probes must never be refused); public traffic is limited per tunnel in
/// the proxy.
pub fn router(state: Arc<AppState>) -> Router {
    let mut control = Router::new()
        .route("/api", get(api::api_info))
        .route("/api/tunnels", post(api::create).get(api::list))
        .route("/api/tunnels/create", post(api::create))
        .route("/api/tunnels/list", get(api::list))
        .route(
            "/api/tunnels/{id}",
            get(api::status).delete(api::delete_tunnel),
        )
        .route("/api/tunnels/{id}/status", get(api::status))
        .route("/api/tunnels/{id}/domain/verify", post(api::verify_domain))
        .route("/api/tunnels/{id}/events", get(events::tunnel_events))
        .route("/api/events", get(events::all_events))
        .route("/api/openapi.json", get(openapi::openapi_json));
    if let Some(layer) = state.limits.api_layer() {
        control = control.route_layer(layer);
    }
    let mut clients = Router::new().route("/api/tunnel/connect/{id}", get(connect::connect));
    // Not rate limited per minute like the API: a consumer may open many connections at once
    // (a connection pool); each tunnel's TUNNEL_TCP_MAX_CONNECTIONS bounds them instead.
    let tcp = Router::new().route("/api/tunnels/{id}/tcp", get(tcp::front_door));
    if let Some(layer) = state.limits.connect_layer() {
        clients = clients.route_layer(layer);
    }
    Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .merge(control)
        .merge(clients)
        .merge(tcp)
        .fallback(proxy::proxy)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// Whether the router has a route for `path`; every other path is public traffic for the
/// proxy. Kept next to [`router`], and checked against it in
/// `crates/tunnel-server/tests/openapi.rs`.
pub fn is_server_path(path: &str) -> bool {
    path == "/health" || path == "/ready" || path == "/api" || path.starts_with("/api/")
}

/// The whole public application as one router, routing by host as [`dispatch`] does: what
/// tests without a network drive with `oneshot`. The server itself calls [`dispatch`].
pub fn app(state: Arc<AppState>) -> Router {
    let table = router(state.clone());
    Router::new().fallback(move |req: Request| {
        let (table, state) = (table.clone(), state.clone());
        async move {
            match dispatch(table, state, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    })
}

/// Routes one request of a public connection ([`route_request`]): the server's own paths
/// through the router, and public traffic straight to the proxy: the same handler and
/// rejection count as the router's fallback, without the route lookup and layers.
pub async fn dispatch(
    mut router: Router,
    state: Arc<AppState>,
    req: Request,
) -> Result<Response, Infallible> {
    let addressed = match route_request(&state, &req) {
        Route::Server => return router.call(req).await,
        Route::Prefix => Addressed::Prefix,
        Route::Subdomain(label) => Addressed::Subdomain(label),
        Route::Foreign(host) => match state.registry.get_by_domain(&host) {
            Some(tunnel) => Addressed::Domain(tunnel),
            None => match state.registry.lookup_domain(&host).await {
                Ok(Some(tunnel)) => Addressed::Domain(tunnel),
                Ok(None) => return Ok(refuse(&state, &req, TunnelError::UnknownHost)),
                Err(e) => return Ok(refuse(&state, &req, e.into())),
            },
        },
        Route::Nested => return Ok(refuse(&state, &req, TunnelError::NestedSubdomain)),
    };
    let resp = proxy::serve(state.clone(), req, addressed).await;
    Ok(count_rejections(State(state), resp).await)
}

/// A refusal before any tunnel was found, counted like every other.
fn refuse(state: &AppState, req: &Request, e: TunnelError) -> Response {
    let response = e.render(req.headers());
    state.metrics.count_rejection(&response);
    response
}

/// Middleware of the public router: counts every error response the server answered itself
/// (see [`crate::observe::metrics::Metrics::count_rejection`]).
pub async fn count_rejections(State(state): State<Arc<AppState>>, response: Response) -> Response {
    state.metrics.count_rejection(&response);
    response
}
