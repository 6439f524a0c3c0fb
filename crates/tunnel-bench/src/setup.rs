//! Starting every process of a run, and the routes through them: for each backend (nginx and
//! the bench backend), one route per path (direct, tunnel, rathole, bore, relays), each with
//! the processes it runs through, so that a phase can measure any route and charge CPU time
//! and context switches to the right processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::machine::neutral_env;
use crate::paths::{BackendKind, PathKind};
use crate::peers::{self, Bore, Rathole};
use crate::procs::{children, poll_until, Proc};
use crate::{client, nginx};

/// API key of the benchmark's servers (they listen on loopback only).
pub const API_KEY: &str = "tunnel-bench-key-0123456789";
/// Deadline for any process to become ready.
pub const READY: Duration = Duration::from_secs(15);

/// Where the programs and the files of a run are.
#[derive(Debug, Clone)]
pub struct Places {
    /// The release `tunnel-server` and `tunnel-client`.
    pub bins: PathBuf,
    /// The same two built with `--features alloc-count`, if there.
    pub alloc_bins: Option<PathBuf>,
    /// `rathole` and `bore`, if there.
    pub peers: Option<PathBuf>,
    /// Generated configurations and nginx's files.
    pub work: PathBuf,
}

/// A process on a route, by the name the tables give it.
#[derive(Debug, Clone)]
pub struct Role {
    /// E.g. `tunnel-server`.
    pub name: &'static str,
    /// Its processes (nginx: the master and its workers).
    pub pids: Vec<u32>,
}

/// One way to a backend.
#[derive(Debug, Clone)]
pub struct Route {
    /// Which path this is.
    pub path: PathKind,
    /// Where requests go.
    pub addr: SocketAddr,
    /// The path prefix the tunnel routes on (empty for the others).
    pub prefix: String,
    /// The processes between the load generator and the backend.
    pub procs: Vec<Role>,
}

impl Route {
    /// The URL of `path` on the backend, through this route.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.addr, self.prefix)
    }
    /// The request target of `path` on the backend, through this route.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// A backend and every route to it.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Which backend.
    pub kind: BackendKind,
    /// The backend's own processes.
    pub role: Role,
    /// One route per path that this run has, in [`PathKind::ALL`] order.
    pub routes: Vec<Route>,
}

impl Backend {
    /// The route of `path`, if this run has it.
    pub fn route(&self, path: PathKind) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
    }
}

/// Every process of a run; dropping it kills them all.
pub struct Setup {
    /// nginx and the bench backend, with their routes.
    pub backends: Vec<Backend>,
    /// `tunnel-server` (shared by both backends' tunnels).
    pub server: Proc,
    /// Its address.
    pub server_addr: SocketAddr,
    /// One `tunnel-client` per backend, in the order of `backends`.
    pub clients: Vec<Proc>,
    /// The processes that only need to live as long as this.
    pub others: Vec<Proc>,
    /// rathole, when installed.
    pub rathole: Option<Rathole>,
    /// bore, when installed.
    pub bore: Option<Bore>,
    /// Why a peer is missing, for the report.
    pub notes: Vec<String>,
}

fn role_of(name: &'static str, proc: &Proc) -> Role {
    Role {
        name,
        pids: vec![proc.pid],
    }
}

