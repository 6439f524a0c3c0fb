//! Sending a public request through the tunnel: its head, then its body pumped under flow
//! control, then the wait for the response head.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use tunnel_protocol::headers::WireHeaders;
use tunnel_protocol::mux::{BodyReceiver, BodySender};
use tunnel_protocol::{ControlMessage, RequestHead, ResetCode, ResponseHead, StreamError};

use super::headers::{prepare_request_headers, ForwardInfo};
use crate::edge::framing::RequestSlot;
use crate::error::TunnelError;
use crate::observe::metrics::Metrics;
use crate::state::AppState;
use crate::tunnel::Tunnel;

/// One public request on its way into a tunnel: what [`forward`] needs.
pub(super) struct Forward<'a> {
    pub(super) state: &'a AppState,
    pub(super) tunnel: &'a Arc<Tunnel>,
    pub(super) method: Method,
    /// `/rest?q`, raw, as the local service will see it.
    pub(super) target: &'a str,
    /// `/<id>` when addressed by path prefix; `None` when by host.
    pub(super) prefix: Option<&'a str>,
    /// The public request's headers, before the proxy's rules.
    pub(super) headers: &'a HeaderMap,
    /// The public connection's peer address.
    pub(super) peer: Option<IpAddr>,
    pub(super) body: Body,
    /// A WebSocket upgrade: the request direction stays open after the head.
    pub(super) websocket: bool,
    pub(super) request_id: &'a str,
    /// The request's place on its public connection, for a refusal by the framing guard.
    pub(super) slot: Option<&'a RequestSlot>,
}

/// The local service's answer: its response head, the response body, and for a WebSocket
/// upgrade the request direction, kept open to carry the public client's bytes after a `101`.
pub(super) struct Forwarded {
    pub(super) head: ResponseHead,
    pub(super) receiver: BodyReceiver,
    pub(super) upgrade: Option<BodySender>,
}

/// Sends the request through the tunnel and waits for the response head.
pub(super) async fn forward(req: Forward<'_>) -> Result<Forwarded, TunnelError> {
    let Forward {
        state,
        tunnel,
        method,
        target,
        prefix,
        headers: public_headers,
        peer,
        body,
        websocket,
        request_id,
        slot,
    } = req;
    let conn = tunnel.connection().ok_or(TunnelError::TunnelOffline)?;
    let headers = tunnel_headers(state, prefix, public_headers, peer, websocket);
    let has_body = !http_body::Body::is_end_stream(&body) && !websocket;
    let (stream, head_rx) = conn.mux.open_stream().map_err(|e| match e {
        StreamError::Reset {
            code: ResetCode::Refused,
            ..
        } => TunnelError::Overloaded,
        _ => TunnelError::ClientDisconnected,
    })?;
    let head = RequestHead {
        stream_id: stream.id,
        method: method.as_str().to_string(),
        target: target.to_string(),
        headers: WireHeaders::from_header_map(&headers),
        end_stream: !has_body && !websocket,
    };
    conn.mux
        .send_control(ControlMessage::Request(head))
        .await
        .map_err(|_| TunnelError::ClientDisconnected)?;
    let mut sender = stream.sender;
    let too_large = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kept = if websocket {
        Some(sender)
    } else if has_body {
        let tunnel = tunnel.clone();
        let limit = BodyLimit {
            max: state.settings.limits.max_body_bytes,
            exceeded: too_large.clone(),
        };
        let metrics = state.metrics.clone();
        let request_id = request_id.to_string();
        state.tasks.requests.spawn(pump_request_body(
            body, sender, tunnel, limit, metrics, request_id,
        ));
        None
    } else {
        sender.mark_finished();
        None
    };
    let head = match tokio::time::timeout(state.settings.timeouts.request_timeout, head_rx).await {
        Err(_) => return Err(TunnelError::Timeout),
        Ok(Err(_)) => return Err(TunnelError::ClientDisconnected),
        Ok(Ok(Err(_))) if too_large.load(Ordering::Acquire) => {
            return Err(TunnelError::BodyTooLarge)
        }
        Ok(Ok(Err(e))) => {
            // The framing guard cut the body off (a malformed chunk line): the public
            // client's bytes, not the tunnel client, are at fault.
            return Err(match slot.and_then(RequestSlot::refusal) {
                Some(refusal) => refusal.to_error(),
                None => stream_error(&e),
            });
        }
        Ok(Ok(Ok(head))) => head,
    };
    Ok(Forwarded {
        head,
        receiver: stream.receiver,
        upgrade: kept,
    })
}

