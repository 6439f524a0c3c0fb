//! The access log line of a proxied request and its metrics, written once when the request is
//! over, however it ended.

use std::sync::Arc;
use std::time::Instant;

use http::Method;
use tracing::info;

use crate::observe::metrics::{Metrics, Rejection};
use crate::tunnel::registry::Tunnel;

/// How a proxied request ended, so far.
#[derive(Debug)]
pub(super) enum Outcome {
    Pending,
    Done,
    Error(&'static str),
}

/// One log line per proxied request, written when the response ends (or fails), and the
/// request's metrics. It may be dropped outside the request's task (by hyper, with the
/// response body), so it carries what identifies the request in the logs.
pub(super) struct RequestLog {
    pub(super) request_id: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tunnel: Arc<Tunnel>,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) started: Instant,
    pub(super) outcome: Outcome,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Outcome::Done => "ok",
            Outcome::Pending => "aborted",
            Outcome::Error(code) => code,
        };
        let elapsed = self.started.elapsed();
        info!(
            request_id = %self.request_id,
            tunnel = %self.tunnel.id,
            method = %self.method,
            path = %self.path.chars().take(200).collect::<String>(),
            status = self.status,
            bytes = self.bytes,
            ms = elapsed.as_millis() as u64,
            outcome,
            "request"
        );
        self.metrics
            .request_finished(&self.tunnel.id, self.status, elapsed, self.status == 101);
        if outcome == "idle_timeout" {
            self.metrics.rejected(Rejection::IdleTimeout);
        }
    }
}
