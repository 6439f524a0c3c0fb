//! The receiving side: the peer listener (`TUNNEL_PEER_BIND`), where other pods send the
//! public requests of tunnels whose client is connected here. HTTP/1.1 with upgrades; every
//! request must carry the peer secret and the hop header before the handler sees it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use super::wire::{PeerAuth, Refusal, HOP};
use crate::error::TunnelError;

/// What serves an authenticated peer request.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response> + Send + Sync>;

/// How the listener bounds its peers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most concurrent connections from other pods.
    pub max_connections: usize,
    /// Time a peer has to send a request head.
    pub header_read_timeout: Duration,
    /// How long in-flight exchanges may take to finish once the listener stops.
    pub drain: Duration,
}

/// Serves peer requests on `listener` until `stop`, then lets in-flight exchanges finish
/// (within [`Limits::drain`]).
pub async fn serve(
    listener: TcpListener,
    auth: PeerAuth,
    handler: Handler,
    limits: Limits,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set on a peer connection");
        }
        let (auth, handler, stop) = (auth.clone(), handler.clone(), stop.clone());
        connections.spawn(
            async move {
                serve_connection(tcp, auth, handler, limits, stop).await;
                drop(permit);
            }
            .instrument(info_span!("peer", %peer)),
        );
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.drain, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "peer connections still open after the drain"
        );
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    auth: PeerAuth,
    handler: Handler,
    limits: Limits,
    stop: CancellationToken,
) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (auth, handler) = (auth.clone(), handler.clone());
        async move { Ok::<_, Infallible>(admit(&auth, &handler, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "peer connection ended with an error");
    }
}

/// Refuses a request without the secret or the hop header; hands the others on.
async fn admit(auth: &PeerAuth, handler: &Handler, req: Request<Incoming>) -> Response {
    if !auth.accepts(req.headers()) {
        warn!("peer request without the right TUNNEL_PEER_SECRET refused");
        return Refusal::Error(TunnelError::Unauthorized).response();
    }
    if !req.headers().contains_key(HOP) {
        return Refusal::Error(TunnelError::BadRequest("peer request without a hop header"))
            .response();
    }
    handler(req).await
}
