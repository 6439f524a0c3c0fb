//! TCP tunnels: raw TCP connections carried to a tunnel client as multiplexer streams
//! ([`tunnel_protocol::mux::Mux::open_tcp`]), with the same flow control as HTTP streams and
//! half-close kept both ways.
//!
//! Two ways in, because a Kubernetes Service cannot open a port range and Cloudflare's proxy
//! carries no arbitrary TCP:
//! - [`front_door`]: `GET /api/tunnels/{id}/tcp`, a WebSocket per connection through the
//!   server's HTTP endpoint (`tunnel-client connect` on the consumer's side), authenticated
//!   with the owner's API key or the tunnel's access token;
//! - [`port`]: a public port of `TUNNEL_TCP_PORTS` per tunnel (opt-in), for pods with host
//!   networking or a LoadBalancer that lists those ports.
//!
//! Both go through `open::open_stream`: the tunnel's IP lists, its connection cap
//! (`TUNNEL_TCP_MAX_CONNECTIONS`), a live client, and the client's answer (it connected to
//! its local service, or why not) within `TUNNEL_REQUEST_TIMEOUT_SECS`.

pub mod front_door;
mod open;
pub mod port;
pub mod relay;
mod remote;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

pub use front_door::front_door;

use crate::auth::{generate_secret, SecretHash};
use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::tcp::{PortError, PortLease, TcpTunnel};
use crate::tunnel::{TcpRecord, Tunnel};

/// A public port bound for a tunnel about to be created: free again if it is dropped.
#[derive(Debug)]
pub struct BoundPort {
    listener: TcpListener,
    lease: PortLease,
}

/// A TCP tunnel about to be created: its access token and its public port, bound.
#[derive(Debug)]
pub struct NewTcp {
    access_token: String,
    bound: Option<BoundPort>,
}

impl NewTcp {
    /// What the registry keeps of it.
    pub fn record(&self) -> TcpRecord {
        TcpRecord {
            access_token: SecretHash::of(&self.access_token),
            port: self.bound.as_ref().map(|b| b.lease.port()),
        }
    }
}

/// A new TCP tunnel's access token, and its public port bound (see [`bind_port`]).
pub fn prepare(state: &AppState, requested: Option<u16>) -> Result<NewTcp, TunnelError> {
    Ok(NewTcp {
        bound: bind_port(state, requested)?,
        access_token: generate_secret(),
    })
}

/// Binds the public port of a new TCP tunnel: `requested`, or a free one of the range; none
/// when the server has no range and none was asked for. Done before the tunnel is created,
/// so that an exhausted range refuses the creation instead of leaving a tunnel behind.
fn bind_port(state: &AppState, requested: Option<u16>) -> Result<Option<BoundPort>, TunnelError> {
    if requested.is_none() && !state.tcp_ports.enabled() {
        return Ok(None);
    }
    match state.tcp_ports.bind(requested) {
        Ok((listener, lease)) => Ok(Some(BoundPort { listener, lease })),
        Err(e @ (PortError::NoRange | PortError::OutOfRange { .. })) => {
            Err(TunnelError::Invalid(e.to_string()))
        }
        Err(e @ PortError::InUse(_)) => Err(TunnelError::Conflict(e.to_string())),
        Err(e @ PortError::Exhausted(_)) => Err(TunnelError::PortsExhausted(e.to_string())),
        Err(e @ PortError::Bind { .. }) => {
            tracing::warn!(error = %e, "cannot bind a public TCP port");
            Err(TunnelError::PortsExhausted(e.to_string()))
        }
    }
}

/// What the owner of a new TCP tunnel is told.
#[derive(Debug, Clone)]
pub struct TcpCreated {
    /// The token that opens the front door (besides the owner's API key); shown only once.
    pub access_token: String,
    /// The public port, if one was bound.
    pub port: Option<u16>,
}

/// Starts the TCP side of `tunnel`, just created with `new`'s record: its cap, and its public
/// port's accept loop.
pub fn start(state: &Arc<AppState>, tunnel: &Tunnel, new: NewTcp) -> TcpCreated {
    let NewTcp {
        access_token,
        bound,
    } = new;
    let port = bound.as_ref().map(|b| b.lease.port());
    let max = state.settings.tcp.tcp_max_connections;
    let tcp = Arc::new(TcpTunnel::new(port, max));
    state.tcp.insert(&tunnel.id, tcp.clone());
    if let Some(BoundPort { listener, lease }) = bound {
        let stop = CancellationToken::new();
        let span = info_span!("tcp_port", tunnel = %tunnel.id, port = lease.port());
        let serving = port::serve(
            state.clone(),
            tunnel.id.clone(),
            listener,
            lease,
            stop.clone(),
        );
        let task = state.tasks.clients.spawn(serving.instrument(span));
        tcp.set_listener(stop, task);
    }
    TcpCreated { access_token, port }
}

/// Forgets tunnel `id`'s TCP side (if it has one): its public port is free once this returns.
pub async fn release(state: &AppState, id: &str) {
    state.tcp.remove(id).await;
}
