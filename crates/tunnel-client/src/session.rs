//! The client's life: create the tunnel, connect, serve streams, reconnect after any drop
//! (re-creating the tunnel under the same id if the server forgot it), and delete it on exit.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::MaybeTlsStream;
use tokio_util::sync::CancellationToken;
use tunnel_protocol::frame::websocket_config;
use tunnel_protocol::mux::{self, Event, Mux, MuxConfig, Role};
use tunnel_protocol::ws::{Message, WebSocket};
use tunnel_protocol::{ControlMessage, GoodbyeReason, Hello, Welcome, PROTOCOL_VERSION};

use crate::config::ClientConfig;
use crate::control::{error_chain, ApiError, ControlClient, Created};
use crate::display::Printer;
use crate::forward::Forwarder;

/// Where the client is, for whoever embeds it (tests, a UI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Creating the tunnel or connecting for the first time.
    Starting,
    /// Connected and serving.
    Online {
        /// The tunnel id.
        tunnel_id: String,
        /// Its public URL.
        public_url: String,
    },
    /// The connection dropped; trying again.
    Reconnecting {
        /// Why it dropped.
        reason: String,
    },
}

/// Why the client stopped (other than being asked to).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control API refused us.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server ended the tunnel for good.
    #[error("{0}")]
    Ended(String),
    /// Client and server speak different protocol versions.
    #[error("{0}")]
    VersionMismatch(String),
}

impl ClientError {
    /// Process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api(ApiError::Unauthorized) => 77, // EX_NOPERM
            ClientError::Api(ApiError::Conflict(_)) => 75,  // EX_TEMPFAIL: name in use
            ClientError::VersionMismatch(_) => 76,          // EX_PROTOCOL
            _ => 1,
        }
    }
}

enum ConnectError {
    Unauthorized,
    Unreachable(String),
    Version(String),
    Refused(String),
}

type ClientWs = WebSocket<MaybeTlsStream<TcpStream>>;

/// Exponential backoff with jitter: 250 ms doubling to `max`, each wait drawn from
/// [half, full] of the current step so that many clients do not reconnect in lockstep.
struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Self {
            step: Self::FIRST.min(max),
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let full = self.step;
        self.step = (self.step * 2).min(self.max);
        let ms = full.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }

    fn reset(&mut self) {
        self.step = Self::FIRST.min(self.max);
    }
}

