//! Sending a public request through the tunnel: its head, then its body pumped under flow
//! control, then the wait for the response head.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, Method};
use tunnel_protocol::head_json::HeaderList;
use tunnel_protocol::mux::{pump, BodyReceiver, BodySender, PumpError, RequestParts, ServerMux};
use tunnel_protocol::{ResetCode, ResponseHead, StreamError};

use super::headers::{prepare_request_headers, ForwardInfo, ProxiedHeaders};
use super::log::Traffic;
use crate::edge::framing::RequestSlot;
use crate::error::TunnelError;
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

/// Why a request into a client's session got no answer.
pub(super) enum Failure {
    /// No stream could be opened: the session was gone, or refused new streams as it closes
    /// (its client moved on). Nothing of the request reached the client; here is its body,
    /// never started, so that the request can go where the client is now.
    NotSent(Body),
    /// Anything else, as the public client is to learn it.
    Error(TunnelError),
}

impl From<TunnelError> for Failure {
    fn from(e: TunnelError) -> Self {
        Failure::Error(e)
    }
}

/// Sends the request through the tunnel and waits for the response head.
pub(super) async fn forward(req: Forward<'_>) -> Result<Forwarded, Failure> {
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
    let Some(conn) = tunnel.connection() else {
        return Err(Failure::NotSent(body));
    };
    let info = forward_info(state, prefix, public_headers, peer);
    let headers = ProxiedHeaders::new(public_headers, &info, websocket);
    exchange(Exchange {
        state,
        mux: &conn.mux,
        method,
        target,
        headers,
        body,
        websocket,
        request_id,
        slot,
        counted: Some(tunnel),
    })
    .await
}

/// One request into a client's multiplexer, its headers already as the local service gets
/// them: a public request here ([`forward`]) or one another pod forwarded (`relay`).
pub(super) struct Exchange<'a, H = HeaderMap> {
    pub(super) state: &'a AppState,
    pub(super) mux: &'a ServerMux,
    pub(super) method: Method,
    pub(super) target: &'a str,
    /// A map (a request from another pod) or the public map read under the proxy's rules.
    pub(super) headers: H,
    pub(super) body: Body,
    pub(super) websocket: bool,
    pub(super) request_id: &'a str,
    pub(super) slot: Option<&'a RequestSlot>,
    /// The tunnel whose counters and limits the body goes through; `None` for a request that
    /// another pod counted and limited already.
    pub(super) counted: Option<&'a Arc<Tunnel>>,
}

/// Opens a stream with the head, pumps the body, and waits for the response head.
pub(super) async fn exchange<H: HeaderList>(x: Exchange<'_, H>) -> Result<Forwarded, Failure> {
    let Exchange {
        state,
        mux,
        method,
        target,
        headers,
        body,
        websocket,
        request_id,
        slot,
        counted,
    } = x;
    let has_body = !http_body::Body::is_end_stream(&body) && !websocket;
    let parts = RequestParts {
        method: method.as_str().to_string(),
        target: target.to_string(),
        headers,
    };
    // A request with a body, or an upgrade (its direction carries the public client's bytes
    // after a `101`), keeps its sender; any other ends with its head.
    let opened = match has_body || websocket {
        true => mux.open_stream(parts).await.map(|(s, r)| (Some(s), r)),
        false => mux.send_request(parts).await.map(|r| (None, r)),
    };
    let (sender, response) = match opened {
        Ok(opened) => opened,
        Err(StreamError::ConnectionClosed) => return Err(Failure::NotSent(body)),
        Err(e) => return Err(open_error(e).into()),
    };
    let too_large = Arc::new(AtomicBool::new(false));
    let upgrade = match sender {
        sender if websocket => sender,
        Some(sender) => {
            let pump = RequestBody {
                sender,
                traffic: counted.map(|t| Traffic::new(t.clone(), state.metrics.clone())),
                max: counted.map_or(0, |_| state.settings.limits.max_body_bytes),
                too_large: too_large.clone(),
                request_id: request_id.to_string(),
            };
            state.tasks.requests.spawn(pump.run(body));
            None
        }
        None => None,
    };
    let answer = match tokio::time::timeout(state.settings.timeouts.request_timeout, response).await
    {
        Err(_) => return Err(TunnelError::Timeout.into()),
        Ok(Err(_)) if too_large.load(Ordering::Acquire) => {
            return Err(TunnelError::BodyTooLarge.into())
        }
        Ok(Err(e)) => {
            // The framing guard cut the body off (a malformed chunk line): the public
            // client's bytes, not the tunnel client, are at fault.
            return Err(match slot.and_then(RequestSlot::refusal) {
                Some(refusal) => refusal.to_error(),
                None => stream_error(&e),
            }
            .into());
        }
        Ok(Ok(answer)) => answer,
    };
    Ok(Forwarded {
        head: answer.head,
        receiver: answer.body,
        upgrade,
    })
}

