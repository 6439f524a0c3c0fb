//! `GET /api/tunnel/connect/{id}`: where a tunnel client authenticates and upgrades to the
//! WebSocket that carries its tunnel's traffic.
//!
//! The token is checked *before* the upgrade, from the `Authorization` header (never the URL),
//! and a wrong token and an unknown tunnel get the same 401: nothing is allocated for a client
//! and nothing reveals which ids exist until it has authenticated.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info, info_span, warn, Instrument};
use tunnel_protocol::frame::{max_message, Frame};
use tunnel_protocol::headers::upgrades_to_websocket;
use tunnel_protocol::mux::{self, Goodbye, MuxConfig, Role};
use tunnel_protocol::ws::{Message, WebSocket, WsError};
use tunnel_protocol::{
    ControlMessage, Feature, GoodbyeReason, ProtocolError, Welcome, PROTOCOL_VERSION,
};

use crate::auth::{presented_credential, SecretHash};
use crate::edge::PeerAddr;
use crate::error::TunnelError;
use crate::observe::events::EventKind;
use crate::state::AppState;
use crate::tunnel::record::Tunnel;

/// Handles the upgrade request.
#[utoipa::path(get, path = "/api/tunnel/connect/{id}", tag = "client",
    description = "The WebSocket a tunnel-client serves its tunnel on (tunnel protocol inside). \
                   The tunnel's token goes in `Authorization: Bearer`, never in the URL.",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("tunnel_token" = [])),
    responses(
        (status = 101, description = "Switched to WebSocket"),
        (status = 401, description = "Wrong token or unknown tunnel (deliberately the same answer)", body = crate::error::ErrorBody),
        (status = 426, description = "Not a WebSocket (version 13) upgrade request"),
        (status = 503, description = "The server is shutting down", body = crate::error::ErrorBody)))]
pub async fn connect(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    mut req: Request,
) -> Response {
    if state.shutdown.is_cancelled() {
        return TunnelError::ShuttingDown.json_response();
    }
    let headers = req.headers();
    let tunnel = match authenticate(&state, &id, headers).await {
        Ok(tunnel) => tunnel,
        Err(e) => return e.json_response(),
    };
    let Some(key) = websocket_key(headers) else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(UPGRADE, HeaderValue::from_static("websocket"))],
            "this endpoint only speaks WebSocket (version 13)\n",
        )
            .into_response();
    };
    // Bound the clients that are between upgrade and hello: each holds a socket and buffers.
    let Ok(permit) = state.handshakes.clone().try_acquire_owned() else {
        warn!("too many tunnel clients handshaking at once");
        return TunnelError::HandshakesFull.json_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return TunnelError::BadRequest("connection cannot be upgraded").json_response();
    };
    let remote = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let span = info_span!("client", tunnel = %tunnel.id, peer = %remote);
    let tasks = state.tasks.clients.clone();
    tasks.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocket::new(
                        TokioIo::new(upgraded),
                        Role::Server,
                        max_message(state.mux_config().max_frame_size),
                    );
                    serve_client(state, tunnel, ws, remote, permit).await;
                }
                Err(e) => warn!(error = %e, "websocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The tunnel `id` if the request carries its token. A wrong token and an unknown tunnel are
/// the same 401, after the same work.
async fn authenticate(
    state: &AppState,
    id: &str,
    headers: &http::HeaderMap,
) -> Result<Arc<Tunnel>, TunnelError> {
    let token = presented_credential(headers).unwrap_or("");
    let mut tunnel = state.registry.lookup(id).await?;
    if !tunnel.as_ref().is_some_and(|t| t.token_matches(token)) {
        // Refused only on what the store says: a cached answer may predate the tunnel (a
        // miss cached here just before its create on another pod, whose hint is still on its
        // way), and a client refused takes its tunnel for taken over.
        tunnel = state.registry.lookup_fresh(id).await?;
    }
    let authorized = match &tunnel {
        Some(t) => t.token_matches(token),
        None => {
            // Same work as a real comparison, so timing does not reveal unknown ids.
            let _ = SecretHash::of("no such tunnel").matches(token);
            false
        }
    };
    tunnel.filter(|_| authorized).ok_or_else(|| {
        warn!(tunnel = %truncate(id), "client connect refused: bad token or unknown tunnel");
        TunnelError::Unauthorized
    })
}

/// The `Sec-WebSocket-Key` of a WebSocket (version 13) upgrade request; `None` for anything
/// else.
fn websocket_key(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let is_upgrade = upgrades_to_websocket(headers);
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(SEC_WEBSOCKET_KEY)?;
    (is_upgrade && version_ok).then(|| key.as_bytes().to_vec())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

type ServerWs = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// A control message that did not go out.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    WebSocket(#[from] WsError),
}

async fn send_control(ws: &mut ServerWs, msg: ControlMessage) -> Result<(), SendError> {
    let json = serde_json::to_string(&msg)?;
    Ok(ws.send_text(&json).await?)
}

/// Why a client's hello was refused; the message is what its goodbye says.
#[derive(Debug, thiserror::Error)]
enum HelloError {
    #[error("no hello within {0}s")]
    Timeout(u64),
    #[error("expected a hello text frame")]
    NotText,
    #[error("websocket error: {0}")]
    WebSocket(WsError),
    #[error("closed before hello")]
    Closed,
    #[error("first message must be hello")]
    NotHello,
    #[error("malformed hello: {0}")]
    Malformed(ProtocolError),
    #[error(
        "this server (tunnel-server {server}) speaks tunnel protocol {PROTOCOL_VERSION}, your client \
         speaks {client}: install a tunnel-client release that speaks protocol {PROTOCOL_VERSION}",
        server = env!("CARGO_PKG_VERSION")
    )]
    Version { client: u32 },
    #[error("this is a TCP tunnel and this tunnel-client cannot carry TCP: upgrade tunnel-client")]
    NoTcp,
}

