//! The client's life: create the tunnel, connect, serve streams, reconnect after any drop
//! (re-creating the tunnel under the same id if the server forgot it), and delete it on exit.
//! The handshake of one connection is in `connect`.

mod backoff;
mod connect;
mod create;
mod error;
mod reach;
mod retire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::{self, ClientEvent, ClientMux, Goodbye, MuxConfig};
use tunnel_protocol::{GoodbyeReason, Welcome};

use self::backoff::{or_shutdown, pause, Backoff};
use self::connect::{connect, ClientWs, ConnectError};
use self::create::Creating;
use self::error::ended;
pub use self::error::{
    ClientError, EXIT_IN_USE, EXIT_NO_HOST, EXIT_NO_PERM, EXIT_PROTOCOL, EXIT_REPLACED,
};
pub use self::reach::Fatal;
use self::reach::Reach;
use self::retire::{finish_in_flight, Retiring};
use crate::config::ClientConfig;
use crate::control::{ApiError, ControlClient, Created, TcpEndpoint};
use crate::display::Printer;
use crate::forward::Forwarder;
use crate::inspect::{self, Inspector};
use crate::tcp::TcpForwarder;

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
        /// The traffic inspector's page, unless it is off.
        inspector: Option<String>,
    },
    /// The connection dropped; trying again.
    Reconnecting {
        /// Why it dropped.
        reason: String,
    },
}

/// How long in-flight requests may take to finish after Ctrl-C, before the connection closes
/// (cutting them) and the tunnel is deleted. A second Ctrl-C quits at once.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Runs the client until `shutdown` is cancelled (then lets in-flight requests finish, deletes
/// the tunnel and returns `Ok`) or an unrecoverable error.
pub async fn run(
    cfg: ClientConfig,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), ClientError> {
    let printer = Printer::new(cfg.log_requests).with_verbose(cfg.session.verbose);
    run_as(cfg, printer, shutdown, status).await
}

/// [`run`], printing through `printer` (one of several tunnels prints with its name).
pub async fn run_as(
    cfg: ClientConfig,
    printer: Printer,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), ClientError> {
    let api = ControlClient::new(&cfg.server, &cfg.api_key)?;
    let (inspector, listener) = open_inspector(&cfg, &printer).await?.unzip();
    let forwarder = Forwarder::new(&cfg, printer.clone()).with_inspector(inspector.clone());
    let proxy_protocol = cfg.tcp.map(|t| t.proxy_protocol).unwrap_or_default();
    let tcp = TcpForwarder::new(cfg.local_authority(), proxy_protocol, printer.clone());
    let mut client = Client {
        forwarder: Arc::new(forwarder),
        tcp: Arc::new(tcp),
        inspector,
        backoff: Backoff::new(cfg.max_backoff),
        reach: Reach::default(),
        tasks: TaskTracker::new(),
        background: TaskTracker::new(),
        background_stop: shutdown.child_token(),
        retiring: TaskTracker::new(),
        announced: false,
        cfg,
        api,
        printer,
        shutdown,
        status,
    };
    if let (Some(inspector), Some(listener)) = (&client.inspector, listener) {
        let serving = inspect::serve(listener, inspector.clone(), client.background_stop.clone());
        client.background.spawn(serving);
    }
    let name = client.cfg.name.clone();
    let Some(mut created) = client.create(name.as_deref()).await? else {
        return Ok(());
    };
    let result = client.keep_online(&mut created).await;
    client.end_background().await;
    client.end_retiring().await;
    result?;
    client.delete(&created).await;
    Ok(())
}

/// Binds the traffic inspector's listener (unless `--no-inspect`), and says so loudly when it
/// can be reached from other machines.
async fn open_inspector(
    cfg: &ClientConfig,
    printer: &Printer,
) -> Result<Option<(Inspector, tokio::net::TcpListener)>, ClientError> {
    let Some(icfg) = &cfg.inspect else {
        return Ok(None);
    };
    let bound = Inspector::bind(icfg, cfg.local_authority())
        .await
        .map_err(|source| ClientError::Inspector {
            addr: icfg.addr,
            source,
        })?;
    if let Some(warning) = bound.0.exposure_warning() {
        printer.warn(&warning);
    }
    Ok(Some(bound))
}

