//! The receiving side of [`super::remote`]: a front-door connection another pod sent here,
//! for a TCP tunnel whose client is connected to this pod. The stream is opened as for a
//! front-door connection made here (the cap, the client's answer, the log line and the
//! counters), and after the `101` the upgraded peer connection carries the consumer's
//! WebSocket, whose frames the other pod passes through unchanged.
//!
//! A connection whose client is not here is answered "not here", never forwarded again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::StatusCode;
use hyper::body::Incoming;
use tunnel_protocol::{TcpOpen, TcpVia};

use super::front_door::carry_later;
use super::open::{finished, open_stream};
use crate::error::TunnelError;
use crate::peer::wire::{TCP, TUNNEL};
use crate::peer::Refusal;
use crate::state::AppState;

/// Serves one forwarded TCP connection. See the module documentation.
pub async fn relay(state: Arc<AppState>, mut req: hyper::Request<Incoming>) -> Response {
    let refuse = |e: TunnelError| Refusal::Error(e).response();
    let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(id) = text(TUNNEL).map(str::to_string) else {
        return refuse(TunnelError::BadRequest("no tunnel named"));
    };
    let Some(consumer) = text(TCP).and_then(|v| v.parse::<SocketAddr>().ok()) else {
        return refuse(TunnelError::BadRequest("no consumer address"));
    };
    let Some(tunnel) = state.registry.get(&id).filter(|t| t.connection().is_some()) else {
        return Refusal::NotHere.response();
    };
    if tunnel.tcp.is_none() {
        return refuse(TunnelError::BadRequest("not a TCP tunnel"));
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse(TunnelError::BadRequest("connection cannot be upgraded"));
    };
    let open = TcpOpen {
        peer: consumer,
        local: state.settings.bind,
        via: TcpVia::FrontDoor,
    };
    let started = Instant::now();
    let max = state.settings.tcp.tcp_max_connections;
    let tcp = state.tcp.get_or_insert(&tunnel.id, max);
    let opened = match open_stream(&state, &tunnel, &tcp, open).await {
        Ok(o) => o,
        Err(e) => {
            finished(
                &tunnel,
                TcpVia::FrontDoor,
                consumer,
                started,
                (0, 0),
                Some(&e),
            );
            return refuse(e);
        }
    };
    carry_later(&state, tunnel, opened, on_upgrade, consumer, started);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}
