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
use tunnel_protocol::headers::upgrades_to_websocket;
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
    if !headers.contains_key(http::header::UPGRADE) {
        return Upgrade::None;
    }
    let connection_upgrade = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if connection_upgrade && upgrades_to_websocket(headers) {
        Upgrade::WebSocket
    } else {
        Upgrade::Other
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
    let headers = head
        .headers
        .into_header_map()
        .ok()
        .filter(upgrades_to_websocket);
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
                log.session_ended(stats);
                log.outcome = Outcome::Done;
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
