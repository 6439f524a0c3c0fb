//! Test support for the end-to-end tests in `tests/`: a real server, a real client and a local
//! backend, each on an ephemeral port, with handles that stop them.
//!
//! Nothing here sleeps to wait for readiness: the server's listener is bound before it is
//! handed over, and the client reports `Online` through a watch channel.

#![allow(clippy::unwrap_used)]

pub mod backend;
pub mod browser;
pub mod cluster;
pub mod dns;
pub mod http;
pub mod process;
pub mod services;
pub mod tcp;
pub mod tls;
pub mod webapp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tunnel_client::{ClientArgs, ClientConfig, ClientError, Status};
use tunnel_server::{AppState, Settings};

/// The API key every test server accepts.
pub const API_KEY: &str = "test-api-key-0123456789";

/// Deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Installs a log subscriber once (set `RUST_LOG` to see logs of a failing test).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// A running in-process server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `GET /metrics` (a listener of its own, as in production).
    pub metrics_addr: SocketAddr,
    /// Its state (registry, shutdown token…).
    pub state: Arc<AppState>,
    handle: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with `extra` arguments.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), extra).await
    }

    /// Starts a server on `addr` (used to restart on the same port).
    pub async fn start_on(addr: SocketAddr, extra: &[&str]) -> Self {
        init_logs();
        let mut args = vec!["tunnel-server", "--api-keys", API_KEY];
        args.extend_from_slice(extra);
        let settings = Settings::parse_from(args).unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let state = Arc::new(AppState::new(settings, addr));
        let handle = tokio::spawn(tunnel_server::run_with_metrics(
            listener,
            metrics_listener,
            state.clone(),
        ));
        Self {
            addr,
            metrics_addr,
            state,
            handle,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET /metrics");
        resp.text().await.unwrap()
    }

    /// Starts graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Shuts down and waits until the server has finished.
    pub async fn stop(self) {
        self.state.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .unwrap()
            .unwrap();
    }

    /// Waits for the server task to finish (after `begin_shutdown`).
    pub async fn join(self) {
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .unwrap()
            .unwrap();
    }

    /// Creates a tunnel through the API; returns the JSON answer.
    pub async fn create_tunnel(&self, body: serde_json::Value) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(self.url("/api/tunnels/create"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "create failed");
        resp.json().await.unwrap()
    }
}

