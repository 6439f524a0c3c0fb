//! `tunnel-bench inspect`: what the client's traffic inspector costs (issue 16). One server,
//! one backend, two tunnels: one client with the inspector off (`--no-inspect`), one with it
//! on (capturing every request, the default). Small requests per second through each with
//! wrk, in interleaved rounds whose order alternates, and each client's CPU time and context
//! switches per request from `/proc` (counts that noise from other processes on the machine
//! disturbs far less than a rate). The ratio on/off is taken per round, between two runs a
//! few seconds apart, and reported with its spread and the machine's load average: on a
//! shared machine the spread says whether a difference is real.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};

use crate::machine::load_average;
use crate::procs::Proc;
use crate::setup::{spawn_client, start_backend, start_server, wait_tunnel, ServerKind};
use crate::stats::{median, min_max};
use crate::wrk;

/// Options of `tunnel-bench inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Interleaved rounds (each measures both clients).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Directory holding the release `tunnel-server` and `tunnel-client` (default: this
    /// program's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One client's figures over the rounds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Side {
    /// Requests per second, per round.
    pub rps: Vec<f64>,
    /// The client's CPU microseconds per request, per round.
    pub cpu_us: Vec<f64>,
    /// The client's voluntary context switches (a thread waited: for input, or on a futex)
    /// per request, all threads, per round.
    pub voluntary: Vec<f64>,
    /// Its involuntary ones (preempted, e.g. by another process) per request, per round.
    pub involuntary: Vec<f64>,
}

/// Both clients' figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InspectReport {
    /// Inspector off.
    pub off: Side,
    /// Inspector on.
    pub on: Side,
    /// Requests/s on as a ratio of off, per round (the two runs of one round).
    pub ratio: Vec<f64>,
    /// The machine's 1-minute load average before the first round and after the last.
    pub load: (Option<f64>, Option<f64>),
    /// Each client's resident set size after the last round, in KiB: off, then on (whose
    /// capture store is full by then: its budget, 50 MiB by default, is what it may add).
    pub rss_kib: (u64, u64),
}

impl InspectReport {
    /// The table: medians, and on as a ratio of off.
    pub fn table(&self) -> String {
        let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
        let (off_rps, on_rps) = (m(&self.off.rps), m(&self.on.rps));
        let (off_cpu, on_cpu) = (m(&self.off.cpu_us), m(&self.on.cpu_us));
        let cs = |s: &Side| format!("{:.3} + {:.3}", m(&s.voluntary), m(&s.involuntary));
        let (off_cs, on_cs) = (cs(&self.off), cs(&self.on));
        let (lo, hi) = min_max(&self.ratio).unwrap_or((f64::NAN, f64::NAN));
        let list = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{x:.digits$}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.1}"));
        format!(
            "| small requests | inspector off | inspector on | on / off |\n\
             |---|---:|---:|---:|\n\
             | req/s (median) | {off_rps:.0} | {on_rps:.0} | {:.3} ({lo:.3}-{hi:.3}) |\n\
             | client CPU us per request (median) | {off_cpu:.1} | {on_cpu:.1} | {:.3} |\n\
             | client context switches per request, vol + invol (median) | {off_cs} | {on_cs} | |\n\n\
             on/off per round (median, then min-max above): [{}]\n\
             rounds, req/s: off [{}], on [{}]\n\
             load average: {} before, {} after\n\
             client RSS after the last round: off {} MiB, on {} MiB",
            m(&self.ratio),
            on_cpu / off_cpu,
            list(&self.ratio, 3),
            list(&self.off.rps, 0),
            list(&self.on.rps, 0),
            load(self.load.0),
            load(self.load.1),
            self.rss_kib.0 / 1024,
            self.rss_kib.1 / 1024,
        )
    }
}

fn bin_dir(args: &InspectArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    }
    let exe = std::env::current_exe().context("where is this program?")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))
}

/// One wrk run through `name`'s tunnel into `side`: req/s, and the client's CPU µs and
/// context switches per request during it.
async fn measure(
    server: std::net::SocketAddr,
    name: &str,
    client: &Proc,
    args: &InspectArgs,
    side: &mut Side,
) -> anyhow::Result<()> {
    let url = format!("http://{server}/{name}/");
    let before = client.usage()?;
    let r = wrk::run(&url, args.connections, Duration::from_secs(args.secs)).await?;
    let used = client.usage()?.since(&before);
    anyhow::ensure!(r.errors == 0, "{name}: {} errors", r.errors);
    let requests = (r.rps * args.secs as f64).max(1.0);
    side.rps.push(r.rps);
    side.cpu_us.push(used.cpu_us / requests);
    side.voluntary.push(used.voluntary as f64 / requests);
    side.involuntary.push(used.involuntary as f64 / requests);
    Ok(())
}

/// Runs the comparison.
pub async fn run(args: InspectArgs) -> anyhow::Result<InspectReport> {
    let bins = bin_dir(&args)?;
    let (backend, backend_addr) = start_backend().await?;
    let (server, addr) = start_server(&bins, ServerKind::Bench, &[]).await?;
    let off = spawn_client(
        &bins,
        addr,
        backend_addr,
        "inspect-off",
        &[("TUNNEL_NO_INSPECT", "true")],
    )?;
    let on = spawn_client(
        &bins,
        addr,
        backend_addr,
        "inspect-on",
        &[("TUNNEL_INSPECT_ADDR", "127.0.0.1:0")],
    )?;
    let since = Instant::now();
    wait_tunnel(addr, "inspect-off", since).await?;
    wait_tunnel(addr, "inspect-on", since).await?;
    // Warm-up: connections pooled on both paths. The inspector's 50 MiB budget fills within
    // the first rounds (about 1 KiB per small request), and from then on each capture also
    // evicts the oldest entry: the steady state of a long session.
    for name in ["inspect-off", "inspect-on"] {
        wrk::run(
            &format!("http://{addr}/{name}/"),
            args.connections,
            Duration::from_secs(1),
        )
        .await?;
    }
    let mut report = InspectReport {
        load: (load_average(), None),
        ..InspectReport::default()
    };
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for inspecting in order {
            let (name, proc, side) = if inspecting {
                ("inspect-on", &on, &mut report.on)
            } else {
                ("inspect-off", &off, &mut report.off)
            };
            measure(addr, name, proc, &args, side).await?;
        }
        if let (Some(on), Some(off)) = (report.on.rps.last(), report.off.rps.last()) {
            report.ratio.push(on / off);
        }
    }
    report.load.1 = load_average();
    report.rss_kib = (off.mem()?.rss_kib, on.mem()?.rss_kib);
    for p in [on, off, server, backend] {
        p.terminate(Duration::from_secs(10)).await?;
    }
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(report)
}
