//! The metrics listener: `GET /metrics` as Prometheus text, on a listener of its own
//! (`TUNNEL_METRICS_BIND`, default `127.0.0.1:9090`).
//!
//! A separate listener, not a route of the public router, so that the public ingress can never
//! expose them: the metrics name every live tunnel id, and tunnel ids are the only thing that
//! keeps a tunnel private.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::Metrics;
use crate::tunnel::TunnelRegistry;

/// What a scrape reads: the metrics, and the registry its gauges are sampled from.
#[derive(Debug, Clone)]
struct Scraped {
    metrics: Arc<Metrics>,
    tunnels: Arc<dyn TunnelRegistry>,
}

/// The router of the metrics listener: `GET /metrics` and nothing else.
pub fn router(metrics: Arc<Metrics>, tunnels: Arc<dyn TunnelRegistry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scraped { metrics, tunnels })
}

async fn scrape(State(s): State<Scraped>) -> Response {
    match s.metrics.render(s.tunnels.as_ref()) {
        Ok(text) => (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    tunnels: Arc<dyn TunnelRegistry>,
    stop: CancellationToken,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    info!("metrics on http://{addr}/metrics");
    let served = axum::serve(listener, router(metrics, tunnels))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "metrics listener failed");
    }
}
