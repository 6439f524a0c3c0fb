//! TCP tunnels on the client's side, both ends of them:
//! - [`TcpForwarder`]: a raw TCP stream the server opened ([`IncomingTcp`]) → a connection to
//!   the local service (with a PROXY protocol v2 header first, if asked) → bytes both ways
//!   through the protocol crate's [`splice`], half-close kept. What `tunnel-client tcp` and a
//!   config file's `proto = "tcp"` tunnels run for each stream.
//! - [`consume`]: `tunnel-client connect ID --listen ADDR`, the consumer's end of the server's
//!   front door: a local port whose connections each travel on a WebSocket of their own.

pub mod consume;
mod proxy_header;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tunnel_protocol::mux::{splice, IncomingTcp};
use tunnel_protocol::ResetCode;

pub use crate::config::ProxyProtocol;
use crate::display::{format_bytes, format_duration, Printer};

/// How long connecting to the local service may take before the stream is refused.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards the TCP streams of one tunnel to its local service.
#[derive(Debug, Clone)]
pub struct TcpForwarder {
    local: String,
    proxy_protocol: ProxyProtocol,
    printer: Printer,
}

impl TcpForwarder {
    /// A forwarder to `local` (`host:port`).
    pub fn new(local: impl Into<String>, proxy_protocol: ProxyProtocol, printer: Printer) -> Self {
        Self {
            local: local.into(),
            proxy_protocol,
            printer,
        }
    }

    /// Connects to the local service and carries the stream until both directions ended;
    /// a local service that cannot be reached refuses the stream (the server closes the
    /// connection it came from, or answers the front door with 502).
    pub async fn forward(self: Arc<Self>, incoming: IncomingTcp) {
        let started = Instant::now();
        let peer = incoming.open.peer;
        let connecting =
            tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(&self.local));
        let mut local = match connecting.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.refuse(incoming, &e.to_string()),
            Err(_) => return self.refuse(incoming, "connect timed out"),
        };
        if let Err(e) = local.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if self.proxy_protocol == ProxyProtocol::V2 {
            let header = proxy_header::v2(incoming.open.peer, incoming.open.local);
            if let Err(e) = local.write_all(&header).await {
                return self.refuse(incoming, &format!("PROXY header: {e}"));
            }
        }
        let via = incoming.open.via.as_str();
        let (sender, receiver) = match incoming.accept().await {
            Ok(halves) => halves,
            Err(e) => {
                self.printer
                    .warn(&format!("TCP {peer} ({via}) gone before it began: {e}"));
                return;
            }
        };
        let result = splice(local, sender, receiver, None).await;
        let took = format_duration(started.elapsed());
        match result {
            Ok(s) => self.printer.tcp(&format!(
                "TCP  {peer} ({via}) closed after {took}: {} in, {} out",
                format_bytes(s.sent),
                format_bytes(s.received)
            )),
            Err(e) => self
                .printer
                .tcp(&format!("TCP  {peer} ({via}) failed after {took}: {e}")),
        }
    }

    fn refuse(&self, incoming: IncomingTcp, why: &str) {
        let message = format!("cannot connect to {}: {why}", self.local);
        self.printer
            .warn(&format!("TCP  {} refused: {message}", incoming.open.peer));
        incoming.refuse(ResetCode::LocalConnectFailed, &message);
    }
}