impl HelloError {
    /// The reason the goodbye gives.
    fn reason(&self) -> GoodbyeReason {
        match self {
            HelloError::Version { .. } | HelloError::NoTcp => GoodbyeReason::VersionMismatch,
            _ => GoodbyeReason::ProtocolError,
        }
    }
}

async fn refuse(ws: &mut ServerWs, refusal: HelloError) {
    let message = refusal.to_string();
    warn!(%message, "client refused");
    let reason = refusal.reason();
    let _ = send_control(ws, ControlMessage::Goodbye { reason, message }).await;
    ws.close(1000, "").await;
}

/// Reads the client's hello and checks its version, and that the client of a TCP tunnel can
/// carry TCP streams; returns the client's agent string.
async fn handshake(
    state: &AppState,
    tunnel: &Tunnel,
    ws: &mut ServerWs,
) -> Result<String, HelloError> {
    let deadline = state.settings.timeouts.handshake_timeout;
    // `recv` answers pings and skips pongs itself.
    let first = tokio::time::timeout(deadline, async {
        match ws.recv().await {
            Some(Ok(Message::Text(t))) => Ok(t),
            Some(Ok(_)) => Err(HelloError::NotText),
            Some(Err(e)) => Err(HelloError::WebSocket(e)),
            None => Err(HelloError::Closed),
        }
    })
    .await
    .map_err(|_| HelloError::Timeout(deadline.as_secs()))??;
    let hello = match Frame::decode_text(&first) {
        Ok(ControlMessage::Hello(h)) => h,
        Ok(_) => return Err(HelloError::NotHello),
        Err(e) => return Err(HelloError::Malformed(e)),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(HelloError::Version {
            client: hello.protocol_version,
        });
    }
    if tunnel.tcp.is_some() && !hello.features.contains(&Feature::Tcp) {
        return Err(HelloError::NoTcp);
    }
    Ok(hello.agent.chars().take(100).collect())
}

/// The answer to a good hello: the tunnel and the multiplexer settings the client must use.
fn welcome(state: &AppState, tunnel: &Tunnel, cfg: &MuxConfig) -> Welcome {
    Welcome {
        protocol_version: PROTOCOL_VERSION,
        tunnel_id: tunnel.id.clone(),
        public_url: state.urls.public_url(&tunnel.id),
        initial_window: cfg.initial_window,
        max_window: Some(cfg.max_window),
        max_frame_size: cfg.max_frame_size,
        ping_interval_secs: u32::try_from(cfg.ping_interval.as_secs()).unwrap_or(u32::MAX),
    }
}

/// One tunnel client from its upgrade: hello, welcome, the claim of the tunnel's live session,
/// then the multiplexer until the connection ends.
async fn serve_client(
    state: Arc<AppState>,
    tunnel: Arc<Tunnel>,
    mut ws: ServerWs,
    remote: SocketAddr,
    handshake_permit: tokio::sync::OwnedSemaphorePermit,
) {
    let agent = match handshake(&state, &tunnel, &mut ws).await {
        Ok(agent) => agent,
        Err(refusal) => return refuse(&mut ws, refusal).await,
    };
    drop(handshake_permit);
    let cfg = state.mux_config();
    // The welcome goes out once the tunnel is claimed: a client that is told it is online is
    // online (with a shared registry, the claim is a round trip to the store, and may fail).
    let welcome = welcome(&state, &tunnel, &cfg);
    let (mux, mut events) = mux::start_server(ws, cfg);
    // Reachable from the claim on, but its streams wait for the welcome to go out first.
    mux.hold_streams_until_welcome();
    let claim = match state.registry.claim(&tunnel, mux.clone(), remote).await {
        Ok(claim) => claim,
        Err(e) => {
            warn!(error = %e, "cannot claim the tunnel for this client");
            mux.close(
                GoodbyeReason::ServerShutdown,
                "the tunnel registry is unavailable",
            )
            .await;
            return;
        }
    };
    if let Err(e) = mux.welcome(welcome).await {
        warn!(error = %e, "client left during the handshake");
    }
    if let Some(old) = claim.replaced {
        info!("a new client took over the tunnel; closing the previous one");
        let message = format!("replaced by another client from {}", remote.ip());
        state
            .tasks
            .clients
            .spawn(async move { old.close_replaced(&message).await });
    }
    info!(%agent, "client connected");
    state.metrics.client_connected();
    let connected = EventKind::connected(agent, remote);
    state.events.publish(tunnel.owner, &tunnel.id, connected);
    // The tunnel may have been deleted, or shutdown begun, while we were handshaking.
    let still_registered = state
        .registry
        .get(&tunnel.id)
        .is_some_and(|t| Arc::ptr_eq(&t, &tunnel));
    if !still_registered {
        mux.close(GoodbyeReason::Deleted, "the tunnel was deleted")
            .await;
    } else if state.shutdown.is_cancelled() {
        mux.announce(GoodbyeReason::ServerShutdown, "the server is restarting")
            .await;
    }
    // The server's end is only told of goodbyes: it opens streams, never takes them.
    while let Some(Goodbye { reason, message }) = events.recv().await {
        info!(?reason, %message, "client says goodbye");
    }
    if let Err(e) = state.registry.release(&tunnel, claim.generation).await {
        warn!(error = %e, "cannot release the tunnel");
    }
    state.metrics.client_disconnected();
    let reason = mux.close_reason().unwrap_or_default();
    info!(%reason, "client disconnected");
    let gone = EventKind::Disconnected { reason };
    state.events.publish(tunnel.owner, &tunnel.id, gone);
}
