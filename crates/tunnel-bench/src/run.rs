//! The orchestration: start the backend, the server and the client as separate processes on
//! loopback, measure each figure through both paths, interleaved, and build the report.

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

use crate::client::{self, Transfer};
use crate::idle::{self, Api};
use crate::procs::{poll_until, Proc};
use crate::report::{Better, Figure, Goal, Report};
use crate::{median, wrk};

/// API key of the benchmark's servers (they listen on loopback only).
const API_KEY: &str = "tunnel-bench-key-0123456789";
/// Deadline for any process to become ready.
const READY: Duration = Duration::from_secs(15);
/// The whole run is cut after this, whatever happens.
const WHOLE_RUN: Duration = Duration::from_secs(9 * 60);
/// Rate of the slow reader, bytes per second.
const SLOW_RATE: u64 = 5_000_000;
/// One GiB.
const GIB: u64 = 1 << 30;
/// The goals of issue 5.
const GOAL_RPS: f64 = 0.55;
const GOAL_P99: f64 = 1.8;
const GOAL_BULK: f64 = 0.55;
const GOAL_STREAM_RSS_MIB: f64 = 16.0;
const GOAL_IDLE_KIB: f64 = 32.0;
const GOAL_READY_MS: f64 = 50.0;

/// Options of `tunnel-bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Short run (about a minute): one round, 2 s wrk runs, 256 MiB transfers, 5 s slow read.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of each paired measurement (default 3, or 1 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "bench/results/latest.json")]
    pub out: PathBuf,
    /// Directory holding the release `tunnel-server` and `tunnel-client` (default: this
    /// program's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Idle tunnels to open for the per-tunnel memory figure.
    #[arg(long, default_value_t = 1000)]
    pub idle_tunnels: usize,
    /// Read the whole 1 GiB at 5 MB/s (about 3.5 minutes) instead of a bounded window.
    #[arg(long)]
    pub slow_full: bool,
}

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
struct Plan {
    rounds: usize,
    wrk_time: Duration,
    bulk_bytes: u64,
    fresh_per_round: usize,
    slow_time: Option<Duration>,
    startup_rounds: usize,
}

impl Plan {
    fn new(args: &RunArgs) -> Self {
        let quick = args.quick;
        Self {
            rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            wrk_time: Duration::from_secs(if quick { 2 } else { 5 }),
            bulk_bytes: if quick { GIB / 4 } else { GIB },
            fresh_per_round: if quick { 50 } else { 100 },
            slow_time: if args.slow_full {
                None
            } else {
                Some(Duration::from_secs(if quick { 5 } else { 20 }))
            },
            startup_rounds: if quick { 3 } else { 5 },
        }
    }
}

/// What a path is: where to send requests, and the prefix the tunnel needs.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    prefix: String,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.addr, self.prefix)
    }
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

fn bin_dir(args: &RunArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("where is this program?")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))
}

async fn start_backend() -> anyhow::Result<(Proc, SocketAddr)> {
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
        Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let stdout = proc
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow!("backend stdout not piped"))?;
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

