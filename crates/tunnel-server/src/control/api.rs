//! The control API (`/api/tunnels…`), health, readiness and discovery (`/api`): the
//! handlers; [`crate::app`] mounts them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tunnel_protocol::GoodbyeReason;
use utoipa::ToSchema;

use super::domain::{new_domain, verify, verify_later};
use super::takeover;
use crate::auth::{presented_credential, KeyId};
use crate::edge::ClientIp;
use crate::error::{ErrorBody, TunnelError};
use crate::state::AppState;
use crate::tunnel::access::AccessPolicy;
use crate::tunnel::record::{CustomDomainInfo, TunnelInfo};
use crate::tunnel::registry::{CreateError, NewTunnel};

/// The API key a request authenticated with.
pub struct ApiKey(pub KeyId);

impl FromRequestParts<Arc<AppState>> for ApiKey {
    type Rejection = TunnelError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        presented_credential(&parts.headers)
            .and_then(|k| state.settings.api_keys.check(k))
            .map(ApiKey)
            .ok_or(TunnelError::Unauthorized)
    }
}

/// Answer of `/health` and `/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthResponse {
    /// `ok` (health), `ready`, `shutting_down` or `registry_unavailable` (readiness).
    pub status: String,
    /// Tunnels registered (readiness only, while ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<usize>,
    /// Whether the shared registry (Redis) answers: `ok` or `unavailable` (readiness only,
    /// absent without `TUNNEL_REDIS_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryHealth>,
}

/// What readiness found of the shared registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistryHealth {
    /// Redis answered.
    Ok,
    /// Redis did not answer in time, or refused.
    Unavailable,
}

/// How long readiness waits for the shared registry's `PING` (the probe's own timeout in
/// kubernetes-config.yaml is 3 s).
const REGISTRY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub(crate) async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        tunnels: None,
        registry: None,
    })
}

/// Readiness: fails (503) once shutdown has begun, so no new traffic is routed here; and,
/// with a shared registry, while Redis does not answer and this pod holds no client (it could
/// only answer 503 to every request then, whereas a pod holding clients still serves their
/// tunnels: taking every pod out of the balancer when Redis goes away would stop those too).
#[utoipa::path(get, path = "/ready", tag = "server", responses(
    (status = 200, description = "Ready", body = HealthResponse),
    (status = 503, description = "Shutting down, or the shared registry is unavailable and this pod holds no client", body = HealthResponse)))]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "shutting_down".into(),
                tunnels: None,
                registry: None,
            }),
        )
            .into_response();
    }
    let registry = match state.registry.node_id() {
        None => None,
        Some(_) => match tokio::time::timeout(REGISTRY_PING_TIMEOUT, state.registry.ping()).await {
            Ok(Ok(())) => Some(RegistryHealth::Ok),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "readiness: the registry does not answer");
                Some(RegistryHealth::Unavailable)
            }
            Err(_) => Some(RegistryHealth::Unavailable),
        },
    };
    let tunnels = state.registry.len();
    if registry == Some(RegistryHealth::Unavailable) && tunnels == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "registry_unavailable".into(),
                tunnels: None,
                registry,
            }),
        )
            .into_response();
    }
    Json(HealthResponse {
        status: "ready".into(),
        tunnels: Some(tunnels),
        registry,
    })
    .into_response()
}

/// Name, version, protocol version and a list of the endpoints.
#[utoipa::path(get, path = "/api", tag = "server",
    responses((status = 200, description = "Server information", body = serde_json::Value)))]
pub(crate) async fn api_info() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": "tunnel-server",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": tunnel_protocol::PROTOCOL_VERSION,
        "endpoints": {
            "create": "POST /api/tunnels/create (or POST /api/tunnels)",
            "list": "GET /api/tunnels/list (or GET /api/tunnels)",
            "status": "GET /api/tunnels/{id}/status",
            "delete": "DELETE /api/tunnels/{id}",
            "verify_domain": "POST /api/tunnels/{id}/domain/verify",
            "events": "GET /api/events, GET /api/tunnels/{id}/events (SSE)",
            "connect": "GET /api/tunnel/connect/{id} (WebSocket, Authorization: Bearer TOKEN)",
            "tcp": "GET /api/tunnels/{id}/tcp (WebSocket per TCP connection, Bearer API key or access token)",
            "health": "GET /health",
            "openapi": "GET /api/openapi.json",
            "ready": "GET /ready",
            "proxy": "ANY /{id}/{path}",
            "subdomain": "ANY https://{id}.TUNNEL_DOMAIN/{path}"
        }
    }))
}

