//! `tunnel-bench cluster`: what a request costs when it enters a pod other than the one holding
//! its tunnel's client (issue 15), and how long a tunnel is unreachable after `kill -9` of the
//! pod holding its client.
//!
//! A real `redis-server` on a free loopback port, `tunnel-server` pods sharing it (release
//! build, the benchmark's server settings plus the cluster's), the bench backend and one
//! `tunnel-client` connected to pod A.
//!
//! - **Cross-pod cost**, in interleaved rounds whose order alternates: small requests with
//!   `wrk -t1 -c1` and `wrk -t1 -c16` and a download of `--download-mib` MiB, each through
//!   pod A directly ("same pod") and through pod B, which forwards to A ("cross pod").
//!   Medians with (min–max) over the rounds, and cross / same as the median of the per-round
//!   ratios (the load of other processes on the machine cancels out of a ratio best).
//! - **Recovery after `kill -9`**: a second client connects through a TCP balancer in this
//!   process (standing in for the ingress) to the first of two pods that accepts; a third pod,
//!   which never holds the client, is asked for the tunnel. The pod holding the client is
//!   killed with SIGKILL, and the time from the kill to the first `200` through the third pod
//!   is recorded (the client reconnects through the balancer to the other pod and claims its
//!   tunnel, the third pod follows the new lease). The killed pod is started again under a new
//!   node id, and the next round kills the other one.

mod pods;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use serde::Serialize;

use crate::procs::Proc;
use crate::setup::{spawn_client, start_backend, wait_tunnel};
use crate::stats::{median, min_max};
use crate::{client, machine, wrk};
use pods::{start_pod, start_redis, Balancer, Pod, Redis};

/// How long a request through the third pod may take to succeed after a kill.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// Options of `tunnel-bench cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Interleaved rounds of the cross-pod comparison.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// MiB of each download.
    #[arg(long, default_value_t = 256)]
    pub download_mib: u64,
    /// `kill -9` recoveries to measure.
    #[arg(long, default_value_t = 3)]
    pub recoveries: usize,
    /// The pods' TUNNEL_LEASE_SECS.
    #[arg(long, default_value_t = 15)]
    pub lease_secs: u64,
    /// Directory holding the release `tunnel-server` and `tunnel-client` (default: this
    /// program's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory for Redis's files (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One figure through both paths, per round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pair {
    /// Through pod A, which holds the client.
    pub same_pod: Vec<f64>,
    /// Through pod B, which forwards to A.
    pub cross_pod: Vec<f64>,
}

impl Pair {
    /// The figures of one path.
    fn side(&mut self, cross: bool) -> &mut Vec<f64> {
        if cross {
            &mut self.cross_pod
        } else {
            &mut self.same_pod
        }
    }

    /// Cross / same per round.
    pub fn ratios(&self) -> Vec<f64> {
        self.same_pod
            .iter()
            .zip(&self.cross_pod)
            .map(|(s, c)| c / s)
            .collect()
    }
}

/// The figures of `tunnel-bench cluster`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterReport {
    /// The machine and its load before and after.
    pub machine: serde_json::Value,
    /// Rounds, durations and sizes.
    pub settings: serde_json::Value,
    /// Small requests/s over 1 keep-alive connection.
    pub rps_c1: Pair,
    /// Median latency (ms) over 1 connection.
    pub p50_ms_c1: Pair,
    /// Small requests/s over 16 keep-alive connections.
    pub rps_c16: Pair,
    /// Download MB/s (10^6 bytes per second).
    pub download_mb_s: Pair,
    /// Milliseconds from `kill -9` of the pod holding the client to the first successful
    /// request through a pod that never held it.
    pub recovery_ms: Vec<f64>,
}

fn cell(v: &[f64], digits: usize) -> String {
    match (median(v), min_max(v)) {
        (Some(m), Some((lo, hi))) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
        _ => "–".into(),
    }
}

