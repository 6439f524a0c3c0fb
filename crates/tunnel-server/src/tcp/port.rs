//! A TCP tunnel's public port: the accept loop, and each accepted connection spliced to a
//! stream of the tunnel's client connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info_span, warn, Instrument};
use tunnel_protocol::mux::splice;
use tunnel_protocol::{TcpOpen, TcpVia};

use super::open::{finished, open_stream};
use crate::state::AppState;
use crate::tunnel::tcp::PortLease;

/// How long to back off after `accept` itself failed (out of file descriptors, say), instead
/// of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on tunnel `id`'s port until `stop` (the tunnel was deleted or
/// expired), shutdown, or the tunnel is gone; then the port is free again.
pub async fn serve(
    state: Arc<AppState>,
    id: String,
    listener: TcpListener,
    lease: PortLease,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            () = state.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if state.registry.get(&id).is_none() {
            break;
        }
        let span = info_span!("tcp", tunnel = %id, %peer);
        let task = connection(state.clone(), id.clone(), socket, peer);
        state.tasks.requests.spawn(task.instrument(span));
    }
    // The socket first: once the lease is gone the port may be handed out again.
    drop(listener);
    drop(lease);
}

/// One connection to the port: the checks of [`open_stream`], then bytes both ways until
/// both directions ended (or `TUNNEL_IDLE_TIMEOUT_SECS` without a byte).
async fn connection(state: Arc<AppState>, id: String, socket: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let (Some(tunnel), Some(tcp)) = (state.registry.get(&id), state.tcp.get(&id)) else {
        return;
    };
    // Every public connection counts against TUNNEL_MAX_CONNECTIONS, HTTP or not.
    let Ok(_global) = state.connections.clone().try_acquire_owned() else {
        warn!("TUNNEL_MAX_CONNECTIONS reached; connection closed");
        return;
    };
    if let Err(e) = socket.set_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let open = TcpOpen {
        peer,
        local,
        via: TcpVia::Port,
    };
    let opened = match open_stream(&state, &tunnel, &tcp, open).await {
        Ok(o) => o,
        Err(e) => {
            // A public port has no way to say why: the connection closes at once.
            finished(&tunnel, TcpVia::Port, peer, started, (0, 0), Some(&e));
            return;
        }
    };
    let idle = Some(state.settings.timeouts.idle_timeout);
    match splice(socket, opened.sender, opened.receiver, idle).await {
        Ok(s) => finished(
            &tunnel,
            TcpVia::Port,
            peer,
            started,
            (s.sent, s.received),
            None,
        ),
        Err(e) => finished(&tunnel, TcpVia::Port, peer, started, (0, 0), Some(&e)),
    }
}