impl Setup {
    /// Starts the backends, the tunnel (server and one client per backend), rathole, bore and
    /// the relays, and waits until every route answers.
    pub async fn start(places: &Places, file_sizes: &[u64]) -> anyhow::Result<Self> {
        let (mut nginx, nginx_addr) = nginx::start(&places.work.join("nginx"), file_sizes).await?;
        let workers = children(nginx.pid);
        nginx.adopt(&workers);
        let mut nginx_pids = vec![nginx.pid];
        nginx_pids.extend(workers);
        let (bench, bench_addr) = start_backend().await?;
        let (server, server_addr) = start_server(&places.bins, ServerKind::Bench, &[]).await?;
        let backends = [
            (
                BackendKind::Nginx,
                nginx_addr,
                "nginx (master and workers)",
                nginx_pids,
            ),
            (
                BackendKind::Bench,
                bench_addr,
                "bench backend",
                vec![bench.pid],
            ),
        ];
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.1).collect();
        let mut notes = Vec::new();
        let (rathole, bore) = match &places.peers {
            Some(dir) => (
                Some(peers::start_rathole(&dir.join("rathole"), &places.work, &addrs).await?),
                Some(peers::start_bore(&dir.join("bore"), &addrs).await?),
            ),
            None => {
                notes.push("rathole and bore not measured: no --peers-dir".to_string());
                (None, None)
            }
        };
        let mut setup = Self {
            backends: Vec::new(),
            server,
            server_addr,
            clients: Vec::new(),
            others: vec![nginx, bench],
            rathole,
            bore,
            notes,
        };
        for (i, (kind, addr, name, pids)) in backends.into_iter().enumerate() {
            let role = Role { name, pids };
            let backend = setup.add_backend(places, i, kind, addr, role).await?;
            setup.backends.push(backend);
        }
        Ok(setup)
    }

    /// Starts what the routes to backend `i` need (a tunnel client, two relays) and lists
    /// its routes.
    async fn add_backend(
        &mut self,
        places: &Places,
        i: usize,
        kind: BackendKind,
        addr: SocketAddr,
        role: Role,
    ) -> anyhow::Result<Backend> {
        let name = kind.as_str();
        let c = spawn_client(&places.bins, self.server_addr, addr, name, &[])?;
        wait_tunnel(self.server_addr, name, Instant::now()).await?;
        // The raw TCP floor: public → relay → relay → backend.
        let (near, near_addr) = start_relay(addr).await?;
        let (far, far_addr) = start_relay(near_addr).await?;
        let plain = |path, addr, procs| Route {
            path,
            addr,
            prefix: String::new(),
            procs,
        };
        let mut routes = vec![
            plain(PathKind::Direct, addr, Vec::new()),
            Route {
                path: PathKind::Tunnel,
                addr: self.server_addr,
                prefix: format!("/{name}"),
                procs: vec![
                    role_of("tunnel-server", &self.server),
                    role_of("tunnel-client", &c),
                ],
            },
        ];
        if let Some(r) = &self.rathole {
            let procs = vec![
                role_of("rathole server", &r.server),
                role_of("rathole client", &r.client),
            ];
            routes.push(plain(PathKind::Rathole, r.public[i], procs));
        }
        if let Some(b) = &self.bore {
            let procs = vec![
                role_of("bore server", &b.server),
                role_of("bore local", &b.clients[i]),
            ];
            routes.push(plain(PathKind::Bore, b.public[i], procs));
        }
        let procs = vec![
            role_of("relay (public side)", &far),
            role_of("relay (backend side)", &near),
        ];
        routes.push(plain(PathKind::Relay, far_addr, procs));
        self.clients.push(c);
        self.others.extend([near, far]);
        Ok(Backend { kind, role, routes })
    }

    /// The backend of `kind`.
    pub fn backend(&self, kind: BackendKind) -> anyhow::Result<&Backend> {
        self.backends
            .iter()
            .find(|b| b.kind == kind)
            .ok_or_else(|| anyhow!("no {} backend", kind.as_str()))
    }

    /// Stops the tunnel gracefully (SIGTERM, as an operator would); the rest is killed.
    pub async fn stop(self) -> anyhow::Result<()> {
        for c in self.clients {
            c.terminate(Duration::from_secs(10)).await?;
        }
        self.server.terminate(Duration::from_secs(30)).await
    }
}

/// Starts the benchmark's own backend (`tunnel-bench backend`) and returns it with its address.
pub async fn start_backend() -> anyhow::Result<(Proc, SocketAddr)> {
    start_helper("backend", &["backend"]).await
}

/// Starts a raw TCP relay to `to` (see [`crate::relay`]).
async fn start_relay(to: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    start_helper("relay", &["relay", "--to", &to.to_string()]).await
}

/// Starts this program with `args`; it prints `listening ADDR` once ready.
async fn start_helper(name: &str, args: &[&str]) -> anyhow::Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut proc = Proc::spawn(
        name,
        neutral_env(&mut Command::new(exe))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let stdout = proc
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{name} stdout not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY, lines.next_line())
        .await
        .with_context(|| format!("{name} did not say where it listens"))??
        .ok_or_else(|| anyhow!("{name} exited before listening"))?;
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| anyhow!("unexpected {name} line {line:?}"))?
        .parse()?;
    Ok((proc, addr))
}

