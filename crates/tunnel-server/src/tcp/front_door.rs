//! `GET /api/tunnels/{id}/tcp`: one TCP connection to a TCP tunnel, carried on a WebSocket
//! of its own through the server's HTTP endpoint ([`tunnel_protocol::carrier`]), as
//! `tunnel-client connect` opens it.
//!
//! The credential is checked before anything else: the owner's API key or the tunnel's
//! access token, and a wrong one and an unknown tunnel get the same 401. The stream to the
//! tunnel client is opened *before* the `101`: a consumer learns from the status whether the
//! local service was reached (502 `local_service_unreachable`, 503, 504…), not from a
//! WebSocket that closes at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info_span, warn, Instrument};
use tunnel_protocol::carrier::{self, CarryOptions};
use tunnel_protocol::headers::upgrades_to_websocket;
use tunnel_protocol::mux::Role;
use tunnel_protocol::ws::WebSocket;
use tunnel_protocol::{TcpOpen, TcpVia};

use super::open::{finished, open_stream, Opened};
use super::remote::{self, Forwarded};
use crate::auth::{presented_credential, SecretHash};
use crate::edge::{ClientIp, PeerAddr};
use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::Tunnel;

/// Handles the upgrade request.
#[utoipa::path(get, path = "/api/tunnels/{id}/tcp", tag = "tunnels",
    description = "One TCP connection to a TCP tunnel, as a WebSocket: each binary message \
                   carries bytes, an empty one ends the sender's direction (half-close). \
                   `tunnel-client connect` speaks it. The owner's API key or the tunnel's \
                   access token goes in `Authorization: Bearer` (the key also in `X-API-Key`).",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("bearer" = []), ("api_key" = []), ("tcp_access_token" = [])),
    responses(
        (status = 101, description = "Connected to the tunnel's local service; bytes follow"),
        (status = 400, description = "Not a TCP tunnel", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong credential or unknown tunnel (deliberately the same answer)", body = crate::error::ErrorBody),
        (status = 403, description = "The address is not allowed on this tunnel", body = crate::error::ErrorBody),
        (status = 426, description = "Not a WebSocket (version 13) upgrade request"),
        (status = 502, description = "Tunnel offline, or its local service unreachable", body = crate::error::ErrorBody),
        (status = 503, description = "Too many connections on this tunnel, or shutting down", body = crate::error::ErrorBody),
        (status = 504, description = "The tunnel client did not answer in time", body = crate::error::ErrorBody)))]
pub async fn front_door(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    mut req: Request,
) -> Response {
    if state.shutdown.is_cancelled() {
        return TunnelError::ShuttingDown.json_response();
    }
    let tunnel = match authenticate(&state, &id, req.headers()).await {
        Ok(found) => found,
        Err(e) => return e.json_response(),
    };
    let Some(key) = websocket_key(req.headers()) else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(UPGRADE, HeaderValue::from_static("websocket"))],
            "this endpoint only speaks WebSocket (version 13)\n",
        )
            .into_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return TunnelError::BadRequest("connection cannot be upgraded").json_response();
    };
    let peer = consumer_addr(&req);
    if !tunnel.access.allows_ip(peer.ip()) {
        return TunnelError::IpForbidden.json_response();
    }
    // A client connected to another pod: the connection goes there, over the peer link.
    let tunnel = match (tunnel.connection(), tunnel.remote(), state.peers.as_ref()) {
        (None, Some(lease), Some(peers)) => {
            match remote::forward(&state, tunnel, lease, peers, peer).await {
                Ok(Forwarded::There(upgrade)) => {
                    remote::join_later(&state, id, peer, on_upgrade, upgrade);
                    return switching_protocols(&key);
                }
                Ok(Forwarded::Here(t)) => t,
                Err(e) => return e.json_response(),
            }
        }
        _ => tunnel,
    };
    let open = TcpOpen {
        peer,
        local: state.settings.bind,
        via: TcpVia::FrontDoor,
    };
    let started = Instant::now();
    let max = state.settings.tcp.tcp_max_connections;
    let tcp = state.tcp.get_or_insert(&tunnel.id, max);
    let opened = match open_stream(&state, &tunnel, &tcp, open).await {
        Ok(o) => o,
        Err(e) => {
            finished(&tunnel, TcpVia::FrontDoor, peer, started, (0, 0), Some(&e));
            return e.json_response();
        }
    };
    carry_later(&state, tunnel, opened, on_upgrade, peer, started);
    switching_protocols(&key)
}

