//! What both ways in share: the checks and the opening of a TCP stream, and the log line and
//! counters of a carried connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tracing::info;
use tunnel_protocol::mux::{BodyReceiver, BodySender, TCP_CONNECTED};
use tunnel_protocol::{ResetCode, StreamError, TcpOpen, TcpVia};

use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::tcp::TcpTunnel;
use crate::tunnel::Tunnel;

/// A stream the tunnel client accepted: its halves, and the permit of the tunnel's cap it
/// holds while it lasts.
pub(super) struct Opened {
    pub(super) sender: BodySender,
    pub(super) receiver: BodyReceiver,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// Everything a new connection to a TCP tunnel goes through, either way in: the IP lists,
/// the cap, a live client that speaks TCP streams, and its answer in time.
pub(super) async fn open_stream(
    state: &AppState,
    tunnel: &Tunnel,
    tcp: &TcpTunnel,
    open: TcpOpen,
) -> Result<Opened, TunnelError> {
    if !tunnel.access.allows_ip(open.peer.ip()) {
        return Err(TunnelError::IpForbidden);
    }
    let permit = tcp
        .connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| TunnelError::Overloaded)?;
    let conn = tunnel.connection().ok_or(TunnelError::TunnelOffline)?;
    let (sender, answer) = conn
        .mux
        .open_tcp(open)
        .await
        .map_err(|e| stream_error(&e))?;
    let deadline = state.settings.timeouts.request_timeout;
    let answer = tokio::time::timeout(deadline, answer)
        .await
        .map_err(|_| TunnelError::Timeout)?
        .map_err(|e| stream_error(&e))?;
    if answer.head.status != TCP_CONNECTED {
        return Err(TunnelError::BadResponse);
    }
    Ok(Opened {
        sender,
        receiver: answer.body,
        _permit: permit,
    })
}

/// What the connecting side is told when a stream did not open.
fn stream_error(e: &StreamError) -> TunnelError {
    match e {
        StreamError::Reset {
            code: ResetCode::LocalConnectFailed,
            ..
        } => TunnelError::LocalUnreachable,
        StreamError::Reset {
            code: ResetCode::Refused,
            ..
        } => TunnelError::Overloaded,
        StreamError::Reset { .. } => TunnelError::LocalError,
        StreamError::ConnectionClosed => TunnelError::ClientDisconnected,
        StreamError::Cancelled | StreamError::FlowControl => TunnelError::BadResponse,
    }
}

/// The log line and the counters of one carried connection.
pub(super) fn finished(
    tunnel: &Tunnel,
    via: TcpVia,
    peer: SocketAddr,
    started: Instant,
    (sent, received): (u64, u64),
    error: Option<&dyn std::fmt::Display>,
) {
    tunnel.stats.bytes_in.fetch_add(sent, Ordering::Relaxed);
    tunnel
        .stats
        .bytes_out
        .fetch_add(received, Ordering::Relaxed);
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let ms = started.elapsed().as_millis() as u64;
    match error {
        None => info!(
            via = via.as_str(), %peer, bytes_in = sent, bytes_out = received, duration_ms = ms,
            "tcp connection closed"
        ),
        Some(e) => info!(
            via = via.as_str(), %peer, bytes_in = sent, bytes_out = received, duration_ms = ms,
            error = %e, "tcp connection failed"
        ),
    }
}