/// Why no stream could be opened, when the connection had not closed (that is
/// [`Failure::NotSent`]).
fn open_error(e: StreamError) -> TunnelError {
    match e {
        StreamError::Reset {
            code: ResetCode::Refused,
            ..
        } => TunnelError::Overloaded,
        _ => TunnelError::ClientDisconnected,
    }
}

/// The headers the local service gets, as a map for a request sent on to another pod: the
/// public ones under the proxy's rules ([`prepare_request_headers`]), and for a WebSocket the
/// upgrade headers hop-by-hop removal took out. A request into a session here is written
/// from the public map under the same rules instead ([`ProxiedHeaders`]).
pub(super) fn tunnel_headers(
    state: &AppState,
    prefix: Option<&str>,
    public_headers: &HeaderMap,
    peer: Option<IpAddr>,
    websocket: bool,
) -> HeaderMap {
    let mut headers = public_headers.clone();
    prepare_request_headers(
        &mut headers,
        &forward_info(state, prefix, public_headers, peer),
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

/// What the forwarding headers are made of.
fn forward_info<'a>(
    state: &'a AppState,
    prefix: Option<&'a str>,
    public_headers: &'a HeaderMap,
    peer: Option<IpAddr>,
) -> ForwardInfo<'a> {
    ForwardInfo {
        client_ip: peer.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        proto: state.public_proto(),
        host: public_headers.get(HOST).and_then(|h| h.to_str().ok()),
        prefix,
    }
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

/// The public request body on its way into the tunnel (a task of its own, so that the
/// response can start before the upload ends).
struct RequestBody {
    sender: BodySender,
    /// Where its bytes are counted; `None` when another pod counts them.
    traffic: Option<Traffic>,
    /// Most bytes a body may have (0: no limit).
    max: u64,
    /// Set when the body went past `max`.
    too_large: Arc<AtomicBool>,
    request_id: String,
}

impl RequestBody {
    /// Streams the body, chunk by chunk, under flow control. A chunked body that grows past
    /// the limit is cut and the stream reset (`Content-Length` bodies were refused before
    /// anything was sent).
    async fn run(mut self, body: Body) {
        let (max, traffic) = (self.max, &self.traffic);
        let mut total = 0u64;
        let pumped = pump(body, &mut self.sender, |n| {
            total += n as u64;
            if max > 0 && total > max {
                return Err(TunnelError::BodyTooLarge);
            }
            if let Some(traffic) = traffic {
                traffic.inbound(n as u64);
            }
            Ok(())
        })
        .await;
        let request_id = &self.request_id;
        let tunnel = self.traffic.as_ref().map(|t| t.tunnel().id.as_str());
        match pumped {
            Ok(_) | Err(PumpError::Cancelled) => {}
            Err(PumpError::Stopped(_too_large)) => {
                self.too_large.store(true, Ordering::Release);
                self.sender
                    .reset(ResetCode::Refused, "request body too large");
            }
            Err(PumpError::Send(e) | PumpError::Finish(e)) => {
                tracing::debug!(%request_id, ?tunnel, error = %e, "request body not delivered");
            }
            Err(PumpError::Body(e)) => {
                tracing::debug!(%request_id, ?tunnel, error = %e, "public client aborted the request body");
                self.sender
                    .reset(ResetCode::Cancelled, "public client aborted the upload");
            }
        }
    }
}