/// Body of a create request; every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Requested id (lowercase DNS label); the server picks one when absent.
    #[schema(example = "my-app")]
    pub name: Option<String>,
    /// Requested lifetime in seconds (default `TUNNEL_TTL_SECS`, at most
    /// `TUNNEL_MAX_TTL_SECS`).
    #[schema(minimum = 1, example = 3600)]
    pub ttl_secs: Option<u64>,
    /// `user:password` the public must present (HTTP basic auth); stored hashed.
    pub basic_auth: Option<String>,
    /// Networks (CIDR or address, IPv4 or IPv6) allowed to use the public URL; empty: all.
    pub ip_allow: Option<Vec<String>>,
    /// Networks refused (checked before `ip_allow`).
    pub ip_deny: Option<Vec<String>>,
    /// A custom domain for the tunnel (`app.mycompany.com`). It answers once a TXT record
    /// `_tunnel.<domain>` holds the value in the answer's `custom_domain.txt_value`.
    #[schema(example = "app.mycompany.com")]
    pub domain: Option<String>,
    /// `http` (the default) or `tcp`: a TCP tunnel carries raw TCP connections, reached
    /// through the front door (`GET /api/tunnels/{id}/tcp`, `tunnel-client connect`) and,
    /// when the server has `TUNNEL_TCP_PORTS`, a public port of its own.
    pub proto: Option<Proto>,
    /// The public port a TCP tunnel asks for (within `TUNNEL_TCP_PORTS`); a free one of the
    /// range when absent.
    #[schema(example = 20001)]
    pub tcp_port: Option<u16>,
    /// Forward path-prefix requests with their `/<id>` prefix, and rewrite nothing in the
    /// answers (no `Location`, cookie path or `X-Forwarded-Prefix` changes): for a local
    /// service configured to live under `/<id>/` (Vite `base`, Jupyter `base_url`, Next.js
    /// `basePath`). Default false: the prefix is stripped.
    pub keep_prefix: Option<bool>,
    /// Take `name` over from this key's tunnel of that name even while a client serves it:
    /// that client is closed with a goodbye naming the new client's address. Without it such
    /// a create is refused (409 `tunnel_in_use`, with `connected_since` and `client_addr`);
    /// with no client connected, the tunnel is replaced too (without: 409 `conflict`).
    pub force: Option<bool>,
}

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// HTTP requests (and WebSockets) to its public URLs.
    #[default]
    Http,
    /// Raw TCP connections.
    Tcp,
}

/// How to reach a TCP tunnel.
#[derive(Debug, Serialize, ToSchema)]
pub struct TcpEndpoint {
    /// The token that opens the front door besides the owner's API key, for consumers
    /// (`tunnel-client connect --token`); shown only here.
    pub access_token: String,
    /// The front door: a WebSocket per connection (`tunnel-client connect ID`).
    #[schema(example = "wss://tunnels.example.com/api/tunnels/db/tcp")]
    pub connect_url: String,
    /// The public port, when the server has `TUNNEL_TCP_PORTS`.
    pub port: Option<u16>,
    /// `host:port` of the public port, when there is one.
    #[schema(example = "tunnels.example.com:20001")]
    pub address: Option<String>,
}

impl TcpEndpoint {
    fn of(state: &AppState, id: &str, created: crate::tcp::TcpCreated) -> Self {
        let ws = state.websocket_url(id);
        let base = ws.split("/api/").next().unwrap_or(&ws);
        let host = state
            .base_url
            .split_once("://")
            .map_or(state.base_url.as_str(), |(_, r)| r);
        let host = host.split('/').next().unwrap_or(host);
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        Self {
            access_token: created.access_token,
            connect_url: format!("{base}/api/tunnels/{id}/tcp"),
            port: created.port,
            address: created.port.map(|p| format!("{host}:{p}")),
        }
    }
}

/// Answer to a create request.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateResponse {
    /// The tunnel id.
    pub tunnel_id: String,
    /// The token a client authenticates with; shown only here.
    pub token: String,
    /// Public URL, in the form `TUNNEL_URL_STYLE` picks (`subdomain_url` or `path_url`).
    pub public_url: String,
    /// The path-prefix URL, `https://<host>/<id>/` (always served).
    pub path_url: String,
    /// The subdomain URL, `https://<id>.<TUNNEL_DOMAIN>/`, when `TUNNEL_DOMAIN` is set.
    pub subdomain_url: Option<String>,
    /// The custom domain and how to verify it, when one was asked for.
    pub custom_domain: Option<CustomDomainInfo>,
    /// Where the client connects.
    pub websocket_url: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry time.
    pub expires_at: DateTime<Utc>,
    /// What the tunnel carries.
    pub proto: Proto,
    /// How to reach a TCP tunnel (`proto: tcp` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpEndpoint>,
}