/// Once `on_upgrade` completed, carries the consumer's WebSocket on it to the stream
/// `opened`, on a task of its own, and logs the connection when it ends.
pub(super) fn carry_later(
    state: &AppState,
    tunnel: Arc<Tunnel>,
    opened: Opened,
    on_upgrade: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
    started: Instant,
) {
    let span = info_span!("tcp", tunnel = %tunnel.id, %peer);
    let opts = CarryOptions {
        idle: Some(state.settings.timeouts.idle_timeout),
        ping_every: None,
        ping_first: false,
        // The consumer speaks first (see the carrier's documentation).
        wait_for_peer: true,
    };
    state.tasks.requests.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return warn!(error = %e, "websocket upgrade failed"),
            };
            let ws = WebSocket::new(TokioIo::new(upgraded), Role::Server, carrier::MAX_MESSAGE);
            let result = carrier::carry_stream(ws, opened.sender, opened.receiver, opts).await;
            drop(opened._permit);
            let via = TcpVia::FrontDoor;
            match result {
                Ok(s) => finished(&tunnel, via, peer, started, (s.received, s.sent), None),
                Err(e) => finished(&tunnel, via, peer, started, (0, 0), Some(&e)),
            }
        }
        .instrument(span),
    );
}

/// The consumer's address: the real client behind trusted proxies, with the port of the
/// connection that reached us.
fn consumer_addr(req: &Request) -> SocketAddr {
    let socket_peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    match (req.extensions().get::<ClientIp>().map(|c| c.0), socket_peer) {
        (Some(ip), p) => SocketAddr::new(ip, p.map_or(0, |p| p.port())),
        (None, Some(p)) => p,
        (None, None) => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

/// The `101` that completes the upgrade of the request with WebSocket key `key`.
pub(super) fn switching_protocols(key: &[u8]) -> Response {
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key)) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The tunnel, if the request carries the owner's API key or the tunnel's access token. A
/// wrong credential and an unknown tunnel are the same 401, after the same work; a tunnel
/// that is not a TCP tunnel is a 400 for its owner only. Every pod can tell: the access
/// token's digest is registered with the tunnel.
async fn authenticate(
    state: &AppState,
    id: &str,
    headers: &http::HeaderMap,
) -> Result<Arc<Tunnel>, TunnelError> {
    let presented = presented_credential(headers).unwrap_or("");
    let tunnel = state.registry.lookup(id).await?;
    let record = tunnel.as_ref().and_then(|t| t.tcp);
    let by_key = state.settings.api_keys.check(presented);
    let by_token = match &record {
        Some(t) => t.access_token_matches(presented),
        // Same work as a real comparison, so timing does not reveal which ids exist.
        None => SecretHash::of("no such tunnel").matches(presented),
    };
    let Some(tunnel) = tunnel else {
        return Err(TunnelError::Unauthorized);
    };
    let owner = by_key == Some(tunnel.owner);
    match record {
        Some(_) if owner || by_token => Ok(tunnel),
        None if owner => Err(TunnelError::Invalid(format!(
            "tunnel {id} is not a TCP tunnel (create it with \"proto\": \"tcp\")"
        ))),
        _ => {
            warn!(tunnel = %id.chars().take(64).collect::<String>(), "tcp front door refused: bad credential or unknown tunnel");
            Err(TunnelError::Unauthorized)
        }
    }
}

/// The `Sec-WebSocket-Key` of a WebSocket (version 13) upgrade request.
fn websocket_key(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(SEC_WEBSOCKET_KEY)?;
    (upgrades_to_websocket(headers) && version_ok).then(|| key.as_bytes().to_vec())
}
