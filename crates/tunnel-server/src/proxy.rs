//! The path-prefix reverse proxy: `ANY /{tunnel_id}/{rest}` is forwarded through the tunnel's
//! client connection to the local service as `/{rest}`.
//!
//! Routing happens exactly once, on the raw (still percent-encoded) path: the first segment
//! must be a valid tunnel id as is, and everything after it is passed on byte for byte. So
//! `%2e%2e`, `%2f` and friends reach the local service untouched and can never select another
//! tunnel or a server route.
//!
//! Bodies stream both ways as chunks under the mux's flow control; nothing is buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tracing::{info, warn};
use tunnel_protocol::headers::WireHeaders;
use tunnel_protocol::mux::{BodyReceiver, BodySender};
use tunnel_protocol::{ControlMessage, RequestHead, ResetCode, ResponseHead, StreamError};

use crate::client_ip::ClientIp;
use crate::connect::PeerAddr;
use crate::error::TunnelError;
use crate::forwarding::{prepare_request_headers, prepare_response_headers, ForwardInfo};
use crate::metrics::{Metrics, Rejection};
use crate::registry::{looks_like_id, Tunnel};
use crate::state::AppState;

/// Splits `/id/rest?q` into `("id", "/rest?q")`; `rest` is `""` or starts with `?` when the
/// path is just `/id`.
pub fn split_target(path_and_query: &str) -> Option<(&str, &str)> {
    let after = path_and_query.strip_prefix('/')?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    Some((&after[..end], &after[end..]))
}

/// What kind of protocol switch a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// `Upgrade: websocket` with `Connection: upgrade`: passed through.
    WebSocket,
    /// Any other protocol (`h2c`…): refused by forwarding the request as plain HTTP/1.1
    /// without its upgrade headers, which RFC 9110 §7.8 allows (so `curl --http2` still works).
    Other,
}

fn requested_upgrade(headers: &http::HeaderMap) -> Upgrade {
    let connection_upgrade = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    match headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if connection_upgrade && p.trim().eq_ignore_ascii_case("websocket") => {
            Upgrade::WebSocket
        }
        Some(_) => Upgrade::Other,
        None => Upgrade::None,
    }
}

/// Handles every request no other route took. Every log line of a proxied request carries
/// the request id (see [`crate::request_id`]) and the tunnel as fields of its own. They are
/// not put in a `tracing` span: creating, entering and serialising a span on every request
/// cost about 10% of the server's CPU per small request, for lines that are almost always
/// just the one access line.
pub async fn proxy(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    let request_id = crate::request_id::ensure(req.headers_mut());
    proxy_request(state, req, request_id).await
}