/// What a `tunnel-server` is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// The measured server: every setting at its default as a user runs it (request log lines
    /// at info, metrics listener on), except the public rate limit, which would answer wrk
    /// with 429s.
    Bench,
    /// The server that holds 1,000 idle tunnels: also no API, connect or handshake limits
    /// (their creation would hit them).
    Idle,
}

/// Starts `tunnel-server` (from `bins`) on 127.0.0.1:0 with JSON logs on stderr and `env`
/// added; reads its address from the "ready" line and keeps draining its logs (as a log
/// collector would).
pub async fn start_server(
    bins: &Path,
    kind: ServerKind,
    env: &[(&str, &str)],
) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(bins.join("tunnel-server"));
    neutral_env(&mut cmd)
        .current_dir(std::env::temp_dir())
        .env("TUNNEL_BIND", "127.0.0.1:0")
        .env("TUNNEL_API_KEYS", API_KEY)
        .env("TUNNEL_PUBLIC_RATE_PER_SEC", "0")
        .env("TUNNEL_METRICS_BIND", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("TUNNEL_PUBLIC_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if kind == ServerKind::Idle {
        cmd.env("TUNNEL_MAX_TUNNELS_PER_KEY", "5000")
            .env("TUNNEL_API_RATE_PER_MIN", "0")
            .env("TUNNEL_CONNECT_RATE_PER_MIN", "0")
            .env("TUNNEL_MAX_PENDING_HANDSHAKES", "2000");
    }
    let mut proc = Proc::spawn("tunnel-server", &mut cmd)?;
    let stderr = proc
        .child_mut()
        .stderr
        .take()
        .ok_or_else(|| anyhow!("server stderr not piped"))?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(READY, async {
        while let Some(line) = lines.next_line().await? {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(listen) = v["listen"].as_str() {
                return Ok::<SocketAddr, anyhow::Error>(listen.parse()?);
            }
        }
        bail!("tunnel-server exited before listening")
    })
    .await
    .context("tunnel-server did not log its address")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    poll_until(
        "tunnel-server /ready",
        READY,
        Duration::from_millis(5),
        || async {
            let mut s = client::connect::<Empty<Bytes>>(addr).await.ok()?;
            let st = client::get_status(&mut s, addr, "/ready").await.ok()?;
            (st == StatusCode::OK).then_some(())
        },
    )
    .await?;
    Ok((proc, addr))
}

/// Starts `tunnel-client` (from `bins`, `--quiet`) exposing `backend` as tunnel `name`.
pub fn spawn_client(
    bins: &Path,
    server: SocketAddr,
    backend: SocketAddr,
    name: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    Proc::spawn(
        "tunnel-client",
        neutral_env(&mut Command::new(bins.join("tunnel-client")))
            .current_dir(std::env::temp_dir())
            .args(["--server", &server.to_string(), "--api-key", API_KEY])
            .args([
                "--port",
                &backend.port().to_string(),
                "--local-host",
                &backend.ip().to_string(),
            ])
            .args(["--name", name, "--quiet"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// Polls `GET /NAME/` through the server (on one keep-alive connection, reopened if it
/// breaks) until the tunnel answers 200; returns how long that took from `since`.
pub async fn wait_tunnel(
    server: SocketAddr,
    name: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    let path = format!("/{name}/");
    let deadline = since + READY;
    let mut conn = None;
    loop {
        if conn.is_none() {
            conn = client::connect::<Empty<Bytes>>(server).await.ok();
        }
        if let Some(s) = conn.as_mut() {
            match client::get_status(s, server, &path).await {
                Ok(StatusCode::OK) => return Ok(since.elapsed()),
                Ok(_) => {}
                Err(_) => conn = None,
            }
        }
        if Instant::now() >= deadline {
            bail!("tunnel {name}: no successful request within {READY:?}");
        }
        // A poll interval, not a wait for readiness: the result is the first success.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