impl ClusterReport {
    /// The table, as Markdown: medians with (min–max) over the rounds.
    pub fn table(&self) -> String {
        let row = |name: &str, p: &Pair, digits: usize| {
            format!(
                "| {name} | {} | {} | {} |\n",
                cell(&p.same_pod, digits),
                cell(&p.cross_pod, digits),
                cell(&p.ratios(), 2)
            )
        };
        let mut t = String::from(
            "| small requests and downloads | same pod (A) | cross pod (B → A) | cross / same |\n\
             |---|---:|---:|---:|\n",
        );
        t += &row("req/s, wrk -t1 -c1", &self.rps_c1, 0);
        t += &row("p50 ms, wrk -t1 -c1", &self.p50_ms_c1, 3);
        t += &row("req/s, wrk -t1 -c16", &self.rps_c16, 0);
        t += &row("download MB/s", &self.download_mb_s, 0);
        let list: Vec<String> = self.recovery_ms.iter().map(|x| format!("{x:.0}")).collect();
        t += &format!(
            "\nrecovery after kill -9, ms: {} (rounds: {})",
            cell(&self.recovery_ms, 0),
            list.join(", ")
        );
        t
    }
}

fn bin_dir(args: &ClusterArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    }
    let exe = std::env::current_exe().context("where is this program?")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))
}

/// What every phase needs: the programs, Redis, the backend.
struct Base {
    bins: PathBuf,
    redis: Redis,
    backend: (Proc, SocketAddr),
    public_url: String,
    lease_secs: u64,
    started: usize,
}

impl Base {
    /// Starts the next pod (node ids `pod-1`, `pod-2`…).
    async fn pod(&mut self) -> anyhow::Result<Pod> {
        self.started += 1;
        let node = format!("pod-{}", self.started);
        start_pod(
            &self.bins,
            &self.redis,
            &node,
            &self.public_url,
            self.lease_secs,
        )
        .await
    }
}

/// Runs both phases.
pub async fn run(args: ClusterArgs) -> anyhow::Result<ClusterReport> {
    let before = machine::before();
    let bins = bin_dir(&args)?;
    let work = pods::work_dir(args.work_dir.as_deref());
    let redis_dir = work.join("redis");
    let redis = start_redis(&redis_dir).await?;
    let balancer = Balancer::start(Vec::new()).await?;
    let mut base = Base {
        bins,
        redis,
        backend: start_backend().await?,
        public_url: format!("http://{}", balancer.addr),
        lease_secs: args.lease_secs,
        started: 0,
    };
    let mut report = ClusterReport::default();
    cross_pod(&mut base, &args, &mut report).await?;
    report.recovery_ms = recovery(&mut base, &balancer, args.recoveries).await?;
    let mut machine = before.describe();
    machine["load_generator"] =
        "wrk -t1 -c1 and -c16 --latency; one hyper connection per download".into();
    report.machine = machine;
    report.settings = serde_json::json!({
        "rounds": args.rounds,
        "wrk_secs": args.secs,
        "download_bytes": args.download_mib << 20,
        "recoveries": args.recoveries,
        "lease_secs": args.lease_secs,
        "pods": "release tunnel-server, TUNNEL_PUBLIC_RATE_PER_SEC=0, request log at info",
    });
    let Base { redis, backend, .. } = base;
    backend.0.terminate(Duration::from_secs(10)).await?;
    redis.proc.terminate(Duration::from_secs(10)).await?;
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    let _ = std::fs::remove_dir_all(&redis_dir);
    Ok(report)
}