async fn proxy_request(state: Arc<AppState>, req: Request, request_id: String) -> Response {
    let (mut parts, body) = req.into_parts();
    let headers = &parts.headers;
    if state.shutdown.is_cancelled() {
        return TunnelError::ShuttingDown.render(headers);
    }
    if parts.uri.scheme().is_some() || parts.method == Method::CONNECT {
        return TunnelError::BadRequest("proxy requests (CONNECT, absolute-form) are not served")
            .render(headers);
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let Some((id, rest)) = split_target(pq).filter(|(id, _)| looks_like_id(id)) else {
        return TunnelError::TunnelNotFound.render(headers);
    };
    if !rest.starts_with('/') {
        // `/id` or `/id?q`: relative links only work under `/id/`.
        let location = format!("/{id}/{rest}");
        let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(LOCATION, v);
        }
        return resp;
    }
    if pq.len() > state.settings.max_uri_bytes {
        return TunnelError::UriTooLong.render(headers);
    }
    let Some(tunnel) = state.registry.get(id) else {
        return TunnelError::TunnelNotFound.render(headers);
    };
    if let Err(e) = admit(&state, &tunnel, &parts) {
        return e.render(&parts.headers);
    }
    // A credential meant for the tunnel is not the local service's business.
    if tunnel.access.basic_auth.is_some() {
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let path = rest.split('?').next().unwrap_or("/").to_string();
    let log = RequestLog {
        request_id,
        metrics: state.metrics.clone(),
        tunnel: tunnel.clone(),
        method: parts.method.clone(),
        path,
        status: 0,
        bytes: 0,
        started: Instant::now(),
        outcome: Outcome::Pending,
    };
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    let on_upgrade = match requested_upgrade(&parts.headers) {
        Upgrade::WebSocket => match parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
            Some(u) => Some(u),
            None => {
                return TunnelError::BadRequest("this connection cannot be upgraded")
                    .render(&parts.headers)
            }
        },
        Upgrade::None | Upgrade::Other => None,
    };
    let websocket = on_upgrade.is_some();
    let forwarded = forward(
        &state,
        &tunnel,
        parts.method.clone(),
        rest,
        &parts.headers,
        peer,
        body,
        websocket,
        &log.request_id,
    )
    .await;
    match forwarded {
        Ok((head, receiver, Some(sender))) => match on_upgrade {
            Some(on_upgrade) if head.status == 101 => {
                switch_protocols(&state, head, sender, receiver, on_upgrade, log, &tunnel)
            }
            _ => {
                // The local service refused the upgrade: an ordinary response, and the
                // request direction (which would have carried WebSocket bytes) ends empty.
                tokio::spawn(async move {
                    let mut sender = sender;
                    let _ = sender.finish().await; // stream may be gone already: nothing to end
                });
                respond(&state, head, receiver, log, &tunnel)
            }
        },
        Ok((head, receiver, None)) => respond(&state, head, receiver, log, &tunnel),
        Err(e) => {
            let mut log = log;
            log.status = e.status().as_u16();
            log.outcome = Outcome::Error(e.code());
            tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
            e.render(&parts.headers)
        }
    }
}

/// Access control and limits for a public request, in the order a user would want to learn
/// about them: address, rate, credentials, size. Nothing is read from the body, so a client
/// sending `Expect: 100-continue` gets the refusal instead of a `100 Continue`.
fn admit(
    state: &AppState,
    tunnel: &Tunnel,
    parts: &http::request::Parts,
) -> Result<(), TunnelError> {
    let ip = parts
        .extensions
        .get::<ClientIp>()
        .map(|c| c.0)
        .or_else(|| parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()));
    if let Some(ip) = ip {
        if !tunnel.access.allows_ip(ip) {
            return Err(TunnelError::IpForbidden);
        }
    }
    state.limits.check_public(&tunnel.id)?;
    if let Some(auth) = &tunnel.access.basic_auth {
        if !auth.accepts(&parts.headers) {
            return Err(TunnelError::BasicAuthRequired);
        }
    }
    let max = state.settings.max_body_bytes;
    if max > 0 {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(TunnelError::BodyTooLarge);
        }
    }
    Ok(())
}

/// Sends the request through the tunnel and waits for the response head. For a WebSocket
/// upgrade the request direction stays open (it will carry the public client's bytes after a
/// `101`), and its sender is returned.
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    method: Method,
    target: &str,
    public_headers: &http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    body: Body,
    websocket: bool,
    request_id: &str,
) -> Result<(ResponseHead, BodyReceiver, Option<BodySender>), TunnelError> {
    let conn = tunnel.connection().ok_or(TunnelError::TunnelOffline)?;
    let mut headers = public_headers.clone();
    let prefix = format!("/{}", tunnel.id);
    let host = public_headers.get(HOST).and_then(|h| h.to_str().ok());
    prepare_request_headers(
        &mut headers,
        &ForwardInfo {
            client_ip: peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            proto: state.public_proto(),
            host,
            prefix: &prefix,
        },
    );
    if websocket {
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
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
            max: state.settings.max_body_bytes,
            exceeded: too_large.clone(),
        };
        let metrics = state.metrics.clone();
        let request_id = request_id.to_string();
        tokio::spawn(pump_request_body(
            body, sender, tunnel, limit, metrics, request_id,
        ));
        None
    } else {
        sender.mark_finished();
        None
    };
    let head = match tokio::time::timeout(state.settings.request_timeout, head_rx).await {
        Err(_) => return Err(TunnelError::Timeout),
        Ok(Err(_)) => return Err(TunnelError::ClientDisconnected),
        Ok(Ok(Err(_))) if too_large.load(Ordering::Acquire) => {
            return Err(TunnelError::BodyTooLarge)
        }
        Ok(Ok(Err(e))) => return Err(stream_error(&e)),
        Ok(Ok(Ok(head))) => head,
    };
    Ok((head, stream.receiver, kept))
}