/// Creates a tunnel. Also `POST /api/tunnels`.
#[utoipa::path(post, path = "/api/tunnels/create", tag = "tunnels",
    request_body(content = Option<CreateRequest>, description = "Optional; an empty body takes every default"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Created; the token is shown only here", body = CreateResponse),
        (status = 400, description = "Invalid JSON, name or ttl_secs", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "The name is taken, held by another key for its grace period, reserved for another key, or the domain is in use (`conflict`); or it is this key's tunnel and a client serves it (`tunnel_in_use`, with `connected_since` and `client_addr`; `force` takes it over)", body = ErrorBody),
        (status = 429, description = "This key holds TUNNEL_MAX_TUNNELS_PER_KEY tunnels", body = ErrorBody),
        (status = 503, description = "The server is shutting down, or every port of TUNNEL_TCP_PORTS is taken (tcp_ports_exhausted)", body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
    client: Option<axum::Extension<ClientIp>>,
    body: Bytes,
) -> Result<Json<CreateResponse>, TunnelError> {
    if state.shutdown.is_cancelled() {
        return Err(TunnelError::ShuttingDown);
    }
    let req: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| TunnelError::Invalid(format!("invalid JSON body: {e}")))?
    };
    let settings = &state.settings;
    let ttl = requested_ttl(settings, req.ttl_secs)?;
    let access = AccessPolicy::new(
        req.basic_auth.as_deref(),
        req.ip_allow.as_deref().unwrap_or_default(),
        req.ip_deny.as_deref().unwrap_or_default(),
    )
    .map_err(|e| TunnelError::Invalid(e.to_string()))?;
    let domain = match req.domain.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => Some(new_domain(&state, owner, d)?),
    };
    if let Some(name) = req.name.as_deref() {
        let by = client.map(|c| c.0 .0);
        let force = req.force.unwrap_or(false);
        takeover::clear_for(&state, owner, name, force, by).await?;
    }
    let proto = req.proto.unwrap_or_default();
    let new_tcp = tcp_port(&state, proto, req.tcp_port)?;
    let (tunnel, token) = state
        .registry
        .create(NewTunnel {
            owner,
            name: req.name.as_deref(),
            ttl,
            max_per_key: settings.limits.max_tunnels_per_key,
            access,
            domain,
            keep_prefix: req.keep_prefix.unwrap_or(false),
            tcp: new_tcp.as_ref().map(crate::tcp::NewTcp::record),
        })
        .await
        .map_err(create_error)?;
    let tcp = new_tcp.map(|new| crate::tcp::start(&state, &tunnel, new));
    tracing::info!(tunnel = %tunnel.id, key = owner, ttl_secs = ttl.as_secs(), ?proto, "tunnel created");
    if tunnel.domain.is_some() {
        verify_later(&state, &tunnel);
    }
    let urls = &state.urls;
    Ok(Json(CreateResponse {
        public_url: urls.public_url(&tunnel.id),
        path_url: urls.path_url(&tunnel.id),
        subdomain_url: urls.subdomain_url(&tunnel.id),
        custom_domain: tunnel
            .domain
            .as_ref()
            .map(|d| CustomDomainInfo::of(d, urls)),
        websocket_url: state.websocket_url(&tunnel.id),
        tunnel_id: tunnel.id.clone(),
        token,
        created_at: tunnel.created_at,
        expires_at: tunnel.expires_at,
        proto,
        tcp: tcp.map(|t| TcpEndpoint::of(&state, &tunnel.id, t)),
    }))
}

