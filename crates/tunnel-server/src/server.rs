//! The accept loop, the expiry reaper, and graceful shutdown: assembly only. What a request
//! meets is in [`crate::app`]; what a connection meets first is in [`crate::edge`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use tunnel_protocol::GoodbyeReason;

use crate::app::{self, router};
use crate::edge::client_ip::{client_ip, ClientIp, PeerAddr};
use crate::edge::framing::FramingGuard;
use crate::error::TunnelError;
use crate::limits::check_framing;
use crate::observe::metrics_server;
use crate::state::AppState;

/// Serves on `listener` until `state.shutdown` is cancelled, then drains: readiness fails, new
/// connections are refused, clients are told the server is restarting, in-flight requests get
/// up to the grace period to finish, and finally every client connection is closed.
///
/// The listener is injected so that tests (and embedders) can bind port 0 first.
pub async fn run(listener: TcpListener, state: Arc<AppState>) {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    let reaper = tokio::spawn(reap_expired(state.clone()));
    loop {
        // At the connection cap, stop accepting: further clients wait in the kernel's backlog
        // instead of costing us memory.
        let permit = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            p = state.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let conn_state = state.clone();
        let shutdown = state.shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let settings = &conn_state.settings;
            let trusted = settings.trusted_proxies.clone();
            let proxy_state = conn_state.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let client = client_ip(peer.ip(), req.headers(), &trusted);
                req.extensions_mut().insert(PeerAddr(peer));
                req.extensions_mut().insert(ClientIp(client));
                let framing = check_framing(req.version(), req.headers());
                let app = app.clone();
                let state = proxy_state.clone();
                async move {
                    if let Err(why) = framing {
                        warn!(%client, why, "refused a request with ambiguous framing");
                        return Ok(TunnelError::BadFraming(why).json_response());
                    }
                    app::dispatch(app, state, req.map(Body::new)).await
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_buf_size(settings.max_header_bytes)
                .max_headers(settings.max_headers);
            let conn = builder
                .serve_connection(
                    TokioIo::new(FramingGuard::new(tcp, settings.max_header_bytes)),
                    svc,
                )
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "public connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("shutting down: refusing new requests, draining in-flight ones");
    let tunnels = state.registry.all();
    for t in &tunnels {
        if let Some(c) = t.connection() {
            c.mux
                .announce(GoodbyeReason::ServerShutdown, "the server is restarting")
                .await;
        }
    }
    connections.close();
    let grace = state.settings.shutdown_grace;
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "grace period of {}s over; cutting the remaining connections",
            grace.as_secs()
        );
    }
    let closes = tunnels
        .iter()
        .filter_map(|t| t.connection())
        .map(|c| async move {
            c.mux
                .close(GoodbyeReason::ServerShutdown, "the server is restarting")
                .await
        });
    futures_util::future::join_all(closes).await;
    reaper.abort();
    info!("shutdown complete");
}

/// [`run`] plus the metrics endpoint on `metrics_listener`, which keeps answering while the
/// server drains (so a scrape can watch the drain) and stops when the server has stopped.
/// Both listeners are injected, so tests bind port 0 for each.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: Arc<AppState>,
) {
    let stop = CancellationToken::new();
    let metrics = tokio::spawn(metrics_server::serve(
        metrics_listener,
        state.metrics.clone(),
        state.registry.clone(),
        stop.clone(),
    ));
    run(listener, state).await;
    stop.cancel();
    if let Err(e) = metrics.await {
        warn!(error = %e, "metrics task failed");
    }
}

/// Removes expired tunnels every second, and trims the rate limiters' memory every minute.
async fn reap_expired(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        state.registry.reap_expired();
        if n % 60 == 59 {
            state.limits.retain_recent();
        }
    }
}
