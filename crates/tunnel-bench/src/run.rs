//! The orchestration: start every process ([`crate::setup`]), then the phases, each measuring
//! every route in interleaved rounds whose order rotates, then build the report.
//!
//! - [`small`]: small requests with wrk, and CPU time and context switches per request;
//! - [`counts`]: a fixed number of requests per route under `perf stat` (syscalls, libc
//!   allocator calls) and through the `alloc-count` build (Rust allocations);
//! - [`transfers`]: fresh connections, bulk downloads and uploads;
//! - [`own`]: the tunnel's own figures (client start-up, slow reader, idle tunnels).

mod counts;
mod own;
mod plan;
mod small;
mod transfers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::machine;
use crate::report::{goals, Report};
use crate::setup::{Places, Setup};
use plan::{Collected, Plan, Steps};

/// The whole run is cut after this, whatever happens (plus the full slow read if asked for).
const WHOLE_RUN: Duration = Duration::from_secs(9 * 60);

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
    /// Directory holding `tunnel-server` and `tunnel-client` built with `--features
    /// alloc-count` (per-request allocation counts; left out without it).
    #[arg(long)]
    pub alloc_bin_dir: Option<PathBuf>,
    /// Directory holding `rathole` and `bore` (the peers are left out without it).
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// Directory for generated configurations and nginx's files (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Idle tunnels to open for the per-tunnel memory figure.
    #[arg(long, default_value_t = 1000)]
    pub idle_tunnels: usize,
    /// Read the whole 1 GiB at 5 MB/s (about 3.5 minutes) instead of a bounded window.
    #[arg(long)]
    pub slow_full: bool,
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

/// `dir` made absolute: the programs are started in another working directory.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Checks the directories given (made absolute) and fills in the defaults.
fn places(args: &RunArgs, notes: &mut Vec<String>) -> anyhow::Result<Places> {
    let bins = absolute(&bin_dir(args)?);
    for b in ["tunnel-server", "tunnel-client"] {
        if !bins.join(b).is_file() {
            bail!(
                "{} not found: build the workspace in release mode first",
                bins.join(b).display()
            );
        }
    }
    let alloc_bins = args.alloc_bin_dir.as_deref().map(absolute).filter(|d| {
        let ok = d.join("tunnel-server").is_file() && d.join("tunnel-client").is_file();
        if !ok {
            notes.push(format!(
                "Rust allocation counts left out: no alloc-count build in {}",
                d.display()
            ));
        }
        ok
    });
    if alloc_bins.is_none() && args.alloc_bin_dir.is_none() {
        notes.push("Rust allocation counts left out: no --alloc-bin-dir".into());
    }
    let peers = args.peers_dir.as_deref().map(absolute).filter(|d| {
        let ok = d.join("rathole").is_file() && d.join("bore").is_file();
        if !ok {
            notes.push(format!("rathole and bore not found in {}", d.display()));
        }
        ok
    });
    let work = absolute(&args.work_dir.clone().unwrap_or_else(temporary_work_dir));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    Ok(Places {
        bins,
        alloc_bins,
        peers,
        work,
    })
}

/// The work directory when none is given: this run's own, removed at the end.
fn temporary_work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tunnel-bench-{}", std::process::id()))
}

/// Runs the whole benchmark; bounded by [`WHOLE_RUN`].
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let slow_full = Duration::from_secs(if args.slow_full { 4 * 60 } else { 0 });
    let bound = WHOLE_RUN + slow_full;
    let temporary = args.work_dir.is_none();
    let result = tokio::time::timeout(bound, run_inner(args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish within {bound:?}"));
    if temporary {
        let dir = temporary_work_dir();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("tunnel-bench: could not remove {}: {e}", dir.display());
        }
    }
    result?
}

async fn run_inner(args: RunArgs) -> anyhow::Result<Report> {
    let plan = Plan::new(args.quick, args.rounds, args.slow_full);
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let steps = Steps(Instant::now());
    let mut out = Collected::default();
    let places = places(&args, &mut out.notes)?;
    let before = machine::before();
    if let Some(load) = machine::load_average().filter(|l| *l >= 0.5) {
        out.notes.push(format!(
            "load average {load:.1} as the run started (the minute before, builds included): \
             if other processes were running, throughput and latency figures are noisy; the \
             counts per request are not"
        ));
    }
    for (k, v) in before.removed_env() {
        out.notes.push(format!(
            "{k}={v} was set in the environment: removed for every process the run starts"
        ));
    }

    steps.step("starting nginx, the bench backend, the tunnel, rathole, bore and the relays");
    let mut setup = Setup::start(&places, &[plan.bulk_bytes]).await?;
    out.notes.append(&mut setup.notes);
    own::client_ready(&setup, &places, &plan, &mut out, &steps).await?;
    small::small_requests(&setup, &plan, &mut out, &steps).await?;
    counts::per_request_counts(&setup, &places, &plan, &mut out, &steps).await?;
    transfers::fresh_connections(&setup, &plan, &mut out, &steps).await?;
    transfers::bulk(&setup, &plan, &mut out, &steps).await?;
    own::slow_reader(&setup, &plan, &mut out, &steps).await?;
    setup.stop().await?;
    own::idle_tunnels(&places, args.idle_tunnels, &mut out, &steps).await?;

    out.notes.extend(standing_notes());
    let mut report = Report {
        date,
        quick: args.quick,
        rounds: plan.rounds,
        machine: before.describe(),
        figures: out.figures,
        per_request: out.rows,
        goals: Vec::new(),
        notes: out.notes,
    };
    report.goals = goals(&report);
    steps.step("done");
    Ok(report)
}

/// How every run is set up, for the report.
fn standing_notes() -> Vec<String> {
    vec![
        "tunnel-server as a user runs it except the public rate limit, which is off \
         (TUNNEL_PUBLIC_RATE_PER_SEC=0: it would answer wrk with 429): request log lines at \
         info as JSON, drained from a pipe, metrics listener on; tunnel-client --quiet"
            .into(),
        "rathole 0.5 (TOML services with tokens, default log level, built without TLS and \
         noise, which a plain TCP transport does not use) and bore 0.6 (with --secret, default \
         log level)"
            .into(),
        "uploads are measured against the bench backend only: nginx has no endpoint that reads \
         a body and answers its length"
            .into(),
        "CPU µs and context switches per request are taken from /proc during the wrk rounds; \
         syscalls and libc allocator calls with perf stat, and Rust allocations with the \
         alloc-count build, during a separate fixed number of requests (50 connections)"
            .into(),
    ]
}