/// Waits `d` unless shutdown comes first; true if it did.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Runs the client until `shutdown` is cancelled (then deletes the tunnel and returns `Ok`) or
/// an unrecoverable error.
pub async fn run(
    cfg: ClientConfig,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), ClientError> {
    let printer = Printer::new(cfg.log_requests);
    let api = ControlClient::new(&cfg.server, &cfg.api_key)?;
    let forwarder = Arc::new(Forwarder::new(&cfg, printer.clone()));
    let mut backoff = Backoff::new(cfg.max_backoff);

    let Some(mut created) = create_with_retry(
        &api,
        &cfg,
        cfg.name.as_deref(),
        &printer,
        &mut backoff,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let mut announced = false;
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        match connect(&cfg, &created).await {
            Ok((ws, welcome)) => {
                backoff.reset();
                let _ = status.send(Status::Online {
                    tunnel_id: welcome.tunnel_id.clone(),
                    public_url: welcome.public_url.clone(),
                });
                if announced {
                    printer.info(&format!("reconnected: {}", welcome.public_url));
                } else {
                    printer.online(
                        &welcome.public_url,
                        &cfg.local_authority(),
                        &created.expires_at,
                    );
                    crate::domain::announce(&printer, &created, &welcome.public_url);
                    crate::domain::watch(&api, &created, &printer, &shutdown);
                    announced = true;
                }
                let (mux, events) = mux::start(ws, client_mux_config(&welcome), Role::Client);
                match serve(&mux, events, &forwarder, &shutdown).await {
                    End::Shutdown => {
                        mux.close(GoodbyeReason::ClientShutdown, "client shutting down")
                            .await;
                        break Ok(());
                    }
                    End::Final(reason, message) => {
                        let why = match reason {
                            GoodbyeReason::Replaced => "another tunnel-client connected to this tunnel and took it over",
                            GoodbyeReason::Deleted => "the tunnel was deleted on the server",
                            GoodbyeReason::Expired => "the tunnel expired (its TTL ended); start the client again for a new one",
                            GoodbyeReason::VersionMismatch => "protocol version mismatch",
                            _ => "the server ended the tunnel",
                        };
                        return Err(ClientError::Ended(format!("{why} ({message})")));
                    }
                    End::Lost(reason) => {
                        printer.warn(&format!("connection lost ({reason}); reconnecting"));
                        let _ = status.send(Status::Reconnecting { reason });
                        continue;
                    }
                }
            }
            Err(ConnectError::Unauthorized) => {
                // Either the server restarted and forgot the tunnel, or it was deleted.
                match api.exists(&created.tunnel_id).await {
                    Ok(false) => {
                        printer.info(&format!(
                            "the server no longer knows tunnel {}; creating it again",
                            created.tunnel_id
                        ));
                        let id = created.tunnel_id.clone();
                        match create_with_retry(
                            &api,
                            &cfg,
                            Some(&id),
                            &printer,
                            &mut backoff,
                            &shutdown,
                        )
                        .await?
                        {
                            Some(c) => created = c,
                            None => break Ok(()),
                        }
                        continue;
                    }
                    Ok(true) => {
                        return Err(ClientError::Ended(
                            "the server refused this client's tunnel token".into(),
                        ))
                    }
                    Err(ApiError::Unreachable { detail, .. }) => {
                        printer.warn(&format!("server unreachable: {detail}"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(ConnectError::Unreachable(detail)) => {
                printer.warn(&format!("cannot reach {}: {detail}", cfg.server.ws_base));
                let _ = status.send(Status::Reconnecting { reason: detail });
            }
            Err(ConnectError::Version(message)) => {
                return Err(ClientError::VersionMismatch(message))
            }
            Err(ConnectError::Refused(message)) => {
                printer.warn(&format!("server refused the connection: {message}"))
            }
        }
        let wait = backoff.next();
        printer.info(&format!("retrying in {:.1}s", wait.as_secs_f64()));
        if pause(wait, &shutdown).await {
            break Ok(());
        }
    };
    // Leaving on purpose: remove the tunnel so its URL stops answering.
    match tokio::time::timeout(Duration::from_secs(5), api.delete(&created.tunnel_id)).await {
        Ok(Ok(())) => printer.info(&format!("tunnel {} deleted", created.tunnel_id)),
        Ok(Err(e)) => printer.warn(&format!(
            "could not delete tunnel {}: {e}",
            created.tunnel_id
        )),
        Err(_) => printer.warn(&format!(
            "could not delete tunnel {}: timed out",
            created.tunnel_id
        )),
    }
    result
}

/// Creates the tunnel, retrying while the server is unreachable. A requested name held by a
/// tunnel of our own key (a previous run that did not exit cleanly) is taken over.
async fn create_with_retry(
    api: &ControlClient,
    cfg: &ClientConfig,
    name: Option<&str>,
    printer: &Printer,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<Option<Created>, ClientError> {
    loop {
        let result = match api
            .create(name, cfg.ttl_secs, &cfg.access, cfg.domain.as_deref())
            .await
        {
            Err(ApiError::Conflict(msg)) => match name {
                Some(n) if api.exists(n).await.unwrap_or(false) => {
                    printer.info(&format!(
                        "tunnel {n} is held by an earlier session of this key; taking it over"
                    ));
                    api.delete(n).await?;
                    api.create(name, cfg.ttl_secs, &cfg.access, cfg.domain.as_deref())
                        .await
                }
                _ => Err(ApiError::Conflict(msg)),
            },
            other => other,
        };
        match result {
            Ok(c) => return Ok(Some(c)),
            Err(ApiError::Unreachable { url, detail }) => {
                let wait = backoff.next();
                printer.warn(&format!(
                    "cannot reach the server at {url} ({detail}); retrying in {:.1}s",
                    wait.as_secs_f64()
                ));
                if pause(wait, shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The client's multiplexer settings, from the server's welcome. The receive windows (request
/// bodies) may grow to the server's `max_window`; a server that sends none predates window
/// auto-tuning, and windows then stay fixed as it expects (the mux also caps the value at what
/// a peer accepts).
fn client_mux_config(welcome: &Welcome) -> MuxConfig {
    let ping = Duration::from_secs(u64::from(welcome.ping_interval_secs.clamp(1, 3600)));
    MuxConfig {
        initial_window: welcome.initial_window,
        max_window: welcome.max_window.unwrap_or(welcome.initial_window),
        max_frame_size: welcome.max_frame_size,
        max_streams: 4096,
        ping_interval: ping,
        dead_after: ping * 3 + Duration::from_secs(1),
    }
}

async fn connect(
    cfg: &ClientConfig,
    created: &Created,
) -> Result<(ClientWs, Welcome), ConnectError> {
    let url = format!(
        "{}/api/tunnel/connect/{}",
        cfg.server.ws_base, created.tunnel_id
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Unreachable(format!("bad URL {url}: {e}")))?;
    let auth = http::HeaderValue::from_str(&format!("Bearer {}", created.token))
        .map_err(|_| ConnectError::Refused("unusable token".into()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, auth);
    let config = websocket_config(1024 * 1024);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
    let (ws, _) = match tokio::time::timeout(Duration::from_secs(15), connecting).await {
        Err(_) => return Err(ConnectError::Unreachable("connect timed out".into())),
        Ok(Err(tungstenite::Error::Http(resp)))
            if resp.status() == http::StatusCode::UNAUTHORIZED =>
        {
            return Err(ConnectError::Unauthorized)
        }
        Ok(Err(tungstenite::Error::Http(resp))) => {
            return Err(ConnectError::Refused(format!("HTTP {}", resp.status())))
        }
        Ok(Err(e)) => return Err(ConnectError::Unreachable(error_chain(&e))),
        Ok(Ok(pair)) => pair,
    };
    // tungstenite did the upgrade; the frames are ours from here on. Nothing can be lost in
    // its buffers: the server sends nothing before our hello.
    let mut ws = WebSocket::new(
        ws.into_inner(),
        Role::Client,
        tunnel_protocol::frame::max_message(1024 * 1024),
    );
    let hello = ControlMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        agent: concat!("tunnel-client/", env!("CARGO_PKG_VERSION")).to_string(),
    });
    let hello = serde_json::to_string(&hello).map_err(|e| ConnectError::Refused(e.to_string()))?;
    ws.send_text(&hello)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let first = tokio::time::timeout(Duration::from_secs(15), async {
        match ws.recv().await {
            Some(Ok(Message::Text(t))) => Ok(t),
            Some(Ok(other)) => Err(format!("unexpected {other:?} before welcome")),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("closed before welcome".into()),
        }
    })
    .await
    .map_err(|_| ConnectError::Unreachable("no welcome from the server".into()))?
    .map_err(ConnectError::Unreachable)?;
    match tunnel_protocol::frame::Frame::decode_text(&first) {
        Ok(ControlMessage::Welcome(w)) if w.protocol_version == PROTOCOL_VERSION => Ok((ws, w)),
        Ok(ControlMessage::Welcome(w)) => Err(ConnectError::Version(format!(
            "the server speaks tunnel protocol {}, this client {PROTOCOL_VERSION}: use a matching tunnel-client",
            w.protocol_version
        ))),
        Ok(ControlMessage::Goodbye {
            reason: GoodbyeReason::VersionMismatch,
            message,
        }) => Err(ConnectError::Version(message)),
        Ok(ControlMessage::Goodbye { message, .. }) => Err(ConnectError::Refused(message)),
        Ok(_) => Err(ConnectError::Refused("unexpected first message".into())),
        Err(e) => Err(ConnectError::Refused(format!("malformed welcome: {e}"))),
    }
}

enum End {
    Shutdown,
    Final(GoodbyeReason, String),
    Lost(String),
}

async fn serve(
    mux: &Mux,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    forwarder: &Arc<Forwarder>,
    shutdown: &CancellationToken,
) -> End {
    let mut said = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            e = events.recv() => e,
        };
        match event {
            Some(Event::Request { head, stream }) => {
                tokio::spawn(forwarder.clone().forward(mux.clone(), head, stream));
            }
            Some(Event::Goodbye { reason, message }) => {
                if !reason.should_reconnect() {
                    mux.abort("server ended the tunnel");
                    return End::Final(reason, message);
                }
                said = Some(message);
            }
            None => {
                let reason = said
                    .or_else(|| mux.close_reason())
                    .unwrap_or_else(|| "connection closed".into());
                return End::Lost(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(max_window: Option<u32>) -> Welcome {
        Welcome {
            protocol_version: tunnel_protocol::PROTOCOL_VERSION,
            tunnel_id: "abc".into(),
            public_url: "http://localhost:8989/abc/".into(),
            initial_window: 1 << 20,
            max_window,
            max_frame_size: 1 << 16,
            ping_interval_secs: 20,
        }
    }

    #[test]
    fn receive_windows_may_grow_to_the_servers_max() {
        let cfg = client_mux_config(&welcome(Some(16 << 20)));
        assert_eq!((cfg.initial_window, cfg.max_window), (1 << 20, 16 << 20));
    }

    #[test]
    fn an_older_server_without_max_window_means_fixed_windows() {
        let cfg = client_mux_config(&welcome(None));
        assert_eq!((cfg.initial_window, cfg.max_window), (1 << 20, 1 << 20));
    }
}