/// Client settings for a server at `server`, forwarding to 127.0.0.1:`port`, plus `extra` flags
/// (as on the command line).
pub fn client_config(
    server: SocketAddr,
    api_key: &str,
    port: u16,
    extra: &[&str],
) -> Result<ClientConfig, String> {
    let server = server.to_string();
    let port = port.to_string();
    let mut args = vec![
        "tunnel-client",
        "--server",
        &server,
        "--api-key",
        api_key,
        "--port",
        &port,
        "--local-host",
        "127.0.0.1",
    ];
    // The traffic inspector on a port of its own (tests run in parallel), unless the test
    // says otherwise.
    if !extra
        .iter()
        .any(|a| a.starts_with("--inspect-addr") || *a == "--no-inspect")
    {
        args.extend_from_slice(&["--inspect-addr", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    let parsed = <ClientArgs as clap::Parser>::try_parse_from(args).map_err(|e| e.to_string())?;
    ClientConfig::from_args(parsed).map_err(|e| e.to_string())
}

/// A running in-process client.
pub struct TestClient {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), ClientError>>,
    /// Its status updates.
    pub status: watch::Receiver<Status>,
    /// The tunnel id once online.
    pub tunnel_id: String,
    /// The public URL once online.
    pub public_url: String,
    /// The traffic inspector's URL (`http://127.0.0.1:PORT`), unless it is off.
    pub inspector: Option<String>,
}

impl TestClient {
    /// Starts a client for `server` forwarding to 127.0.0.1:`port`, and waits until online.
    pub async fn start(server: &TestServer, port: u16, extra: &[&str]) -> Self {
        Self::start_with_key(server, port, API_KEY, extra).await
    }

    /// [`TestClient::start`] with another API key.
    pub async fn start_with_key(
        server: &TestServer,
        port: u16,
        api_key: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_at_with_key(server.addr, port, api_key, extra).await
    }

    /// Starts a client for the server at `server` (a server, or a balancer in front of
    /// several), and waits until online.
    pub async fn start_at(server: SocketAddr, port: u16, extra: &[&str]) -> Self {
        Self::start_at_with_key(server, port, API_KEY, extra).await
    }

    /// [`TestClient::start_at`] with another API key.
    pub async fn start_at_with_key(
        server: SocketAddr,
        port: u16,
        api_key: &str,
        extra: &[&str],
    ) -> Self {
        let mut args = vec!["--quiet"];
        args.extend_from_slice(extra);
        let cfg = client_config(server, api_key, port, &args)
            .unwrap_or_else(|e| panic!("client flags: {e}"));
        Self::run(cfg).await
    }

    /// A `tunnel-client tcp PORT` for `server`, forwarding to 127.0.0.1:`port`, with `extra`
    /// flags; waits until online.
    pub async fn start_tcp(server: &TestServer, port: u16, extra: &[&str]) -> Self {
        Self::start_tcp_at(server.addr, port, extra).await
    }

    /// [`TestClient::start_tcp`] for the server at `server` (a server, or a balancer in front
    /// of several).
    pub async fn start_tcp_at(server: SocketAddr, port: u16, extra: &[&str]) -> Self {
        let (server, port) = (server.to_string(), port.to_string());
        let mut args = vec!["tunnel-client", "tcp", &port, "--server", &server];
        args.extend_from_slice(&["--api-key", API_KEY, "--local-host", "127.0.0.1", "--quiet"]);
        args.extend_from_slice(extra);
        let cli = <tunnel_client::config::Cli as clap::Parser>::try_parse_from(args)
            .unwrap_or_else(|e| panic!("client flags: {e}"));
        let Some(tunnel_client::config::Command::Tcp(tcp)) = cli.command else {
            panic!("not a tcp command");
        };
        Self::run(ClientConfig::from_tcp_args(tcp).unwrap()).await
    }

    /// Runs a client with `cfg` (a short backoff) and waits until online.
    pub async fn run(mut cfg: ClientConfig) -> Self {
        cfg.max_backoff = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let (tx, rx) = watch::channel(Status::Starting);
        let handle = tokio::spawn(tunnel_client::run(cfg, shutdown.clone(), tx));
        let mut client = Self {
            shutdown,
            handle,
            status: rx,
            tunnel_id: String::new(),
            public_url: String::new(),
            inspector: None,
        };
        client.wait_online().await;
        client
    }

    /// Waits until the client reports `Online`, and records its id and URL.
    pub async fn wait_online(&mut self) {
        let status = tokio::time::timeout(
            DEADLINE,
            self.status.wait_for(|s| matches!(s, Status::Online { .. })),
        )
        .await
        .expect("client did not come online in time")
        .map(|s| s.clone());
        let Ok(status) = status else {
            // Its end says why.
            let ended = tokio::time::timeout(DEADLINE, &mut self.handle).await;
            panic!("client stopped before coming online: {ended:?}");
        };
        if let Status::Online {
            tunnel_id,
            public_url,
            inspector,
        } = status
        {
            self.tunnel_id = tunnel_id;
            self.public_url = public_url;
            self.inspector = inspector;
        }
    }

    /// Waits until the client reports anything but `Online`.
    pub async fn wait_offline(&mut self) {
        tokio::time::timeout(
            DEADLINE,
            self.status
                .wait_for(|s| !matches!(s, Status::Online { .. })),
        )
        .await
        .expect("client did not notice the disconnect")
        .ok();
    }

    /// Path of the tunnel on the server: `/<id>`.
    pub fn prefix(&self) -> String {
        format!("/{}", self.tunnel_id)
    }

    /// Stops the client gracefully (it deletes its tunnel) and returns how it ended.
    pub async fn stop(self) -> Result<(), ClientError> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits for the client to end on its own.
    pub async fn join(self) -> Result<(), ClientError> {
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .unwrap()
            .unwrap()
    }
}

/// A WebSocket to the server, as a tunnel client holds it.
pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to tunnel `id` with `token` and sends a hello announcing `version`, speaking the
/// protocol by hand (to test what a non-conforming client can do). No size limits on our side,
/// so a test can send anything.
pub async fn raw_tunnel_client(server: &TestServer, id: &str, token: &str, version: u32) -> RawWs {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/tunnel/connect/{id}", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .unwrap();
    let hello = serde_json::json!({ "type": "hello", "protocol_version": version, "agent": "raw" });
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        hello.to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// The next control message on a raw client connection, or `None` once the server closed it.
pub async fn next_control(ws: &mut RawWs) -> Option<tunnel_protocol::ControlMessage> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Path of a binary of this workspace, built by `cargo test --workspace` (the crates' own
/// integration tests make cargo build them).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
