//! Public requests for a tunnel whose client is connected to another pod: forwarded there
//! (see [`crate::peer`]), and answered here exactly as a local tunnel's would be (the same
//! header rules, limits, log line, metrics and error codes; the request counted once, here).
//!
//! If that pod answers that the client is not there (it moved) or cannot be reached, the
//! registry is asked again, waiting briefly for the client's new claim, and the request is
//! sent once more, provided its body was never started (the other pod asks for it with
//! `100 Continue`). A client that moved to this very pod is served from here.
//!
//! The other way round, a request whose client's session here was gone or closing before
//! anything of it was sent ([`follow`]: its client moved, as a draining pod tells it to) looks
//! the client up the same way, and goes where it is now.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};
use tunnel_protocol::ResponseHead;

use super::forward::{tunnel_headers, Forward};
use super::headers::prepare_response_headers;
use super::log::{Outcome, RequestLog};
use super::response::{respond, Downstream};
use crate::edge::framing::RequestSlot;
use crate::error::TunnelError;
use crate::observe::metrics::Metrics;
use crate::peer::join::{join, JoinError};
use crate::peer::{Answer, Outgoing, PeerClient, Refusal, SendError};
use crate::state::AppState;
use crate::tunnel::{Lease, Tunnel};

/// How long a request waits for a moving client's new claim before it fails.
const RELOCATE_WAIT: Duration = Duration::from_secs(2);

/// How a forwarded request ended.
pub(super) enum Remote {
    /// With this response for the public client.
    Answered(Response),
    /// With this error (to be answered and logged like a local one).
    Failed(TunnelError, RequestLog),
    /// The client is connected here now: serve the request locally.
    MovedHere {
        tunnel: Arc<Tunnel>,
        body: Body,
        log: RequestLog,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    },
}

