//! The path-prefix reverse proxy: `ANY /{tunnel_id}/{rest}` is forwarded through the tunnel's
//! client connection to the local service as `/{rest}`.
//!
//! Routing happens exactly once, on the raw (still percent-encoded) path: the first segment
//! must be a valid tunnel id as is, and everything after it is passed on byte for byte. So
//! `%2e%2e`, `%2f` and friends reach the local service untouched and can never select another
//! tunnel or a server route.
//!
//! Bodies stream both ways as chunks under the mux's flow control; nothing is buffered whole.

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
use tracing::{info, warn, Instrument};
use tunnel_protocol::headers::WireHeaders;
use tunnel_protocol::mux::{BodyReceiver, BodySender};
use tunnel_protocol::{ControlMessage, RequestHead, ResetCode, ResponseHead, StreamError};

use crate::connect::PeerAddr;
use crate::error::TunnelError;
use crate::forwarding::{prepare_request_headers, prepare_response_headers, ForwardInfo};
use crate::registry::{looks_like_id, Tunnel};
use crate::state::AppState;

/// Splits `/id/rest?q` into `("id", "/rest?q")`; `rest` is `""` or starts with `?` when the
/// path is just `/id`.
pub fn split_target(path_and_query: &str) -> Option<(&str, &str)> {
    let after = path_and_query.strip_prefix('/')?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    Some((&after[..end], &after[end..]))
}

/// Handles every request no other route took.
pub async fn proxy(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
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
    let Some(tunnel) = state.registry.get(id) else {
        return TunnelError::TunnelNotFound.render(headers);
    };
    let path = rest.split('?').next().unwrap_or("/").to_string();
    let log = RequestLog {
        tunnel: tunnel.clone(),
        method: parts.method.clone(),
        path,
        status: 0,
        bytes: 0,
        started: Instant::now(),
        outcome: Outcome::Pending,
    };
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    match forward(
        &state,
        &tunnel,
        parts.method.clone(),
        rest,
        &parts.headers,
        peer,
        body,
    )
    .await
    {
        Ok((head, receiver)) => respond(head, receiver, log, &tunnel),
        Err(e) => {
            let mut log = log;
            log.status = e.status().as_u16();
            log.outcome = Outcome::Error(e.code());
            tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
            e.render(&parts.headers)
        }
    }
}

/// Sends the request through the tunnel and waits for the response head.
async fn forward(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    method: Method,
    target: &str,
    public_headers: &http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    body: Body,
) -> Result<(ResponseHead, BodyReceiver), TunnelError> {
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
    if !headers.contains_key("x-request-id") {
        // A v4 UUID from the thread-local RNG: `Uuid::new_v4()` asks the kernel for 16 random
        // bytes on every call (one getrandom syscall per proxied request).
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        if let Ok(v) = HeaderValue::from_str(id.simple().encode_lower(&mut buf)) {
            headers.insert("x-request-id", v);
        }
    }
    let has_body = !http_body::Body::is_end_stream(&body);
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
        end_stream: !has_body,
    };
    conn.mux
        .send_control(ControlMessage::Request(head))
        .await
        .map_err(|_| TunnelError::ClientDisconnected)?;
    let mut sender = stream.sender;
    if has_body {
        let tunnel = tunnel.clone();
        tokio::spawn(pump_request_body(body, sender, tunnel).in_current_span());
    } else {
        sender.mark_finished();
    }
    let head = match tokio::time::timeout(state.settings.request_timeout, head_rx).await {
        Err(_) => return Err(TunnelError::Timeout),
        Ok(Err(_)) => return Err(TunnelError::ClientDisconnected),
        Ok(Ok(Err(e))) => return Err(stream_error(&e)),
        Ok(Ok(Ok(head))) => head,
    };
    Ok((head, stream.receiver))
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

/// Streams the public request body into the tunnel, chunk by chunk, under flow control.
async fn pump_request_body(body: Body, mut sender: BodySender, tunnel: Arc<Tunnel>) {
    let mut body = body;
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = sender.cancelled() => return,
        };
        match frame {
            None => {
                if let Err(e) = sender.finish().await {
                    tracing::debug!(error = %e, "request body end not delivered");
                }
                return;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                }; // trailers are not forwarded
                tunnel
                    .stats
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if sender.send(data).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "public client aborted the request body");
                sender.reset(ResetCode::Cancelled, "public client aborted the upload");
                return;
            }
        }
    }
}

/// Builds the public response from the local service's head and body stream.
fn respond(
    head: ResponseHead,
    receiver: BodyReceiver,
    mut log: RequestLog,
    tunnel: &Tunnel,
) -> Response {
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let status = match StatusCode::from_u16(head.status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => {
            warn!(status = head.status, "client sent an invalid status");
            receiver_reset(receiver, "invalid status");
            log.status = 502;
            log.outcome = Outcome::Error(TunnelError::BadResponse.code());
            return TunnelError::BadResponse.json_response();
        }
    };
    let mut headers = match head.headers.to_header_map() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "client sent invalid response headers");
            receiver_reset(receiver, "invalid headers");
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
        Body::from_stream(ResponseBody { receiver, log })
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn receiver_reset(receiver: BodyReceiver, why: &str) {
    tracing::debug!(why, "dropping the response stream");
    drop(receiver); // dropping an unfinished receiver resets the stream
}

#[derive(Debug)]
enum Outcome {
    Pending,
    Done,
    Error(&'static str),
}

/// One log line per proxied request, written when the response ends (or fails).
struct RequestLog {
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
        info!(
            tunnel = %self.tunnel.id,
            method = %self.method,
            path = %self.path.chars().take(200).collect::<String>(),
            status = self.status,
            bytes = self.bytes,
            ms = self.started.elapsed().as_millis() as u64,
            outcome,
            "request"
        );
    }
}

/// The public response body: the stream's receiver, counting bytes for stats and the log.
struct ResponseBody {
    receiver: BodyReceiver,
    log: RequestLog,
}

impl Stream for ResponseBody {
    type Item = Result<bytes::Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.receiver).poll_next(cx);
        match &poll {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                this.log.bytes += n;
                this.log
                    .tunnel
                    .stats
                    .bytes_out
                    .fetch_add(n, Ordering::Relaxed);
            }
            Poll::Ready(None) => this.log.outcome = Outcome::Done,
            Poll::Ready(Some(Err(e))) => {
                this.log.outcome = Outcome::Error(stream_error(e).code());
            }
            Poll::Pending => {}
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
