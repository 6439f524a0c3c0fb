//! Requests another pod forwarded (see [`crate::peer`]), for tunnels whose client is
//! connected here: into the client's multiplexer as they came, and the local service's
//! answer back unchanged but for what HTTP/1.1 framing of the hop needs.
//!
//! The forwarding pod did everything a public request meets (routing, access rules, limits,
//! header rules, the log line, the metrics, the counters); here only what needs the client:
//! the tunnel's public rate limit, counted here for every pod since all of a tunnel's
//! requests pass through the pod holding its client, and the stream limit of its multiplexer.
//! A request whose client is not here is answered "not here", never forwarded again; so is
//! one whose client's session here closed before the request could be opened on it.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::header::{HeaderValue, CONNECTION, EXPECT, UPGRADE};
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::debug;
use tunnel_protocol::mux::{BodyReceiver, BodySender};
use tunnel_protocol::ResponseHead;

use super::forward::{exchange, Exchange, Failure, Forwarded};
use super::headers::strip_hop_by_hop;
use super::upgrade::{requested_upgrade, Upgrade};
use crate::error::TunnelError;
use crate::peer::wire::{strip_own, EXPECT_ADDED, TUNNEL};
use crate::peer::Refusal;
use crate::state::AppState;

/// Serves one forwarded request. See the module documentation.
pub async fn relay(state: Arc<AppState>, req: hyper::Request<Incoming>) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(id) = parts.headers.get(TUNNEL).and_then(|v| v.to_str().ok()) else {
        return Refusal::Error(TunnelError::BadRequest("no tunnel named")).response();
    };
    let Some((tunnel, conn)) = state
        .registry
        .get(id)
        .and_then(|t| t.connection().map(|c| (t, c)))
    else {
        return Refusal::NotHere.response();
    };
    if let Err(e) = state.limits.check_public(&tunnel.id) {
        return Refusal::Error(e).response();
    }
    let websocket = requested_upgrade(&parts.headers) == Upgrade::WebSocket;
    let on_upgrade = match websocket {
        true => parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        false => None,
    };
    let mut headers = std::mem::take(&mut parts.headers);
    if headers.contains_key(EXPECT_ADDED) {
        headers.remove(EXPECT);
    }
    strip_own(&mut headers);
    strip_hop_by_hop(&mut headers);
    if websocket {
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    debug!(%request_id, tunnel = %tunnel.id, method = %parts.method, "request from another pod");
    let forwarded = exchange(Exchange {
        state: &state,
        mux: &conn.mux,
        method: parts.method.clone(),
        target,
        headers,
        body: Body::new(body),
        websocket,
        request_id: &request_id,
        slot: None,
        counted: None,
    })
    .await;
    match forwarded {
        // The session closed before the stream opened (its client moved on, and it finished
        // what it had): nothing was sent, the body never asked for; the other pod may look
        // the client up again and send the request there.
        Err(Failure::NotSent(_)) => Refusal::NotHere.response(),
        Err(Failure::Error(e)) => Refusal::Error(e).response(),
        Ok(Forwarded {
            head,
            receiver,
            upgrade,
        }) => match (upgrade, on_upgrade) {
            (Some(sender), Some(on_upgrade)) if head.status == 101 => {
                switch(&state, head, sender, receiver, on_upgrade)
            }
            (Some(mut sender), _) => {
                state.tasks.requests.spawn(async move {
                    let _ = sender.finish().await; // stream may be gone already: nothing to end
                });
                pass_on(head, receiver)
            }
            (None, _) => pass_on(head, receiver),
        },
    }
}

/// The local service's response as the hop carries it: its status and headers less the
/// hop-by-hop ones and the servers' own, its body streamed.
fn pass_on(head: ResponseHead, receiver: BodyReceiver) -> Response {
    let status = StatusCode::from_u16(head.status)
        .ok()
        .filter(|s| s.as_u16() >= 200);
    let (Some(status), Ok(mut headers)) = (status, head.headers.into_header_map()) else {
        return Refusal::Error(TunnelError::BadResponse).response();
    };
    strip_hop_by_hop(&mut headers);
    strip_own(&mut headers);
    let body = if head.end_stream {
        Body::empty()
    } else {
        Body::from_stream(receiver)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A `101` from the local service: passed on, then the upgraded hop spliced to the stream.
fn switch(
    state: &AppState,
    head: ResponseHead,
    sender: BodySender,
    receiver: BodyReceiver,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Response {
    let websocket = |h: &http::HeaderMap| {
        h.get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    };
    let Some(mut headers) = head.headers.into_header_map().ok().filter(websocket) else {
        return Refusal::Error(TunnelError::BadResponse).response();
    };
    strip_own(&mut headers);
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    let idle = state.settings.timeouts.idle_timeout;
    state.tasks.requests.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                if let Err(e) = tunnel_protocol::mux::splice(io, sender, receiver, Some(idle)).await
                {
                    debug!(error = %e, "websocket from another pod ended abnormally");
                }
            }
            Err(e) => debug!(error = %e, "upgrade of a peer connection failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}