/// The lifetime a create asks for: the default when absent, refused outside 1 s..=max.
fn requested_ttl(
    settings: &crate::config::Settings,
    ttl_secs: Option<u64>,
) -> Result<Duration, TunnelError> {
    match ttl_secs {
        None => Ok(settings.timeouts.default_ttl),
        Some(0) => Err(TunnelError::Invalid("ttl_secs must be at least 1".into())),
        Some(s) if Duration::from_secs(s) > settings.timeouts.max_ttl => {
            Err(TunnelError::Invalid(format!(
                "ttl_secs must be at most {}",
                settings.timeouts.max_ttl.as_secs()
            )))
        }
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// A TCP tunnel's access token and public port (if it gets one), bound before the tunnel is
/// created: an exhausted range refuses the tunnel instead of leaving one behind.
fn tcp_port(
    state: &AppState,
    proto: Proto,
    requested: Option<u16>,
) -> Result<Option<crate::tcp::NewTcp>, TunnelError> {
    match proto {
        Proto::Http if requested.is_some() => Err(TunnelError::Invalid(
            "tcp_port needs \"proto\": \"tcp\"".into(),
        )),
        Proto::Http => Ok(None),
        Proto::Tcp => Ok(Some(crate::tcp::prepare(state, requested)?)),
    }
}

fn create_error(e: CreateError) -> TunnelError {
    match e {
        CreateError::InvalidName(m) => TunnelError::Invalid(format!("invalid name: {m}")),
        CreateError::Taken(n) => TunnelError::Conflict(format!("tunnel name {n:?} is taken")),
        e @ (CreateError::Held(_) | CreateError::Reserved(_) | CreateError::DomainTaken(_)) => {
            TunnelError::Conflict(e.to_string())
        }
        CreateError::TooMany(n) => TunnelError::QuotaExceeded(format!(
            "this API key already holds {n} tunnels, the most allowed; delete one first"
        )),
        CreateError::Registry(e) => e.into(),
    }
}

/// The tunnels of the calling key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse {
    /// Oldest first.
    pub tunnels: Vec<TunnelInfo>,
    /// How many.
    pub count: usize,
}

/// Lists the tunnels of the calling key. Also `GET /api/tunnels`.
#[utoipa::path(get, path = "/api/tunnels/list", tag = "tunnels",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The tunnels", body = ListResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
) -> Result<Json<ListResponse>, TunnelError> {
    let tunnels = state.registry.list(owner).await?;
    let tunnels = state.registry.describe(&tunnels, &state.urls).await?;
    Ok(Json(ListResponse {
        count: tunnels.len(),
        tunnels,
    }))
}

/// Status of one tunnel of the calling key. Also `GET /api/tunnels/{id}`.
#[utoipa::path(get, path = "/api/tunnels/{id}/status", tag = "tunnels",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The tunnel", body = TunnelInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such tunnel for this key", body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
    Path(id): Path<String>,
) -> Result<Json<TunnelInfo>, TunnelError> {
    match state.registry.lookup(&id).await? {
        Some(t) if t.owner == owner => {
            let mut infos = state.registry.describe(&[t], &state.urls).await?;
            infos.pop().map(Json).ok_or(TunnelError::TunnelNotFound)
        }
        _ => Err(TunnelError::TunnelNotFound),
    }
}

/// Answer to a delete request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteResponse {
    /// Always true.
    pub deleted: bool,
    /// The deleted tunnel.
    pub tunnel_id: String,
}

/// Deletes a tunnel of the calling key and disconnects its client.
#[utoipa::path(delete, path = "/api/tunnels/{id}", tag = "tunnels",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeleteResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such tunnel for this key", body = ErrorBody)))]
pub(crate) async fn delete_tunnel(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, TunnelError> {
    match state.registry.lookup(&id).await? {
        Some(t) if t.owner == owner => {
            state
                .registry
                .remove(&id, GoodbyeReason::Deleted, "the tunnel was deleted")
                .await?;
            // Its public port is free once the answer is out.
            crate::tcp::release(&state, &id).await;
            tracing::info!(tunnel = %id, "tunnel deleted");
            Ok(Json(DeleteResponse {
                deleted: true,
                tunnel_id: id,
            }))
        }
        _ => Err(TunnelError::TunnelNotFound),
    }
}

/// Checks the tunnel's custom domain now. The client calls it until the domain is verified;
/// the server also checks every domain every `TUNNEL_DOMAIN_RECHECK_SECS`.
#[utoipa::path(post, path = "/api/tunnels/{id}/domain/verify", tag = "tunnels",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Checked; `verified` and `status` say what was found", body = CustomDomainInfo),
        (status = 400, description = "The tunnel has no custom domain", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such tunnel for this key", body = ErrorBody)))]
pub(crate) async fn verify_domain(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
    Path(id): Path<String>,
) -> Result<Json<CustomDomainInfo>, TunnelError> {
    let tunnel = match state.registry.lookup(&id).await? {
        Some(t) if t.owner == owner => t,
        _ => return Err(TunnelError::TunnelNotFound),
    };
    let Some(domain) = tunnel.domain.as_ref() else {
        return Err(TunnelError::Invalid(
            "this tunnel has no custom domain (create it with \"domain\")".into(),
        ));
    };
    verify(&state, &tunnel).await;
    Ok(Json(CustomDomainInfo::of(domain, &state.urls)))
}