/// A running client: what every step of its life needs.
struct Client {
    cfg: ClientConfig,
    api: ControlClient,
    printer: Printer,
    forwarder: Arc<Forwarder>,
    /// The raw TCP streams of a TCP tunnel.
    tcp: Arc<TcpForwarder>,
    /// The traffic inspector, unless it is off (its server runs on `background`).
    inspector: Option<Inspector>,
    backoff: Backoff,
    /// What was last said about reaching the server.
    reach: Reach,
    /// Every forward (one per request), so that Ctrl-C can wait for them.
    tasks: TaskTracker,
    /// Everything else spawned beside the session (the custom domain's watch), which ends at
    /// shutdown, or when the client ends for another reason (`background_stop`).
    background: TaskTracker,
    background_stop: CancellationToken,
    /// Connections the server told the client to leave, each still serving its requests
    /// beside the current one until the server closes it (see `retire`); they stop with
    /// `background_stop`.
    retiring: TaskTracker,
    /// Whether the banner was printed (later connections say "reconnected").
    announced: bool,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
}

/// What to do after a connection attempt.
enum Next {
    /// Try again at once.
    Now,
    /// Try again after the backoff.
    Later,
    /// Stop: shutdown was asked for.
    Stop,
}

impl Client {
    /// Connects, serves, and reconnects after any drop, until shutdown (`Ok`) or an end the
    /// client cannot recover from. `created` follows re-creations of the tunnel.
    async fn keep_online(&mut self, created: &mut Created) -> Result<(), ClientError> {
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(attempt) = or_shutdown(&self.shutdown, connect(&self.cfg, created)).await
            else {
                return Ok(());
            };
            let next = match attempt {
                Ok((ws, welcome)) => self.online(ws, welcome, created).await?,
                Err(e) => self.not_connected(e, created).await?,
            };
            match next {
                Next::Now => continue,
                Next::Stop => return Ok(()),
                Next::Later => {}
            }
            if pause(self.backoff.next(), &self.shutdown).await {
                return Ok(());
            }
        }
    }

    /// Serves one connection until it ends.
    async fn online(
        &mut self,
        ws: ClientWs,
        welcome: Welcome,
        created: &Created,
    ) -> Result<Next, ClientError> {
        self.backoff.reset();
        self.reach.clear();
        if let Some(i) = &self.inspector {
            i.set_tunnel(&welcome.tunnel_id, &welcome.public_url);
        }
        let _ = self.status.send(Status::Online {
            tunnel_id: welcome.tunnel_id.clone(),
            // A TCP tunnel's way in: its public port, or the front door's command.
            public_url: match &created.tcp {
                Some(tcp) => match &tcp.address {
                    Some(address) => format!("tcp://{address}"),
                    None => connect_command(&self.cfg, created, tcp),
                },
                None => welcome.public_url.clone(),
            },
            inspector: self.inspector.as_ref().map(Inspector::url),
        });
        if self.announced {
            self.printer
                .info(&format!("reconnected: {}", welcome.public_url));
        } else if let Some(tcp) = &created.tcp {
            self.printer.online_tcp(
                &self.cfg.local_authority(),
                tcp.address.as_deref(),
                &connect_command(&self.cfg, created, tcp),
                &created.expires_at,
            );
            self.announced = true;
        } else {
            self.printer.online(
                &welcome.public_url,
                &self.cfg.local_authority(),
                &created.expires_at,
            );
            crate::domain::announce(&self.printer, created, &welcome.public_url);
            if let Some(i) = &self.inspector {
                self.printer.inspector(&i.url());
            }
            crate::domain::watch(
                &self.api,
                created,
                &self.printer,
                &self.background_stop,
                &self.background,
            );
            self.announced = true;
        }
        let (mux, mut events) = mux::start_client(ws, client_mux_config(&welcome));
        match self.serve(&mux, &mut events).await {
            End::Shutdown => {
                self.drain(&mux, events).await;
                Ok(Next::Stop)
            }
            End::Final(reason, message) => Err(ended(reason, &message)),
            End::Moving(reason) => Ok(self.move_on(mux, events, reason)),
            End::Lost(reason) => {
                self.printer
                    .warn(&format!("connection lost ({reason}); reconnecting"));
                let _ = self.status.send(Status::Reconnecting { reason });
                Ok(Next::Now)
            }
        }
    }

    /// The server asked the client to reconnect (it restarts) and keeps the connection open
    /// meanwhile: make-before-break, the connection goes on serving beside the next one
    /// until the server closes it, and the client connects again at once.
    fn move_on(&self, mux: ClientMux, events: mpsc::Receiver<ClientEvent>, reason: String) -> Next {
        let retiring = Retiring {
            forwarder: self.forwarder.clone(),
            tcp: self.tcp.clone(),
            stop: self.background_stop.clone(),
            grace: DRAIN_GRACE,
        };
        self.retiring.spawn(retiring.run(mux, events));
        self.printer.info(&format!(
            "{reason}; reconnecting (requests in flight finish first)"
        ));
        let _ = self.status.send(Status::Reconnecting { reason });
        Next::Now
    }

    /// Hands every request to a forward of its own until shutdown or the connection's end.
    async fn serve(&self, mux: &ClientMux, events: &mut mpsc::Receiver<ClientEvent>) -> End {
        let mut said = None;
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return End::Shutdown,
                e = events.recv() => e,
            };
            match event {
                Some(ClientEvent::Request(request)) => {
                    self.tasks.spawn(self.forwarder.clone().boxed(request));
                }
                Some(ClientEvent::Tcp(tcp)) => {
                    self.tasks.spawn(self.tcp.clone().forward(tcp));
                }
                Some(ClientEvent::Goodbye(Goodbye { reason, message })) => {
                    if !reason.should_reconnect() {
                        mux.abort("server ended the tunnel");
                        return End::Final(reason, message);
                    }
                    // The server restarts: a GOAWAY, this connection still open (see `retire`).
                    if reason == GoodbyeReason::ServerShutdown {
                        return End::Moving(message);
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

    /// After Ctrl-C: the requests in flight finish (for at most [`DRAIN_GRACE`]) while new
    /// ones are refused, then the connection closes. Forwards still running then end with it
    /// (their streams fail at once).
    async fn drain(&self, mux: &ClientMux, mut events: mpsc::Receiver<ClientEvent>) {
        self.tasks.close();
        if !self.tasks.is_empty() {
            self.printer.info(&format!(
                "finishing {} request(s) in flight (Ctrl-C again to quit at once)",
                self.tasks.len()
            ));
        }
        if !finish_in_flight(&self.tasks, &mut events, DRAIN_GRACE).await {
            self.printer
                .warn("requests still in flight after the grace period; closing");
        }
        mux.close(GoodbyeReason::ClientShutdown, "client shutting down")
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tasks.wait()).await;
    }

    /// A connection attempt failed: what to do about it.
    async fn not_connected(
        &mut self,
        e: ConnectError,
        created: &mut Created,
    ) -> Result<Next, ClientError> {
        let base = self.cfg.server.http_base.clone();
        match e {
            ConnectError::Unauthorized => self.unauthorized(created).await,
            ConnectError::Unreachable(detail) => {
                let retry_forever = self.cfg.session.retry_forever;
                let failed = self
                    .reach
                    .failed(&self.printer, &base, &detail, retry_forever);
                if let Some((fatal, message)) = failed {
                    return Err(ClientError::Unreachable { fatal, message });
                }
                let _ = self.status.send(Status::Reconnecting { reason: detail });
                Ok(Next::Later)
            }
            ConnectError::Version(message) => Err(ClientError::VersionMismatch(message)),
            ConnectError::Refused(message) => {
                let line = format!("the server refused the connection: {message}; retrying…");
                self.reach.say(&self.printer, &message, &line);
                Ok(Next::Later)
            }
        }
    }

    /// The server refused the tunnel's token: either it restarted and forgot the tunnel
    /// (created again under the same id), or the tunnel is another session's now (taken over
    /// while this client was away: the end).
    async fn unauthorized(&mut self, created: &mut Created) -> Result<Next, ClientError> {
        let Some(exists) = or_shutdown(&self.shutdown, self.api.exists(&created.tunnel_id)).await
        else {
            return Ok(Next::Stop);
        };
        match exists {
            Ok(false) => {
                self.printer.info(&format!(
                    "the server no longer knows tunnel {}; creating it again",
                    created.tunnel_id
                ));
                let id = created.tunnel_id.clone();
                match self.create(Some(&id)).await? {
                    Some(c) => *created = c,
                    None => return Ok(Next::Stop),
                }
                Ok(Next::Now)
            }
            Ok(true) => Err(ClientError::Replaced(format!(
                "replaced by another client: tunnel {} was taken over while this client was \
                 disconnected (its token is no longer valid)",
                created.tunnel_id
            ))),
            Err(ApiError::Unreachable { detail, .. }) => {
                let base = self.cfg.server.http_base.clone();
                let retry_forever = self.cfg.session.retry_forever;
                let failed = self
                    .reach
                    .failed(&self.printer, &base, &detail, retry_forever);
                if let Some((fatal, message)) = failed {
                    return Err(ClientError::Unreachable { fatal, message });
                }
                Ok(Next::Later)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops and waits for what runs beside the session (it ends at once when told).
    async fn end_background(&self) {
        self.background_stop.cancel();
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.background.wait()).await;
    }

    /// Waits for the connections the server told the client to leave (told to stop with
    /// `background_stop`, they let their requests finish, then close).
    async fn end_retiring(&self) {
        self.retiring.close();
        let most = DRAIN_GRACE + Duration::from_secs(3);
        let _ = tokio::time::timeout(most, self.retiring.wait()).await;
    }

    /// Leaving on purpose: removes the tunnel so that its URL stops answering.
    async fn delete(&self, created: &Created) {
        let id = &created.tunnel_id;
        match tokio::time::timeout(Duration::from_secs(5), self.api.delete(id)).await {
            Ok(Ok(())) => self.printer.info(&format!("tunnel {id} deleted")),
            Ok(Err(e)) => self
                .printer
                .warn(&format!("could not delete tunnel {id}: {e}")),
            Err(_) => self
                .printer
                .warn(&format!("could not delete tunnel {id}: timed out")),
        }
    }

    /// Creates the tunnel, retrying while the server is unreachable; `None` if shutdown came
    /// first.
    async fn create(&mut self, name: Option<&str>) -> Result<Option<Created>, ClientError> {
        Creating {
            api: &self.api,
            cfg: &self.cfg,
            printer: &self.printer,
            backoff: &mut self.backoff,
            reach: &mut self.reach,
            shutdown: &self.shutdown,
        }
        .run(name)
        .await
    }
}

/// What a consumer runs to reach a TCP tunnel through the front door, as the banner shows it.
fn connect_command(cfg: &ClientConfig, created: &Created, tcp: &TcpEndpoint) -> String {
    let port = cfg.local_port;
    format!(
        "tunnel-client connect {} --server {} --token {} --listen 127.0.0.1:{port}",
        created.tunnel_id, cfg.server.http_base, tcp.access_token
    )
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

/// How serving one connection ended.
enum End {
    Shutdown,
    Final(GoodbyeReason, String),
    Lost(String),
    /// The server asked the client to reconnect, and keeps the connection open meanwhile.
    Moving(String),
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