/// Starts `tunnel-server` on 127.0.0.1:0 with JSON logs on stderr; reads its address from
/// the "ready" line and keeps draining its logs (as a log collector would).
async fn start_server(bins: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut proc = Proc::spawn(
        "tunnel-server",
        Command::new(bins.join("tunnel-server"))
            .current_dir(std::env::temp_dir())
            .env("TUNNEL_BIND", "127.0.0.1:0")
            .env("TUNNEL_API_KEYS", API_KEY)
            .env("TUNNEL_MAX_TUNNELS_PER_KEY", "5000")
            // The benchmark measures the data path: no rate limits (they would answer 429 to
            // wrk and to the 1,000 idle tunnels' creation), no metrics listener to collide with.
            .env("TUNNEL_PUBLIC_RATE_PER_SEC", "0")
            .env("TUNNEL_API_RATE_PER_MIN", "0")
            .env("TUNNEL_CONNECT_RATE_PER_MIN", "0")
            .env("TUNNEL_MAX_PENDING_HANDSHAKES", "2000")
            .env("TUNNEL_METRICS_BIND", "off")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("TUNNEL_PUBLIC_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
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

fn spawn_client(
    bins: &Path,
    server: SocketAddr,
    backend: SocketAddr,
    name: &str,
) -> anyhow::Result<Proc> {
    Proc::spawn(
        "tunnel-client",
        Command::new(bins.join("tunnel-client"))
            .current_dir(std::env::temp_dir())
            .args(["--server", &server.to_string(), "--api-key", API_KEY])
            .args([
                "--port",
                &backend.port().to_string(),
                "--local-host",
                "127.0.0.1",
            ])
            .args(["--name", name, "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// Polls `GET /NAME/` through the server (on one keep-alive connection, reopened if it
/// breaks) until the tunnel answers 200; returns how long that took from `since`.
async fn wait_tunnel(server: SocketAddr, name: &str, since: Instant) -> anyhow::Result<Duration> {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the whole benchmark; bounded by [`WHOLE_RUN`].
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    tokio::time::timeout(WHOLE_RUN, run_inner(args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish within {WHOLE_RUN:?}"))?
}

async fn run_inner(args: RunArgs) -> anyhow::Result<Report> {
    let plan = Plan::new(&args);
    let bins = bin_dir(&args)?;
    for b in ["tunnel-server", "tunnel-client"] {
        if !bins.join(b).is_file() {
            bail!(
                "{} not found: build the workspace in release mode first",
                bins.join(b).display()
            );
        }
    }
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut notes = Vec::new();
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());

    step("starting the backend and tunnel-server");
    let (_backend, backend_addr) = start_backend().await?;
    let (server, server_addr) = start_server(&bins).await?;
    // The raw TCP floor: public → relay → relay → backend.
    let (_relay_near, relay_near_addr) = start_relay(backend_addr).await?;
    let (_relay_far, relay_far_addr) = start_relay(relay_near_addr).await?;

    step("client start-up time");
    let mut ready_ms = Vec::new();
    for i in 0..plan.startup_rounds {
        let name = format!("startup-{i}");
        let t0 = Instant::now();
        let c = spawn_client(&bins, server_addr, backend_addr, &name)?;
        let took = wait_tunnel(server_addr, &name, t0).await?;
        ready_ms.push(ms(took));
        c.terminate(Duration::from_secs(10)).await?;
    }

    let client = spawn_client(&bins, server_addr, backend_addr, "bench")?;
    wait_tunnel(server_addr, "bench", Instant::now()).await?;
    let direct = Target {
        addr: backend_addr,
        prefix: String::new(),
    };
    let tunnel = Target {
        addr: server_addr,
        prefix: "/bench".into(),
    };
    let relay = Target {
        addr: relay_far_addr,
        prefix: String::new(),
    };
    let paths = [&direct, &tunnel, &relay];
    // Each round visits the three paths in a rotated order, so that none always runs first
    // (or right after another) and drifts of the machine spread over all three.
    let order = |round: usize| [0usize, 1, 2].map(|i| (i + round) % 3);

    step("small requests: wrk -t1 -c50 (warm-up, then rounds)");
    for t in paths {
        wrk::run(&t.url("/"), 50, Duration::from_secs(1)).await?;
    }
    let mut rps: [Vec<f64>; 3] = Default::default();
    let mut p50: [Vec<f64>; 3] = Default::default();
    let mut p99: [Vec<f64>; 3] = Default::default();
    for round in 0..plan.rounds {
        for i in order(round) {
            let t = paths[i];
            let r = wrk::run(&t.url("/"), 50, plan.wrk_time).await?;
            if r.errors > 0 {
                bail!("wrk saw {} errors on {}", r.errors, t.url("/"));
            }
            rps[i].push(r.rps);
            p50[i].push(r.p50_ms);
            p99[i].push(r.p99_ms);
        }
    }
    let [d_rps, t_rps, r_rps] = rps;
    let [d_p50, t_p50, r_p50] = p50;
    let [d_p99, t_p99, r_p99] = p99;

    step("fresh connection per request");
    let mut fresh: [Vec<f64>; 3] = Default::default();
    for round in 0..plan.rounds {
        let mut took: [Vec<f64>; 3] = Default::default();
        for _ in 0..plan.fresh_per_round {
            for i in order(round) {
                let t = paths[i];
                took[i].push(ms(client::fresh_get(t.addr, &t.path("/")).await?));
            }
        }
        for i in 0..3 {
            fresh[i].push(median(&took[i]).unwrap_or(f64::NAN));
        }
    }
    let [d_fresh, t_fresh, r_fresh] = fresh;

    let size = plan.bulk_bytes;
    step(&format!("bulk: {} MiB down and up", size >> 20));
    server.reset_peak()?;
    client.reset_peak()?;
    let mut down: [Vec<f64>; 3] = Default::default();
    let mut up: [Vec<f64>; 3] = Default::default();
    for round in 0..plan.rounds {
        for i in order(round) {
            let t = paths[i];
            let r: Transfer =
                client::download(t.addr, &t.path(&format!("/bytes/{size}")), None, None).await?;
            down[i].push(r.mb_per_s());
        }
        for i in order(round) {
            let t = paths[i];
            up[i].push(
                client::upload(t.addr, &t.path("/upload"), size)
                    .await?
                    .mb_per_s(),
            );
        }
    }
    let [d_down, t_down, r_down] = down;
    let [d_up, t_up, r_up] = up;
    let bulk_server_peak = server.mem()?.hwm_kib;
    let bulk_client_peak = client.mem()?.hwm_kib;

    step("slow reader: 1 GiB download read at 5 MB/s");
    server.reset_peak()?;
    client.reset_peak()?;
    let sample = async {
        let mut max = (0u64, 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let (Ok(s), Ok(c)) = (server.mem(), client.mem()) {
                max = (max.0.max(s.rss_kib), max.1.max(c.rss_kib));
            }
        }
        #[allow(unreachable_code)]
        max
    };
    let slow_path = tunnel.path(&format!("/bytes/{GIB}"));
    let slow = tokio::select! {
        r = client::download(tunnel.addr, &slow_path, Some(SLOW_RATE), plan.slow_time) => r?,
        _ = sample => unreachable!("the sampler never ends"),
    };
    let slow_server = server.mem()?;
    let slow_client = client.mem()?;
    notes.push(format!(
        "slow reader: read {} MB of a 1 GiB body at {:.1} MB/s in {:.1} s{}",
        slow.bytes / 1_000_000,
        slow.mb_per_s(),
        slow.elapsed.as_secs_f64(),
        if plan.slow_time.is_some() {
            " (bounded window; --slow-full reads it all)"
        } else {
            ""
        }
    ));
    let client_after = client.mem()?.rss_kib;
    client.terminate(Duration::from_secs(10)).await?;
    server.terminate(Duration::from_secs(30)).await?;

    step(&format!(
        "idle tunnels: {} on a fresh server",
        args.idle_tunnels
    ));
    let (server2, server2_addr) = start_server(&bins).await?;
    let fresh_rss = server2.mem()?.rss_kib;
    let mut api = Api::connect(server2_addr, API_KEY).await?;
    // Warm-up: one tunnel through its whole life, so that one-time allocations (runtime
    // threads' arenas, lazily built tables) are not counted per tunnel.
    let warm = idle::open(server2_addr, &mut api, 1, 1).await?;
    drop(warm);
    poll_until(
        "warm-up tunnel gone",
        READY,
        Duration::from_millis(5),
        || async {
            let mut a = Api::connect(server2_addr, API_KEY).await.ok()?;
            (a.connected().await.ok()? == 0).then_some(())
        },
    )
    .await?;
    let rss0 = server2.mem()?.rss_kib;
    let n = args.idle_tunnels;
    let conns = idle::open(server2_addr, &mut api, n, 32).await?;
    poll_until(
        "idle tunnels attached",
        READY,
        Duration::from_millis(20),
        || async {
            let mut a = Api::connect(server2_addr, API_KEY).await.ok()?;
            (a.connected().await.ok()? >= n).then_some(())
        },
    )
    .await?;
    let rss_n = server2.mem()?.rss_kib;
    drop(conns);
    server2.terminate(Duration::from_secs(30)).await?;
    let per_tunnel = (rss_n.saturating_sub(rss0)) as f64 / n.max(1) as f64;
    notes.push(format!(
        "idle: server RSS {fresh_rss} KiB fresh, {rss0} KiB after a warm-up tunnel, {rss_n} KiB with {n} idle tunnels"
    ));

    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let machine = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": uname.trim(),
        "load_generator": "wrk -t1 -c50 --latency",
    });
    let figures = vec![
        Figure::paired(
            "small_rps",
            format!(
                "small requests, keep-alive, 50 conns ({} s)",
                plan.wrk_time.as_secs()
            ),
            "req/s",
            Better::Higher,
            d_rps,
            t_rps,
        )
        .with_relay(r_rps),
        Figure::paired(
            "small_p50_ms",
            "small requests p50 latency",
            "ms",
            Better::Lower,
            d_p50,
            t_p50,
        )
        .with_relay(r_p50),
        Figure::paired(
            "small_p99_ms",
            "small requests p99 latency",
            "ms",
            Better::Lower,
            d_p99,
            t_p99,
        )
        .with_relay(r_p99),
        Figure::paired(
            "download_mb_s",
            format!("download {} MiB", size >> 20),
            "MB/s",
            Better::Higher,
            d_down,
            t_down,
        )
        .with_relay(r_down),
        Figure::paired(
            "upload_mb_s",
            format!("upload {} MiB", size >> 20),
            "MB/s",
            Better::Higher,
            d_up,
            t_up,
        )
        .with_relay(r_up),
        Figure::paired(
            "fresh_conn_ms",
            "fresh connection per request (median)",
            "ms",
            Better::Lower,
            d_fresh,
            t_fresh,
        )
        .with_relay(r_fresh),
        Figure::alone(
            "client_ready_ms",
            "client start → first request through it",
            "ms",
            ready_ms,
        ),
        Figure::alone(
            "idle_per_tunnel_kib",
            format!("server memory per idle tunnel ({n})"),
            "KiB",
            vec![per_tunnel],
        ),
        Figure::alone(
            "idle_rss_0_mib",
            "server RSS, 0 tunnels",
            "MiB",
            vec![mib(rss0)],
        ),
        Figure::alone(
            "idle_rss_n_mib",
            format!("server RSS, {n} idle tunnels"),
            "MiB",
            vec![mib(rss_n)],
        ),
        Figure::alone(
            "stream_peak_server_mib",
            "server peak RSS, 1 GiB read at 5 MB/s",
            "MiB",
            vec![mib(slow_server.hwm_kib)],
        ),
        Figure::alone(
            "stream_peak_client_mib",
            "client peak RSS, 1 GiB read at 5 MB/s",
            "MiB",
            vec![mib(slow_client.hwm_kib)],
        ),
        Figure::alone(
            "bulk_peak_server_mib",
            "server peak RSS during bulk transfers",
            "MiB",
            vec![mib(bulk_server_peak)],
        ),
        Figure::alone(
            "bulk_peak_client_mib",
            "client peak RSS during bulk transfers",
            "MiB",
            vec![mib(bulk_client_peak)],
        ),
        Figure::alone(
            "client_rss_after_mib",
            "client RSS after all the load",
            "MiB",
            vec![mib(client_after)],
        ),
    ];
    let mut report = Report {
        date,
        quick: args.quick,
        rounds: plan.rounds,
        machine,
        figures,
        goals: Vec::new(),
        notes,
    };
    report.goals = goals(&report);
    step("done");
    Ok(report)
}

fn goals(r: &Report) -> Vec<Goal> {
    let ratio = |k: &str| r.figure(k).and_then(|f| f.ratio);
    let value = |k: &str| r.figure(k).and_then(|f| f.tunnel);
    let goal =
        |what: &str, target: String, v: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| Goal {
            what: what.into(),
            target,
            measured: v
                .map(|v| format!("{v:.2}{unit}"))
                .unwrap_or_else(|| "-".into()),
            met: v.map(ok),
        };
    vec![
        goal(
            "small requests req/s vs direct",
            format!("≥ {GOAL_RPS}×"),
            ratio("small_rps"),
            "×",
            &|v| v >= GOAL_RPS,
        ),
        goal(
            "small requests p99 vs direct",
            format!("≤ {GOAL_P99}×"),
            ratio("small_p99_ms"),
            "×",
            &|v| v <= GOAL_P99,
        ),
        goal(
            "1 GiB download vs direct",
            format!("≥ {GOAL_BULK}×"),
            ratio("download_mb_s"),
            "×",
            &|v| v >= GOAL_BULK,
        ),
        goal(
            "1 GiB upload vs direct",
            format!("≥ {GOAL_BULK}×"),
            ratio("upload_mb_s"),
            "×",
            &|v| v >= GOAL_BULK,
        ),
        goal(
            "server peak RSS while streaming",
            format!("≤ {GOAL_STREAM_RSS_MIB} MiB"),
            value("stream_peak_server_mib"),
            " MiB",
            &|v| v <= GOAL_STREAM_RSS_MIB,
        ),
        goal(
            "client peak RSS while streaming",
            format!("≤ {GOAL_STREAM_RSS_MIB} MiB"),
            value("stream_peak_client_mib"),
            " MiB",
            &|v| v <= GOAL_STREAM_RSS_MIB,
        ),
        goal(
            "server memory per idle tunnel",
            format!("≤ {GOAL_IDLE_KIB} KiB"),
            value("idle_per_tunnel_kib"),
            " KiB",
            &|v| v <= GOAL_IDLE_KIB,
        ),
        goal(
            "client ready",
            format!("< {GOAL_READY_MS} ms"),
            value("client_ready_ms"),
            " ms",
            &|v| v < GOAL_READY_MS,
        ),
    ]
}
