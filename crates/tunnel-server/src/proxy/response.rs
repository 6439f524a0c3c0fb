//! The public response: the local service's head with the proxy's header rules applied, and
//! its body streamed from the tunnel with an idle timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use http::StatusCode;
use http_body::Body as _;
use hyper::body::Incoming;
use tracing::warn;
use tunnel_protocol::mux::BodyReceiver;
use tunnel_protocol::{ResetCode, ResponseHead, StreamError};

use super::forward::stream_error;
use super::headers::prepare_response_headers;
use super::log::{Outcome, RequestLog};
use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::Tunnel;

/// Where a response body comes from: the tunnel's stream here, or the connection to the pod
/// holding the tunnel's client.
pub(super) enum Downstream {
    Tunnel(BodyReceiver),
    Peer(Incoming),
}

impl Downstream {
    fn is_end_received(&self) -> bool {
        match self {
            Downstream::Tunnel(r) => r.is_end_received(),
            Downstream::Peer(b) => http_body::Body::is_end_stream(b),
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        match self {
            Downstream::Tunnel(r) => Pin::new(r).poll_next(cx),
            Downstream::Peer(b) => loop {
                match ready!(Pin::new(&mut *b).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(data))),
                        Err(_trailers) => continue,
                    },
                    // The other pod (or the client behind it) went away mid-body.
                    Some(Err(_)) => return Poll::Ready(Some(Err(StreamError::ConnectionClosed))),
                }
            },
        }
    }
}

/// Builds the public response from the local service's head and body stream.
pub(super) fn respond(
    state: &AppState,
    head: ResponseHead,
    receiver: Downstream,
    mut log: RequestLog,
    tunnel: &Tunnel,
    prefix: Option<&str>,
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
            log.outcome = Outcome::Failed(TunnelError::BadResponse);
            return TunnelError::BadResponse.json_response();
        }
    };
    let mut headers = match head.headers.into_header_map() {
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
            log.outcome = Outcome::Failed(TunnelError::BadResponse);
            return TunnelError::BadResponse.json_response();
        }
    };
    prepare_response_headers(&mut headers, prefix);
    log.status = status.as_u16();
    let body = if head.end_stream {
        log.outcome = Outcome::Done;
        Body::empty()
    } else {
        let idle = state.settings.timeouts.idle_timeout;
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

fn receiver_reset(receiver: Downstream) {
    drop(receiver); // dropping an unfinished receiver resets the stream (or the connection)
}

/// The public response body: the stream's receiver, counting bytes for stats and the log.
struct ResponseBody {
    receiver: Downstream,
    log: RequestLog,
    /// Silence allowed before the body is cut.
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for ResponseBody {
    type Item = Result<bytes::Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = this.receiver.poll_chunk(cx);
        match &poll {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                this.log.outbound(n);
            }
            Poll::Ready(None) => this.log.outcome = Outcome::Done,
            Poll::Ready(Some(Err(e))) => {
                this.log.outcome = Outcome::Failed(stream_error(e));
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    warn!(
                        request_id = %this.log.request_id,
                        tunnel = %this.log.tunnel.id,
                        "response body idle too long, closing it"
                    );
                    this.log.outcome = Outcome::IdleTimeout;
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
