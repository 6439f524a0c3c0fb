//! Several real `tunnel-server` processes sharing a real Redis, on loopback: what the
//! multi-pod tests need.
//!
//! - [`Redis`]: `redis-server` on a unix socket in a directory of its own (append-only file
//!   on, so that a restart keeps the data), stopped with `kill -9` and restarted at will.
//! - [`Pod`]: one `tunnel-server` process (ports 0, learnt from its `ready` log line).
//! - [`Balancer`]: a small TCP load balancer standing in for the ingress: each connection
//!   goes to the first backend of its list that accepts it, so a client "reaches any pod"
//!   and fails over when one dies. A test helper, not product code.
//!
//! Without `redis-server` the tests that need it print a loud SKIPPED line and pass, unless
//! `TUNNEL_REQUIRE_REDIS=1` (as `.ci/run` sets), which makes a missing Redis a failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::process::{Child, Command};

use crate::{API_KEY, DEADLINE};

/// The peer secret of every test pod.
pub const PEER_SECRET: &str = "test-peer-secret-0123456789abcdef";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `redis-server` can be run; prints SKIPPED (or panics under TUNNEL_REQUIRE_REDIS=1)
/// when it cannot.
pub fn redis_available(test: &str) -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("TUNNEL_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
        panic!("{test}: redis-server is not installed, and TUNNEL_REQUIRE_REDIS=1");
    }
    eprintln!("\n!!!!! SKIPPED {test}: redis-server is not installed (apt-get install redis-server) !!!!!\n");
    false
}

/// A `redis-server` of the test's own.
pub struct Redis {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    options: RedisOptions,
    /// Plain TCP and TLS ports, when [`RedisOptions::tcp`].
    ports: Option<(u16, u16)>,
}

/// How a test's Redis is reached besides its unix socket.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: every connection must authenticate (the unix socket's too).
    pub password: Option<String>,
    /// Also listen on two loopback ports: plain TCP and TLS (a certificate for 127.0.0.1
    /// signed by a CA of the test's own, made with `openssl`; see [`Redis::ca_file`]).
    pub tcp: bool,
}

/// A port that was free a moment ago (redis-server takes port numbers, not 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 and localhost it signed (`redis.pem`,
/// `redis.key`), in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
}

impl Redis {
    /// Starts one in a fresh directory; `None` (after a SKIPPED line) if there is none.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, RedisOptions::default()).await
    }

    /// Starts one with `options`; `None` (after a SKIPPED line) if there is none.
    pub async fn start_with(test: &str, options: RedisOptions) -> Option<Self> {
        if !redis_available(test) {
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tunnel-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let ports = options.tcp.then(|| {
            make_certificates(&dir);
            (free_port(), free_port())
        });
        let mut redis = Self {
            dir,
            socket,
            child: None,
            options,
            ports,
        };
        redis.run().await;
        Some(redis)
    }

    async fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        match self.ports {
            Some((plain, tls)) => {
                let (plain, tls) = (plain.to_string(), tls.to_string());
                cmd.args(["--bind", "127.0.0.1", "--port", &plain, "--tls-port", &tls])
                    .args([
                        "--tls-cert-file",
                        "redis.pem",
                        "--tls-key-file",
                        "redis.key",
                    ])
                    .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            }
            None => cmd.args(["--port", "0"]),
        };
        if let Some(password) = &self.options.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .current_dir(&self.dir)
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !self.pings().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether it answers a PING.
    pub async fn pings(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket).await else {
            return false;
        };
        let (ask, answer) = match &self.options.password {
            Some(p) => (format!("AUTH {p}\r\nPING\r\n"), "+OK\r\n+PONG\r\n"),
            None => ("PING\r\n".to_string(), "+PONG\r\n"),
        };
        if s.write_all(ask.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; answer.len()];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && buf == answer.as_bytes()
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT`, or `rediss://` for the TLS port (with
    /// [`RedisOptions::tcp`] only).
    pub fn tcp_url(&self, tls: bool) -> String {
        let (plain, secure) = self.ports.expect("started with RedisOptions::tcp");
        let auth = match &self.options.password {
            Some(p) => format!(":{p}@"),
            None => String::new(),
        };
        match tls {
            true => format!("rediss://{auth}127.0.0.1:{secure}"),
            false => format!("redis://{auth}127.0.0.1:{plain}"),
        }
    }

    /// The CA that signed the TLS port's certificate (for `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `unix:///…/redis.sock` (`?pass=PASSWORD` when it has one).
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(p) => format!("unix://{}?pass={p}", self.socket.display()),
            None => format!("unix://{}", self.socket.display()),
        }
    }

    /// `kill -9`, and waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again on the same socket and data.
    pub async fn restart(&mut self) {
        self.run().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `tunnel-server` process, killed when dropped.
pub struct Pod {
    /// Its `TUNNEL_NODE_ID`.
    pub name: String,
    /// Its public listener.
    pub addr: SocketAddr,
    /// Its peer listener.
    pub peer: SocketAddr,
    /// Its metrics listener.
    pub metrics: SocketAddr,
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Pod {
    /// Starts pod `name` on Redis `redis_url`, its public URL `public_url`, plus `env`.
    pub async fn start(
        name: &str,
        redis_url: &str,
        public_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        crate::init_logs();
        let mut cmd = Command::new(crate::workspace_bin("tunnel-server"));
        for (k, _) in std::env::vars() {
            if k.starts_with("TUNNEL_") || k.starts_with("LOG_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TUNNEL_API_KEYS", API_KEY)
            .env("TUNNEL_BIND", "127.0.0.1:0")
            .env("TUNNEL_METRICS_BIND", "127.0.0.1:0")
            .env("TUNNEL_PUBLIC_URL", public_url)
            .env("TUNNEL_REDIS_URL", redis_url)
            .env("TUNNEL_NODE_ID", name)
            .env("TUNNEL_PEER_BIND", "127.0.0.1:0")
            .env("TUNNEL_PEER_SECRET", PEER_SECRET)
            .env("TUNNEL_LEASE_SECS", "3")
            .env("TUNNEL_SHUTDOWN_GRACE_SECS", "2")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,tunnel_server=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"listen\"") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let line = tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .unwrap_or_else(|_| panic!("pod {name} not ready"))
            .unwrap_or_else(|_| panic!("pod {name} exited: {}", logs.lock().unwrap()));
        let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |k: &str| fields[k].as_str().unwrap().parse().unwrap();
        Self {
            name: name.to_string(),
            addr: addr("listen"),
            peer: addr("peer"),
            metrics: addr("metrics"),
            child,
            logs,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The sum of `tunnel_requests_total` for `tunnel` on this pod.
    pub async fn requests_counted(&self, tunnel: &str) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("tunnel=\"{tunnel}\"");
        text.lines()
            .filter(|l| l.starts_with("tunnel_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `kill -9`, and waits for the exit.
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM (a graceful shutdown), without waiting.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGSTOP: the pod answers nothing (its sockets stay open, connections to it hang) until
    /// [`Pod::resume`]; a stand-in for a pod that is paused or partitioned.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT, after [`Pod::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; its status code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("pod did not exit")
            .unwrap();
        status.code()
    }
}

/// A TCP load balancer on loopback: each connection goes to the first backend that accepts
/// it, in the order of [`Balancer::set`].
pub struct Balancer {
    /// Where it listens.
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// A balancer over `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let list = backends.clone();
        let handle = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let order = list.lock().unwrap().clone();
                tokio::spawn(async move {
                    for backend in order {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            backends,
            handle,
        }
    }

    /// The backends, in the order they are tried.
    pub fn set(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