/// The cross-pod phase: pods A and B, the client on A, interleaved rounds.
async fn cross_pod(
    base: &mut Base,
    args: &ClusterArgs,
    report: &mut ClusterReport,
) -> anyhow::Result<()> {
    const NAME: &str = "cluster";
    let a = base.pod().await?;
    let b = base.pod().await?;
    let client = spawn_client(&base.bins, a.addr, base.backend.1, NAME, &[])?;
    let since = Instant::now();
    wait_tunnel(a.addr, NAME, since).await?;
    wait_tunnel(b.addr, NAME, since).await?;
    // Warm-up: connections pooled on both hops.
    for pod in [&a, &b] {
        let url = format!("http://{}/{NAME}/", pod.addr);
        wrk::run(&url, 16, Duration::from_secs(1)).await?;
    }
    let bytes = args.download_mib << 20;
    let wrk_time = Duration::from_secs(args.secs);
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for cross in order {
            let addr = if cross { b.addr } else { a.addr };
            let url = format!("http://{addr}/{NAME}/");
            let one = wrk::run(&url, 1, wrk_time).await?;
            let many = wrk::run(&url, 16, wrk_time).await?;
            for r in [&one, &many] {
                anyhow::ensure!(r.errors == 0, "{url}: {} errors", r.errors);
            }
            let path = format!("/{NAME}/bytes/{bytes}");
            let down = client::download(addr, &path, None, None).await?;
            anyhow::ensure!(down.bytes == bytes, "{path}: {} bytes", down.bytes);
            report.rps_c1.side(cross).push(one.rps);
            report.p50_ms_c1.side(cross).push(one.p50_ms);
            report.rps_c16.side(cross).push(many.rps);
            report.download_mb_s.side(cross).push(down.mb_per_s());
        }
        eprintln!("cluster: round {} of {} done", round + 1, args.rounds);
    }
    client.terminate(Duration::from_secs(10)).await?;
    for pod in [a, b] {
        pod.proc.terminate(Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// Polls `GET path` through `addr` (a keep-alive connection, reopened when it breaks) until it
/// answers 200; how long that took from `since`.
async fn first_success(addr: SocketAddr, path: &str, since: Instant) -> anyhow::Result<Duration> {
    let mut conn = None;
    loop {
        if conn.is_none() {
            conn = client::connect::<Empty<Bytes>>(addr).await.ok();
        }
        if let Some(s) = conn.as_mut() {
            match client::get_status(s, addr, path).await {
                Ok(StatusCode::OK) => return Ok(since.elapsed()),
                Ok(_) => {}
                Err(_) => conn = None,
            }
        }
        anyhow::ensure!(
            since.elapsed() < RECOVERY_DEADLINE,
            "{path} through {addr}: no success within {RECOVERY_DEADLINE:?} of the kill"
        );
        // A poll interval: the figure is the time of the first success.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The recovery phase: `rounds` kills of the pod holding the client, timed through a third.
async fn recovery(base: &mut Base, balancer: &Balancer, rounds: usize) -> anyhow::Result<Vec<f64>> {
    const NAME: &str = "failover";
    let mut holder = base.pod().await?;
    let mut other = base.pod().await?;
    let asked = base.pod().await?;
    balancer.set(vec![holder.addr, other.addr])?;
    let client = spawn_client(&base.bins, balancer.addr, base.backend.1, NAME, &[])?;
    let path = format!("/{NAME}/");
    let mut times = Vec::new();
    for round in 0..rounds {
        // The client on `holder`, the third pod serving it (and caching its lease).
        let since = Instant::now();
        wait_tunnel(holder.addr, NAME, since).await?;
        wait_tunnel(asked.addr, NAME, since).await?;
        let killed = Instant::now();
        holder.proc.child_mut().kill().await.context("kill -9")?;
        let took = first_success(asked.addr, &path, killed).await?;
        eprintln!(
            "cluster: kill -9 of {} ({} of {rounds}): {} ms to the first 200 through {}",
            holder.node,
            round + 1,
            took.as_millis(),
            asked.node
        );
        times.push(took.as_secs_f64() * 1e3);
        // The killed pod comes back under a new name (as a Deployment's would); the client
        // is now on `other`, which the next round kills.
        let fresh = base.pod().await?;
        balancer.set(vec![other.addr, fresh.addr])?;
        holder = std::mem::replace(&mut other, fresh);
    }
    client.terminate(Duration::from_secs(10)).await?;
    for pod in [holder, other, asked] {
        pod.proc.terminate(Duration::from_secs(30)).await?;
    }
    Ok(times)
}
