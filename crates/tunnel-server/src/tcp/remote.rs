//! A front-door connection for a TCP tunnel whose client is connected to another pod: sent
//! there over the peer link (`crate::peer`), as a WebSocket upgrade is.
//!
//! This pod checked the credential and the tunnel's IP lists; the pod holding the client
//! opens the stream (its cap, its client's answer) and answers `101` or why not, and after
//! the `101` carries the consumer's WebSocket itself (see [`super::relay`]). Here the two
//! upgraded connections are only joined: the WebSocket's frames pass through unchanged, so
//! its half-close (an empty message) and TCP's own pass too, and the flow control is TCP's on
//! both hops plus the multiplexer's on the other pod.
//!
//! If that pod answers that the client is not there (it moved) or cannot be reached, the
//! registry is asked again, waiting briefly for the client's new claim, and the connection is
//! sent once more; a client that moved to this very pod is served from here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, info_span, Instrument};

use crate::error::TunnelError;
use crate::peer::join::join;
use crate::peer::{Answer, PeerClient, Refusal, SendError};
use crate::state::AppState;
use crate::tunnel::{Lease, Tunnel};

/// How long a connection waits for a moving client's new claim before it fails.
const RELOCATE_WAIT: Duration = Duration::from_secs(2);

/// How much longer than `TUNNEL_REQUEST_TIMEOUT_SECS` this pod waits for the other pod's
/// answer, so that the other pod's own timeout (a 504) is what the consumer learns.
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// Where the connection goes.
pub(super) enum Forwarded {
    /// The other pod opened the stream: its upgraded connection, once it completes.
    There(OnUpgrade),
    /// The client is connected here now: serve the connection from here.
    Here(Arc<Tunnel>),
}

/// Sends the connection of `consumer` to the pod `lease` names (then, if need be, once more
/// where the client went).
pub(super) async fn forward(
    state: &AppState,
    tunnel: Arc<Tunnel>,
    lease: Arc<Lease>,
    peers: &PeerClient,
    consumer: SocketAddr,
) -> Result<Forwarded, TunnelError> {
    let (mut lease, mut tunnel) = (lease, tunnel);
    for attempt in 0..2 {
        let wait = state.settings.timeouts.request_timeout + ANSWER_SLACK;
        let sent = tokio::time::timeout(wait, peers.open_tcp(&lease.peer, &tunnel.id, consumer));
        match sent.await {
            Err(_) => return Err(TunnelError::Timeout),
            Ok(Ok(Answer::Response(resp))) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                return Ok(Forwarded::There(hyper::upgrade::on(resp)))
            }
            Ok(Ok(Answer::Response(resp))) => {
                debug!(node = %lease.node, status = %resp.status(), "unexpected answer to a tcp connection");
                return Err(TunnelError::BadResponse);
            }
            Ok(Ok(Answer::Refused {
                refusal: Refusal::Error(e),
                ..
            })) => return Err(e),
            Ok(Ok(Answer::Refused {
                refusal: Refusal::NotHere,
                ..
            })) => {}
            Ok(Err(SendError::Unreachable { error, .. })) => {
                debug!(node = %lease.node, %error, "pod unreachable");
            }
            Ok(Err(e)) => {
                debug!(node = %lease.node, error = %e, "forwarding a tcp connection failed");
                return Err(TunnelError::ClientDisconnected);
            }
        }
        if attempt == 1 {
            break;
        }
        match state
            .registry
            .relocate(&tunnel.id, Some(&lease), RELOCATE_WAIT)
            .await?
        {
            None => return Err(TunnelError::TunnelOffline),
            Some(t) if t.connection().is_some() => return Ok(Forwarded::Here(t)),
            Some(t) => match t.remote() {
                Some(l) => (lease, tunnel) = (l, t),
                None => break,
            },
        }
    }
    Err(TunnelError::TunnelOffline)
}

/// Once both upgrades completed (the consumer's, and the other pod's), joins them on a task
/// of its own until both directions ended (or `TUNNEL_IDLE_TIMEOUT_SECS` without a byte).
/// The other pod counts and logs the connection; this one logs that it passed through.
pub(super) fn join_later(
    state: &AppState,
    id: String,
    consumer: SocketAddr,
    public: OnUpgrade,
    peer: OnUpgrade,
) {
    let idle = state.settings.timeouts.idle_timeout;
    let span = info_span!("tcp", tunnel = %id, peer = %consumer);
    state.tasks.requests.spawn(
        async move {
            let (public, peer) = match tokio::try_join!(public, peer) {
                Ok(both) => both,
                Err(e) => return debug!(error = %e, "tcp upgrade through the pod failed"),
            };
            match join(TokioIo::new(public), TokioIo::new(peer), idle).await {
                Ok(j) => info!(
                    via = "front_door",
                    bytes_in = j.up,
                    bytes_out = j.down,
                    "tcp connection through another pod closed"
                ),
                Err(e) => info!(error = %e, "tcp connection through another pod failed"),
            }
        }
        .instrument(span),
    );
}
