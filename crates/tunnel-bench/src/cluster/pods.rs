//! The processes of `tunnel-bench cluster`: a real `redis-server` on a free loopback port,
//! `tunnel-server` pods sharing it (each with its peer listener on loopback), and a small TCP
//! balancer standing in for the ingress (each connection goes to the first pod of its list
//! that accepts it, so a client whose pod died reconnects to another).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::machine::neutral_env;
use crate::procs::{poll_until, Proc};
use crate::setup::{start_server, ServerKind, READY};

/// The peer secret of the benchmark's pods (they listen on loopback only).
const PEER_SECRET: &str = "tunnel-bench-peer-secret-0123456789abcdef";

/// A `redis-server` of the run's own, without persistence.
pub(super) struct Redis {
    /// The process.
    pub(super) proc: Proc,
    /// Where it listens.
    pub(super) addr: SocketAddr,
}

impl Redis {
    /// `redis://127.0.0.1:PORT`.
    pub(super) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// A port that was free a moment ago (redis-server takes a port number, not port 0).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether a Redis at `addr` answers PING.
async fn pings(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"+PONG\r\n"
}

/// Starts `redis-server` on a free loopback port, its files in `dir`; waits for a PONG.
pub(super) async fn start_redis(dir: &Path) -> anyhow::Result<Redis> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    neutral_env(&mut cmd)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let proc = Proc::spawn("redis-server", &mut cmd)
        .context("redis-server (Debian: apt-get install redis-server)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    poll_until(
        "redis-server PING",
        READY,
        Duration::from_millis(5),
        || async { pings(addr).await.then_some(()) },
    )
    .await?;
    Ok(Redis { proc, addr })
}

/// One `tunnel-server` pod.
pub(super) struct Pod {
    /// Its `TUNNEL_NODE_ID`.
    pub(super) node: String,
    /// The process.
    pub(super) proc: Proc,
    /// Its public listener.
    pub(super) addr: SocketAddr,
}

/// Starts pod `node` on `redis`: the benchmark's server settings plus the cluster's, the peer
/// listener on 127.0.0.1:0 (advertised as bound), leases of `lease_secs`.
pub(super) async fn start_pod(
    bins: &Path,
    redis: &Redis,
    node: &str,
    public_url: &str,
    lease_secs: u64,
) -> anyhow::Result<Pod> {
    let url = redis.url();
    let lease = lease_secs.to_string();
    let env = [
        ("TUNNEL_REDIS_URL", url.as_str()),
        ("TUNNEL_NODE_ID", node),
        ("TUNNEL_PEER_BIND", "127.0.0.1:0"),
        ("TUNNEL_PEER_SECRET", PEER_SECRET),
        ("TUNNEL_LEASE_SECS", lease.as_str()),
        ("TUNNEL_PUBLIC_URL", public_url),
    ];
    let (proc, addr) = start_server(bins, ServerKind::Bench, &env)
        .await
        .with_context(|| format!("pod {node}"))?;
    Ok(Pod {
        node: node.to_string(),
        proc,
        addr,
    })
}

/// A TCP balancer on 127.0.0.1:0 in this process: each connection goes to the first pod of
/// its list that accepts it. Only the clients' own connections (their WebSockets) go through
/// it; the measured requests go to the pods directly.
pub(super) struct Balancer {
    /// Where it listens.
    pub(super) addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Starts one over `backends`.
    pub(super) async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let list = backends.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let order = list.lock().map(|l| l.clone()).unwrap_or_default();
                tokio::spawn(async move {
                    for backend in order {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            backends,
            task,
        })
    }

    /// The pods, in the order they are tried.
    pub(super) fn set(&self, backends: Vec<SocketAddr>) -> anyhow::Result<()> {
        *self
            .backends
            .lock()
            .map_err(|_| anyhow!("balancer list poisoned"))? = backends;
        Ok(())
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the run's files go: `dir`, or a fresh directory under the system's temporary one.
pub(super) fn work_dir(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tunnel-bench-cluster-{}", std::process::id()))
    })
}