/// The headers the local service gets: the public ones under the proxy's rules
/// ([`prepare_request_headers`]), and for a WebSocket the upgrade headers hop-by-hop removal
/// took out.
fn tunnel_headers(
    state: &AppState,
    prefix: Option<&str>,
    public_headers: &HeaderMap,
    peer: Option<IpAddr>,
    websocket: bool,
) -> HeaderMap {
    let mut headers = public_headers.clone();
    let host = public_headers.get(HOST).and_then(|h| h.to_str().ok());
    prepare_request_headers(
        &mut headers,
        &ForwardInfo {
            client_ip: peer.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            proto: state.public_proto(),
            host,
            prefix,
        },
    );
    if websocket {
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
    headers
}

/// Maps why a stream ended before its response head to what the public client sees.
pub(super) fn stream_error(e: &StreamError) -> TunnelError {
    match e {
        StreamError::Reset { code, .. } => match code {
            ResetCode::LocalConnectFailed => TunnelError::LocalUnreachable,
            ResetCode::LocalError | ResetCode::Cancelled | ResetCode::IdleTimeout => {
                TunnelError::LocalError
            }
            ResetCode::Refused => TunnelError::Overloaded,
            ResetCode::ProtocolError | ResetCode::FlowControl | ResetCode::Other => {
                TunnelError::BadResponse
            }
        },
        StreamError::ConnectionClosed => TunnelError::ClientDisconnected,
        StreamError::Cancelled | StreamError::FlowControl => TunnelError::BadResponse,
    }
}

/// The body size limit for one request, and whether it was hit.
struct BodyLimit {
    max: u64,
    exceeded: Arc<std::sync::atomic::AtomicBool>,
}

/// Streams the public request body into the tunnel, chunk by chunk, under flow control. A
/// chunked body that grows past the limit is cut and the stream reset (`Content-Length`
/// bodies were refused before anything was sent).
async fn pump_request_body(
    body: Body,
    mut sender: BodySender,
    tunnel: Arc<Tunnel>,
    limit: BodyLimit,
    metrics: Arc<Metrics>,
    request_id: String,
) {
    let mut body = body;
    let mut total = 0u64;
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = sender.cancelled() => return,
        };
        match frame {
            None => {
                if let Err(e) = sender.finish().await {
                    tracing::debug!(%request_id, tunnel = %tunnel.id, error = %e, "request body end not delivered");
                }
                return;
            }
            Some(Ok(frame)) => {
                // Trailers are not forwarded.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total += data.len() as u64;
                if limit.max > 0 && total > limit.max {
                    limit.exceeded.store(true, Ordering::Release);
                    sender.reset(ResetCode::Refused, "request body too large");
                    return;
                }
                tunnel
                    .stats
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                metrics.bytes_in(data.len() as u64);
                // The last chunk of a Content-Length body carries the end marker itself.
                if http_body::Body::is_end_stream(&body) {
                    if let Err(e) = sender.send_last(data).await {
                        tracing::debug!(%request_id, tunnel = %tunnel.id, error = %e, "request body end not delivered");
                    }
                    return;
                }
                if sender.send(data).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(%request_id, tunnel = %tunnel.id, error = %e, "public client aborted the request body");
                sender.reset(ResetCode::Cancelled, "public client aborted the upload");
                return;
            }
        }
    }
}