/// Maps why a stream ended before its response head to what the public client sees.
fn stream_error(e: &StreamError) -> TunnelError {
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

/// Completes a WebSocket upgrade: answers `101` to the public client, then splices its
/// connection to the stream until both sides are done (or the stream is idle too long).
fn switch_protocols(
    state: &AppState,
    head: ResponseHead,
    sender: BodySender,
    receiver: BodyReceiver,
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut log: RequestLog,
    tunnel: &Arc<Tunnel>,
) -> Response {
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let headers = head.headers.to_header_map().ok().filter(|h| {
        h.get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    let Some(mut headers) = headers else {
        warn!(
            request_id = %log.request_id,
            tunnel = %tunnel.id,
            "client answered 101 without a valid websocket upgrade"
        );
        log.status = 502;
        log.outcome = Outcome::Error(TunnelError::BadResponse.code());
        return TunnelError::BadResponse.json_response();
    };
    prepare_response_headers(&mut headers, &format!("/{}", tunnel.id));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    log.status = 101;
    let idle = state.settings.idle_timeout;
    let tunnel = tunnel.clone();
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let _open = metrics.websocket_opened();
                let io = hyper_util::rt::TokioIo::new(upgraded);
                match tunnel_protocol::mux::splice(io, sender, receiver, Some(idle)).await {
                    Ok(stats) => {
                        log.bytes = stats.sent + stats.received;
                        log.outcome = Outcome::Done;
                        tunnel
                            .stats
                            .bytes_in
                            .fetch_add(stats.sent, Ordering::Relaxed);
                        tunnel
                            .stats
                            .bytes_out
                            .fetch_add(stats.received, Ordering::Relaxed);
                        metrics.bytes_in(stats.sent);
                        metrics.bytes_out(stats.received);
                    }
                    Err(e) => {
                        tracing::debug!(
                            request_id = %log.request_id,
                            tunnel = %tunnel.id,
                            error = %e,
                            "websocket session ended abnormally"
                        );
                        log.outcome = Outcome::Error(if e == "idle timeout" {
                            "idle_timeout"
                        } else {
                            "websocket_aborted"
                        });
                    }
                }
            }
            Err(e) => {
                tracing::debug!(
                    request_id = %log.request_id,
                    tunnel = %tunnel.id,
                    error = %e,
                    "public client upgrade failed"
                );
                log.outcome = Outcome::Error("upgrade_failed");
            }
        }
        drop(log); // writes the session's log line
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// Builds the public response from the local service's head and body stream.
fn respond(
    state: &AppState,
    head: ResponseHead,
    receiver: BodyReceiver,
    mut log: RequestLog,
    tunnel: &Tunnel,
) -> Response {
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let status = match StatusCode::from_u16(head.status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => {
            warn!(
                request_id = %log.request_id,
                tunnel = %tunnel.id,
                status = head.status,
                "client sent an invalid status"
            );
            receiver_reset(receiver);
            log.status = 502;
            log.outcome = Outcome::Error(TunnelError::BadResponse.code());
            return TunnelError::BadResponse.json_response();
        }
    };
    let mut headers = match head.headers.to_header_map() {
        Ok(h) => h,
        Err(e) => {
            warn!(
                request_id = %log.request_id,
                tunnel = %tunnel.id,
                error = %e,
                "client sent invalid response headers"
            );
            receiver_reset(receiver);
            log.status = 502;
            log.outcome = Outcome::Error(TunnelError::BadResponse.code());
            return TunnelError::BadResponse.json_response();
        }
    };
    prepare_response_headers(&mut headers, &format!("/{}", tunnel.id));
    log.status = status.as_u16();
    let body = if head.end_stream {
        log.outcome = Outcome::Done;
        Body::empty()
    } else {
        let idle = state.settings.idle_timeout;
        Body::from_stream(ResponseBody {
            receiver,
            log,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        })
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn receiver_reset(receiver: BodyReceiver) {
    drop(receiver); // dropping an unfinished receiver resets the stream
}

#[derive(Debug)]
enum Outcome {
    Pending,
    Done,
    Error(&'static str),
}

/// One log line per proxied request, written when the response ends (or fails), and the
/// request's metrics. It may be dropped outside the request's task (by hyper, with the
/// response body), so it carries what identifies the request in the logs.
struct RequestLog {
    request_id: String,
    metrics: Arc<Metrics>,
    tunnel: Arc<Tunnel>,
    method: Method,
    path: String,
    status: u16,
    bytes: u64,
    started: Instant,
    outcome: Outcome,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Outcome::Done => "ok",
            Outcome::Pending => "aborted",
            Outcome::Error(code) => code,
        };
        let elapsed = self.started.elapsed();
        info!(
            request_id = %self.request_id,
            tunnel = %self.tunnel.id,
            method = %self.method,
            path = %self.path.chars().take(200).collect::<String>(),
            status = self.status,
            bytes = self.bytes,
            ms = elapsed.as_millis() as u64,
            outcome,
            "request"
        );
        self.metrics
            .request_finished(&self.tunnel.id, self.status, elapsed, self.status == 101);
        if outcome == "idle_timeout" {
            self.metrics.rejected(Rejection::IdleTimeout);
        }
    }
}

/// The public response body: the stream's receiver, counting bytes for stats and the log.
struct ResponseBody {
    receiver: BodyReceiver,
    log: RequestLog,
    /// Silence allowed before the body is cut.
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for ResponseBody {
    type Item = Result<bytes::Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.receiver).poll_next(cx);
        match &poll {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                this.log.bytes += n;
                this.log
                    .tunnel
                    .stats
                    .bytes_out
                    .fetch_add(n, Ordering::Relaxed);
                this.log.metrics.bytes_out(n);
            }
            Poll::Ready(None) => this.log.outcome = Outcome::Done,
            Poll::Ready(Some(Err(e))) => {
                this.log.outcome = Outcome::Error(stream_error(e).code());
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    warn!(
                        request_id = %this.log.request_id,
                        tunnel = %this.log.tunnel.id,
                        "response body idle too long, closing it"
                    );
                    this.log.outcome = Outcome::Error("idle_timeout");
                    return Poll::Ready(Some(Err(StreamError::Reset {
                        code: ResetCode::IdleTimeout,
                        message: "no data for the idle timeout".into(),
                    })));
                }
            }
        }
        poll
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling once it has sent `Content-Length` bytes, so the stream may never
        // be polled to its end: a received end marker means the body was complete.
        if matches!(self.log.outcome, Outcome::Pending) && self.receiver.is_end_received() {
            self.log.outcome = Outcome::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_on_the_raw_path() {
        assert_eq!(split_target("/abc/x/y?q=1"), Some(("abc", "/x/y?q=1")));
        assert_eq!(split_target("/abc"), Some(("abc", "")));
        assert_eq!(split_target("/abc?q"), Some(("abc", "?q")));
        assert_eq!(split_target("/abc/"), Some(("abc", "/")));
        assert_eq!(split_target("/%2e%2e/api"), Some(("%2e%2e", "/api")));
        assert_eq!(split_target("//abc/x"), Some(("", "/abc/x")));
        assert_eq!(split_target("abc"), None);
    }
}