/// Forwards `req` to the pod `lease` names (then, if need be, once more where the client
/// went).
pub(super) async fn forward(
    req: Forward<'_>,
    lease: Arc<Lease>,
    peers: &PeerClient,
    log: RequestLog,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Remote {
    let Forward {
        state,
        tunnel,
        method,
        target,
        headers: public_headers,
        peer,
        body,
        websocket,
        request_id: _,
        slot,
        prefix,
    } = req;
    let headers = tunnel_headers(state, prefix, public_headers, peer, websocket);
    let has_body = !http_body::Body::is_end_stream(&body) && !websocket;
    let meter = Meter::new(state, tunnel);
    let mut body = has_body.then(|| Body::new(meter.wrap(body)));
    let (mut lease, mut tunnel) = (lease, tunnel.clone());
    for attempt in 0..2 {
        let outgoing = Outgoing {
            peer: lease.peer.clone(),
            tunnel: tunnel.id.clone(),
            method: method.clone(),
            target: target.to_string(),
            headers: headers.clone(),
            body: body.take(),
        };
        let back = match send(state, peers, outgoing, &lease, &meter, slot).await {
            Sent::Answered(resp) => {
                return answered(state, &tunnel, resp, on_upgrade, websocket, log, prefix)
            }
            Sent::Failed(e) => return Remote::Failed(e, log),
            Sent::Elsewhere(back) => back,
        };
        if attempt == 1 || (has_body && back.is_none()) {
            break;
        }
        body = back;
        match state
            .registry
            .relocate(&tunnel.id, Some(&lease), RELOCATE_WAIT)
            .await
        {
            Err(e) => return Remote::Failed(e.into(), log),
            Ok(None) => return Remote::Failed(TunnelError::TunnelNotFound, log),
            Ok(Some(t)) if t.connection().is_some() => {
                meter.stop();
                return Remote::MovedHere {
                    tunnel: t,
                    body: body.unwrap_or_else(Body::empty),
                    log,
                    on_upgrade,
                };
            }
            Ok(Some(t)) => match t.remote() {
                Some(l) => (lease, tunnel) = (l, t),
                None => break,
            },
        }
    }
    Remote::Failed(TunnelError::TunnelOffline, log)
}

/// Sends `req`, which found its client's session here gone or closing before anything was
/// sent, where the client is now: the registry asked again, waiting as [`forward`] does for
/// the client's new claim (a draining pod's client reconnects elsewhere, and its session here
/// refuses new requests once its own are done).
pub(super) async fn follow(
    req: Forward<'_>,
    peers: &PeerClient,
    log: RequestLog,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Remote {
    let relocated = req
        .state
        .registry
        .relocate(&req.tunnel.id, None, RELOCATE_WAIT)
        .await;
    let tunnel = match relocated {
        Err(e) => return Remote::Failed(e.into(), log),
        Ok(None) => return Remote::Failed(TunnelError::TunnelNotFound, log),
        Ok(Some(t)) => t,
    };
    match (tunnel.connection(), tunnel.remote()) {
        (Some(_), _) => Remote::MovedHere {
            tunnel,
            body: req.body,
            log,
            on_upgrade,
        },
        (None, Some(lease)) => {
            let req = Forward {
                tunnel: &tunnel,
                ..req
            };
            forward(req, lease, peers, log, on_upgrade).await
        }
        (None, None) => Remote::Failed(TunnelError::TunnelOffline, log),
    }
}

/// What one attempt came to.
enum Sent {
    /// The local service's answer (or a protocol switch).
    Answered(hyper::Response<hyper::body::Incoming>),
    /// An error to answer.
    Failed(TunnelError),
    /// The client is not on that pod (or the pod is gone): the body, if never started.
    Elsewhere(Option<Body>),
}

/// One attempt, with the request timeout over the wait for the response head.
async fn send(
    state: &AppState,
    peers: &PeerClient,
    outgoing: Outgoing,
    lease: &Lease,
    meter: &Meter,
    slot: Option<&RequestSlot>,
) -> Sent {
    let timeout = state.settings.timeouts.request_timeout;
    match tokio::time::timeout(timeout, peers.send(outgoing)).await {
        Err(_) => Sent::Failed(TunnelError::Timeout),
        Ok(Ok(Answer::Response(resp))) => Sent::Answered(resp),
        Ok(Ok(Answer::Refused {
            refusal: Refusal::Error(e),
            ..
        })) => Sent::Failed(meter.failure(slot).unwrap_or(e)),
        Ok(Ok(Answer::Refused {
            refusal: Refusal::NotHere,
            body,
        })) => Sent::Elsewhere(body),
        Ok(Err(SendError::Unreachable { error, body })) => {
            debug!(node = %lease.node, %error, "pod unreachable");
            Sent::Elsewhere(body)
        }
        Ok(Err(e)) => {
            debug!(node = %lease.node, error = %e, "forwarding failed");
            Sent::Failed(
                meter
                    .failure(slot)
                    .unwrap_or(TunnelError::ClientDisconnected),
            )
        }
    }
}

/// The other pod passed the local service's answer on: the public response, as for a local
/// tunnel.
fn answered(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    resp: hyper::Response<hyper::body::Incoming>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    websocket: bool,
    log: RequestLog,
    prefix: Option<&str>,
) -> Remote {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return match (websocket, on_upgrade) {
            (true, Some(public)) => {
                Remote::Answered(switch(state, tunnel, resp, public, log, prefix))
            }
            _ => Remote::Failed(TunnelError::BadResponse, log),
        };
    }
    let (parts, incoming) = resp.into_parts();
    let head = ResponseHead {
        stream_id: 0,
        status: parts.status.as_u16(),
        headers: parts.headers.into(),
        end_stream: http_body::Body::is_end_stream(&incoming),
    };
    Remote::Answered(respond(
        state,
        head,
        Downstream::Peer(incoming),
        log,
        tunnel,
        prefix,
    ))
}

/// A WebSocket through the other pod: `101` to the public client, then both upgraded
/// connections joined until both sides are done (or the idle timeout).
fn switch(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    resp: hyper::Response<hyper::body::Incoming>,
    public: hyper::upgrade::OnUpgrade,
    mut log: RequestLog,
    prefix: Option<&str>,
) -> Response {
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut headers: HeaderMap = resp.headers().clone();
    prepare_response_headers(&mut headers, prefix);
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    log.status = 101;
    let (idle, metrics) = (state.settings.timeouts.idle_timeout, state.metrics.clone());
    let peer = hyper::upgrade::on(resp);
    state.tasks.requests.spawn(async move {
        let (public, peer) = match tokio::try_join!(public, peer) {
            Ok(both) => both,
            Err(e) => {
                debug!(request_id = %log.request_id, error = %e, "upgrade through the pod failed");
                log.outcome = Outcome::UpgradeFailed;
                drop(log); // writes the session's line
                return;
            }
        };
        let _open = metrics.websocket_opened();
        match join(TokioIo::new(public), TokioIo::new(peer), idle).await {
            Ok(joined) => {
                log.bytes = joined.up + joined.down;
                log.outcome = Outcome::Done;
                let stats = &log.tunnel.stats;
                stats.bytes_in.fetch_add(joined.up, Ordering::Relaxed);
                stats.bytes_out.fetch_add(joined.down, Ordering::Relaxed);
                metrics.bytes_in(joined.up);
                metrics.bytes_out(joined.down);
            }
            Err(JoinError::IdleTimeout) => log.outcome = Outcome::IdleTimeout,
            Err(e) => {
                debug!(request_id = %log.request_id, error = %e, "websocket through the pod ended abnormally");
                log.outcome = Outcome::WebSocketAborted;
            }
        }
        drop(log); // writes the session's line
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = headers;
    out
}

/// Counts a forwarded request body here (the tunnel's counters, the metrics) and enforces
/// `TUNNEL_MAX_BODY_BYTES` on it, as the local pump does.
struct Meter {
    tunnel: Arc<Tunnel>,
    metrics: Arc<Metrics>,
    max: u64,
    too_large: Arc<AtomicBool>,
    /// Off once the body is handed to the local pump instead (which counts itself).
    on: Arc<AtomicBool>,
}

impl Meter {
    fn new(state: &AppState, tunnel: &Arc<Tunnel>) -> Self {
        Self {
            tunnel: tunnel.clone(),
            metrics: state.metrics.clone(),
            max: state.settings.limits.max_body_bytes,
            too_large: Arc::new(AtomicBool::new(false)),
            on: Arc::new(AtomicBool::new(true)),
        }
    }

    fn wrap(&self, inner: Body) -> Metered {
        Metered {
            inner,
            tunnel: self.tunnel.clone(),
            metrics: self.metrics.clone(),
            max: self.max,
            total: 0,
            too_large: self.too_large.clone(),
            on: self.on.clone(),
        }
    }

    fn stop(&self) {
        self.on.store(false, Ordering::Release);
    }

    /// What the public client is told when the exchange failed because of its own body: too
    /// large, or refused by the framing guard.
    fn failure(&self, slot: Option<&RequestSlot>) -> Option<TunnelError> {
        if self.too_large.load(Ordering::Acquire) {
            return Some(TunnelError::BodyTooLarge);
        }
        slot.and_then(RequestSlot::refusal).map(|r| r.to_error())
    }
}

/// A public request body on its way to the other pod, counted and limited.
struct Metered {
    inner: Body,
    tunnel: Arc<Tunnel>,
    metrics: Arc<Metrics>,
    max: u64,
    total: u64,
    too_large: Arc<AtomicBool>,
    on: Arc<AtomicBool>,
}

/// The body grew past `TUNNEL_MAX_BODY_BYTES`.
#[derive(Debug, thiserror::Error)]
#[error("request body too large")]
struct TooLarge;

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let (Some(data), true) = (f.data_ref(), this.on.load(Ordering::Acquire)) {
                let n = data.len() as u64;
                this.total += n;
                if this.max > 0 && this.total > this.max {
                    this.too_large.store(true, Ordering::Release);
                    warn!(tunnel = %this.tunnel.id, "request body too large; cut");
                    return Poll::Ready(Some(Err(Box::new(TooLarge))));
                }
                this.tunnel.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
                this.metrics.bytes_in(n);
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
