//! The access log line of a proxied request and its metrics, written once when the request is
//! over, however it ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use tracing::{info, Level};
use tunnel_protocol::mux::SpliceStats;

use crate::error::TunnelError;
use crate::observe::events::{EventBus, EventKind};
use crate::observe::line_text::{self, AccessLine};
use crate::observe::metrics::{Metrics, Rejection};
use crate::tunnel::Tunnel;

/// How a proxied request ended (so far): the `outcome` field of its log line, and what its
/// metrics count. Variants, not strings, so that nothing compares log text to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Still under way. A line written in this state means the public client left: `aborted`.
    Pending,
    /// The response was delivered whole: `ok`.
    Done,
    /// The server answered, or cut the response, with this error: its code.
    Failed(TunnelError),
    /// A response body or WebSocket session was silent for the idle timeout: `idle_timeout`.
    IdleTimeout,
    /// A WebSocket session ended abnormally: `websocket_aborted`.
    WebSocketAborted,
    /// The public client's side of a WebSocket upgrade failed: `upgrade_failed`.
    UpgradeFailed,
}

impl Outcome {
    /// The value of the log line's `outcome` field.
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Outcome::Pending => "aborted",
            Outcome::Done => "ok",
            Outcome::Failed(e) => e.code(),
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::WebSocketAborted => "websocket_aborted",
            Outcome::UpgradeFailed => "upgrade_failed",
        }
    }
}

/// One log line per proxied request, written when the response ends (or fails), and the
/// request's metrics. It may be dropped outside the request's task (by hyper, with the
/// response body), so it carries what identifies the request in the logs.
pub(super) struct RequestLog {
    pub(super) request_id: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) events: Arc<EventBus>,
    pub(super) tunnel: Arc<Tunnel>,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) started: Instant,
    pub(super) outcome: Outcome,
}

impl RequestLog {
    /// `n` response body bytes reached the public client: counted once, for this line, the
    /// tunnel's counters and the metrics.
    pub(super) fn outbound(&mut self, n: u64) {
        self.bytes += n;
        count_out(&self.tunnel, &self.metrics, n);
    }

    /// A WebSocket session ended well: its bytes each way, for this line (both together),
    /// the tunnel's counters and the metrics.
    pub(super) fn session_ended(&mut self, stats: SpliceStats) {
        self.bytes = stats.sent + stats.received;
        count_in(&self.tunnel, &self.metrics, stats.sent);
        count_out(&self.tunnel, &self.metrics, stats.received);
    }
}

/// Where the request body's bytes are counted as they go into the tunnel (the pump runs in a
/// task of its own, apart from the access line, which shows response bytes only).
#[derive(Clone)]
pub(super) struct Traffic {
    tunnel: Arc<Tunnel>,
    metrics: Arc<Metrics>,
}

impl Traffic {
    pub(super) fn new(tunnel: Arc<Tunnel>, metrics: Arc<Metrics>) -> Self {
        Self { tunnel, metrics }
    }

    /// The tunnel the bytes are for.
    pub(super) fn tunnel(&self) -> &Tunnel {
        &self.tunnel
    }

    /// `n` request body bytes went into the tunnel.
    pub(super) fn inbound(&self, n: u64) {
        count_in(&self.tunnel, &self.metrics, n);
    }
}

/// The two places body bytes are reported to, public → local service and back: every count
/// of the proxy goes through these.
fn count_in(tunnel: &Tunnel, metrics: &Metrics, n: u64) {
    tunnel.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
    metrics.bytes_in(n);
}

fn count_out(tunnel: &Tunnel, metrics: &Metrics, n: u64) {
    tunnel.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
    metrics.bytes_out(n);
}

/// Characters of a path that go into a log line or an event.
const MAX_LOGGED_PATH: usize = 200;

/// The first `n` characters of `s`, borrowed (collecting them into a `String` was an
/// allocation per access line).
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(end, _)| &s[..end])
}

/// The target of the access line's event, which the direct line names too.
const TARGET: &str = module_path!();

/// The access line as a `tracing` event, where [`line_text::write`] cannot write it.
fn log_event(line: &AccessLine<'_>) {
    // `&str` fields, not `%` ones: a string is written as it is, where a `Display` field
    // goes through the formatting machinery (the same text either way).
    info!(
        request_id = line.request_id,
        tunnel = line.tunnel,
        method = line.method,
        path = line.path,
        status = line.status,
        bytes = line.bytes,
        ms = line.ms,
        outcome = line.outcome,
        "request"
    );
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let outcome = self.outcome.as_str();
        let elapsed = self.started.elapsed();
        let path = first_chars(&self.path, MAX_LOGGED_PATH);
        let line = AccessLine {
            request_id: &self.request_id,
            tunnel: &self.tunnel.id,
            method: self.method.as_str(),
            path,
            status: self.status,
            bytes: self.bytes,
            ms: elapsed.as_millis() as u64,
            outcome,
        };
        if !line_text::write(&line, TARGET, || tracing::enabled!(Level::INFO)) {
            log_event(&line);
        }
        self.metrics
            .request_finished(&self.tunnel.id, self.status, elapsed, self.status == 101);
        if self.outcome == Outcome::IdleTimeout {
            self.metrics.rejected(Rejection::IdleTimeout);
        }
        if self.events.is_followed() {
            let summary = EventKind::Request {
                request_id: self.request_id.clone(),
                method: self.method.to_string(),
                path: path.to_string(),
                status: self.status,
                bytes: self.bytes,
                ms: elapsed.as_millis() as u64,
                outcome,
            };
            self.events
                .publish(self.tunnel.owner, &self.tunnel.id, summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What a subscriber wrote.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `line` without the timestamp's value, which differs between two writes.
    fn untimed(line: &str) -> String {
        let (head, rest) = line
            .split_once("\",\"level\"")
            .expect("a level after the time");
        assert!(head.starts_with("{\"timestamp\":\""), "{line}");
        format!("{{\"timestamp\":\"…\",\"level\"{rest}")
    }

    #[test]
    fn the_direct_access_line_is_the_events_line() {
        let lines = [
            AccessLine {
                request_id: "0123abcd",
                tunnel: "demo",
                method: "GET",
                path: "/bench/",
                status: 200,
                bytes: 100,
                ms: 0,
                outcome: "ok",
            },
            AccessLine {
                request_id: "q\"b\\s\u{1}\t\n\u{7f}é",
                tunnel: "t-1",
                method: "M-SEARCH",
                path: "/a b/\u{8}\r€",
                status: 0,
                bytes: u64::MAX,
                ms: 12_345,
                outcome: "local_unreachable",
            },
        ];
        for line in &lines {
            let out = Capture::default();
            let sink = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(crate::observe::logging::JsonLines { tz: chrono_tz::UTC })
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || log_event(line));
            let event = String::from_utf8(out.0.lock().expect("capture").clone()).expect("utf-8");
            let mut direct = String::new();
            line_text::format(
                &mut direct,
                line,
                TARGET,
                chrono::Utc::now(),
                chrono_tz::UTC,
            )
            .expect("formats");
            assert_eq!(untimed(&direct), untimed(&event));
            assert!(direct.ends_with("}\n"));
        }
    }

    #[test]
    fn paths_are_cut_at_a_character_count() {
        assert_eq!(first_chars("/abc", 200), "/abc");
        assert_eq!(first_chars("/abc", 2), "/a");
        assert_eq!(first_chars("/äöü", 3), "/äö");
        assert_eq!(first_chars("", 3), "");
        let long = "é".repeat(300);
        assert_eq!(first_chars(&long, 200), "é".repeat(200));
    }
}
