//! The application: the route table (control API, client endpoint, health) and the public
//! dispatch that sends everything else to the proxy.
//!
//! The one module besides [`crate::server`] that knows every part: the parts do not know each
//! other's routes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::Service;

use crate::connect;
use crate::control::{api, openapi};
use crate::proxy;
use crate::state::AppState;

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
        .route("/api/openapi.json", get(openapi::openapi_json));
    if let Some(layer) = state.limits.api_layer() {
        control = control.route_layer(layer);
    }
    let mut clients = Router::new().route("/api/tunnel/connect/{id}", get(connect::connect));
    if let Some(layer) = state.limits.connect_layer() {
        clients = clients.route_layer(layer);
    }
    Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .merge(control)
        .merge(clients)
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

/// Routes one request of a public connection: the server's own paths through the router, and
/// public traffic straight to the proxy (the router's fallback): the same handler and rejection
/// count, without the route lookup and layers.
pub async fn dispatch(
    mut router: Router,
    state: Arc<AppState>,
    req: Request,
) -> Result<Response, Infallible> {
    if is_server_path(req.uri().path()) {
        return router.call(req).await;
    }
    let resp = proxy::proxy(State(state.clone()), req).await;
    Ok(count_rejections(State(state), resp).await)
}

/// Middleware of the public router: counts every error response the server answered itself
/// (see [`crate::observe::metrics::Metrics::count_rejection`]).
pub async fn count_rejections(State(state): State<Arc<AppState>>, response: Response) -> Response {
    state.metrics.count_rejection(&response);
    response
}
