//! `tunnel-client connect ID --listen ADDR`: the consumer's end of a TCP tunnel's front door.
//! Every connection to the local listener opens a WebSocket of its own to the server's
//! `/api/tunnels/{id}/tcp` (through whatever HTTP proxies are in between) and is carried on it
//! ([`tunnel_protocol::carrier`]) until both directions ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tunnel_protocol::carrier::{self, CarryOptions};
use tunnel_protocol::frame::websocket_config;
use tunnel_protocol::mux::Role;
use tunnel_protocol::ws::WebSocket;

use crate::config::ServerUrl;
use crate::control::error_chain;
use crate::display::{format_bytes, format_duration, Printer};

/// How long the WebSocket upgrade may take (the server answers once the tunnel client reached
/// its local service, or why not).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings on an idle carried connection: proxies that cut silent WebSockets (Cloudflare after
/// about 100 s) leave it alone.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long connections still open may go on after Ctrl-C.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Where the front door is, and the credential that opens it.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    /// `ws(s)://host/api/tunnels/{id}/tcp`.
    pub url: String,
    /// The owner's API key or the tunnel's access token.
    pub credential: String,
}

impl FrontDoor {
    /// Tunnel `id`'s front door on `server`.
    pub fn new(server: &ServerUrl, id: &str, credential: &str) -> Self {
        Self {
            url: format!("{}/api/tunnels/{id}/tcp", server.ws_base),
            credential: credential.to_string(),
        }
    }
}

/// Why one connection could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The server refused: its status and message.
    #[error("the server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error message, or the status' reason.
        message: String,
    },
    /// No answer, or a broken one.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The carried connection failed.
    #[error(transparent)]
    Carry(#[from] carrier::CarryError),
}

/// Opens one WebSocket to the front door; the tunnel's local service is connected when it
/// returns.
pub async fn open(door: &FrontDoor) -> Result<WebSocket<impl ConsumerIo>, ConsumeError> {
    let mut request = door
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConsumeError::Unreachable(format!("bad URL {}: {e}", door.url)))?;
    let auth = http::HeaderValue::from_str(&format!("Bearer {}", door.credential))
        .map_err(|_| ConsumeError::Unreachable("the credential is not a usable header".into()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, auth);
    let config = websocket_config(carrier::MAX_MESSAGE as u32);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
    let (ws, _) = match tokio::time::timeout(UPGRADE_TIMEOUT, connecting).await {
        Err(_) => return Err(ConsumeError::Unreachable("the upgrade timed out".into())),
        Ok(Err(tungstenite::Error::Http(resp))) => return Err(refusal(&resp)),
        Ok(Err(e)) => return Err(ConsumeError::Unreachable(error_chain(&e))),
        Ok(Ok(pair)) => pair,
    };
    // Nothing is lost in tungstenite's buffers: the server's end sends nothing before our
    // first message (the carrier's order), which only goes after this.
    Ok(WebSocket::new(
        ws.into_inner(),
        Role::Client,
        carrier::MAX_MESSAGE,
    ))
}

/// What a consumer's WebSocket runs over (TCP, or TLS over TCP).
pub trait ConsumerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ConsumerIo for T {}

fn refusal(resp: &tungstenite::http::Response<Option<Vec<u8>>>) -> ConsumeError {
    let status = resp.status();
    let message = resp
        .body()
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_string());
    ConsumeError::Refused {
        status: status.as_u16(),
        message,
    }
}

/// Carries one local connection through the front door until both directions ended.
pub async fn carry(
    door: &FrontDoor,
    socket: TcpStream,
) -> Result<carrier::CarryStats, ConsumeError> {
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let ws = open(door).await?;
    let opts = CarryOptions {
        idle: None,
        ping_every: Some(PING_EVERY),
        ping_first: true,
        wait_for_peer: false,
    };
    Ok(carrier::carry_io(ws, socket, opts).await?)
}

/// Accepts on `listener` until `shutdown`, each connection carried on a task of its own; then
/// lets those still open go on for a grace period.
pub async fn serve(
    listener: TcpListener,
    door: FrontDoor,
    printer: Printer,
    shutdown: CancellationToken,
) {
    let door = Arc::new(door);
    let tasks = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    printer.warn(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (door, printer) = (door.clone(), printer.clone());
        let span = tracing::info_span!("consume", %peer);
        tasks.spawn(
            async move {
                let started = Instant::now();
                let took = || format_duration(started.elapsed());
                match carry(&door, socket).await {
                    Ok(s) => printer.tcp(&format!(
                        "TCP  {peer} closed after {}: {} sent, {} received",
                        took(),
                        format_bytes(s.sent),
                        format_bytes(s.received)
                    )),
                    Err(e) => printer.warn(&format!("TCP  {peer} failed after {}: {e}", took())),
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    tasks.close();
    if !tasks.is_empty() {
        printer.info(&format!("waiting for {} open connection(s)", tasks.len()));
        if tokio::time::timeout(DRAIN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            printer.warn("connections still open after the grace period; closing");
        }
    }
}
