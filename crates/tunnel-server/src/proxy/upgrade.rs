//! Protocol switches: which ones a request asks for, and the WebSocket pass-through after a
//! `101`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::HeaderValue;
use http::StatusCode;
use tracing::warn;
use tunnel_protocol::mux::{BodyReceiver, BodySender, SpliceError};
use tunnel_protocol::ResponseHead;

use super::headers::prepare_response_headers;
use super::log::{Outcome, RequestLog};
use crate::error::TunnelError;
use crate::observe::metrics::Metrics;
use crate::state::AppState;
use crate::tunnel::Tunnel;

/// What kind of protocol switch a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upgrade {
    None,
    /// `Upgrade: websocket` with `Connection: upgrade`: passed through.
    WebSocket,
    /// Any other protocol (`h2c`…): refused by forwarding the request as plain HTTP/1.1
    /// without its upgrade headers, which RFC 9110 §7.8 allows (so `curl --http2` still works).
    Other,
}

pub(super) fn requested_upgrade(headers: &http::HeaderMap) -> Upgrade {
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

/// Completes a WebSocket upgrade: answers `101` to the public client, then splices its
/// connection to the stream until both sides are done (or the stream is idle too long).
pub(super) fn switch_protocols(
    state: &AppState,
    head: ResponseHead,
    (sender, receiver): (BodySender, BodyReceiver),
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut log: RequestLog,
    tunnel: &Arc<Tunnel>,
    prefix: Option<&str>,
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
        log.outcome = Outcome::Failed(TunnelError::BadResponse);
        return TunnelError::BadResponse.json_response();
    };
    prepare_response_headers(&mut headers, prefix);
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    log.status = 101;
    let session = Session {
        sender,
        receiver,
        idle: state.settings.timeouts.idle_timeout,
        metrics: state.metrics.clone(),
        log,
    };
    state.tasks.requests.spawn(session.run(on_upgrade));
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// A public WebSocket session, spliced to its stream from the upgrade until both directions
/// are done (or the idle timeout); its log line is written when it ends.
struct Session {
    sender: BodySender,
    receiver: BodyReceiver,
    idle: Duration,
    metrics: Arc<Metrics>,
    log: RequestLog,
}

impl Session {
    async fn run(self, on_upgrade: hyper::upgrade::OnUpgrade) {
        let Session {
            sender,
            receiver,
            idle,
            metrics,
            mut log,
        } = self;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(
                    request_id = %log.request_id,
                    tunnel = %log.tunnel.id,
                    error = %e,
                    "public client upgrade failed"
                );
                log.outcome = Outcome::UpgradeFailed;
                return; // dropping the log writes the session's line
            }
        };
        let _open = metrics.websocket_opened();
        let io = hyper_util::rt::TokioIo::new(upgraded);
        match tunnel_protocol::mux::splice(io, sender, receiver, Some(idle)).await {
            Ok(stats) => {
                log.bytes = stats.sent + stats.received;
                log.outcome = Outcome::Done;
                let tunnel = &log.tunnel.stats;
                tunnel.bytes_in.fetch_add(stats.sent, Ordering::Relaxed);
                tunnel
                    .bytes_out
                    .fetch_add(stats.received, Ordering::Relaxed);
                metrics.bytes_in(stats.sent);
                metrics.bytes_out(stats.received);
            }
            Err(e) => {
                tracing::debug!(
                    request_id = %log.request_id,
                    tunnel = %log.tunnel.id,
                    error = %e,
                    "websocket session ended abnormally"
                );
                log.outcome = if matches!(e, SpliceError::IdleTimeout) {
                    Outcome::IdleTimeout
                } else {
                    Outcome::WebSocketAborted
                };
            }
        }
    }
}
