//! Per-request counts that do not depend on how busy the machine is: a fixed number of small
//! requests through each route of the nginx backend (50 keep-alive connections, like wrk),
//! - under `perf stat` on each process of the route: syscalls and libc allocator calls;
//! - through a second tunnel whose server and client are the `alloc-count` build: Rust
//!   allocations, reallocations and bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tunnel_alloc_count::{Counts, FILE_ENV};

use super::plan::{Collected, Plan, Steps, CONNECTIONS};
use crate::load;
use crate::paths::{BackendKind, PathKind};
use crate::perf::{self, AllocProbes, SYSCALLS};
use crate::procs::poll_until;
use crate::setup::{self, Places, Role, ServerKind, Setup};

/// Requests before the counted ones, on a freshly started tunnel (buffers grown, tables
/// built, connections open).
const WARM_UP: u64 = 2_000;

/// Both kinds of counts, as far as this machine allows.
pub(super) async fn per_request_counts(
    setup: &Setup,
    places: &Places,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step(&format!(
        "per-request counts: {} requests per route under perf stat",
        plan.count_requests
    ));
    match perf::can_count_syscalls().await {
        Ok(()) => perf_counts(setup, places, plan, out).await?,
        Err(why) => out.notes.push(format!(
            "syscalls and libc allocator calls not counted: {why}"
        )),
    }
    if let Some(bins) = &places.alloc_bins {
        steps.step("per-request counts: Rust allocations (alloc-count build)");
        alloc_counts(setup, bins, &places.work, plan, out).await?;
    }
    Ok(())
}

async fn perf_counts(
    setup: &Setup,
    places: &Places,
    plan: &Plan,
    out: &mut Collected,
) -> anyhow::Result<()> {
    let probes = match AllocProbes::add(setup.server.pid).await {
        Ok(p) => Some(p),
        Err(e) => {
            out.notes
                .push(format!("libc allocator calls not counted: {e:#}"));
            None
        }
    };
    let mut events = vec![SYSCALLS.to_string()];
    if let Some(p) = &probes {
        events.extend(p.events.iter().cloned());
    }
    let nginx = setup.backend(BackendKind::Nginx)?;
    for route in &nginx.routes {
        let mut roles: Vec<&Role> = route.procs.iter().collect();
        if route.path == PathKind::Direct {
            roles.push(&nginx.role);
        }
        let mut counters = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            let file = places
                .work
                .join(format!("perf-{}-{i}.csv", route.path.as_str()));
            counters.push(perf::start(&role.pids, &events, &file).await?);
        }
        let done = load::run(
            route.addr,
            &route.path("/"),
            plan.count_requests,
            CONNECTIONS as usize,
        )
        .await?;
        let n = done.requests.max(1) as f64;
        for (role, counter) in roles.iter().zip(counters) {
            let totals = counter.stop().await?;
            let row = out.row(Some(route.path), role.name);
            row.syscalls = totals.get(SYSCALLS).map(|&c| c as f64 / n);
            if let Some(p) = &probes {
                let calls: u64 = p.events.iter().filter_map(|e| totals.get(e)).sum();
                row.libc_allocs = Some(calls as f64 / n);
            }
        }
    }
    Ok(())
}

/// Reads the reporter's file once it has stopped changing (the process is idle): the counts
/// of every request sent so far, and none of a request still in flight.
async fn settled(path: &Path) -> anyhow::Result<Counts> {
    let mut last: Option<Counts> = None;
    let mut since = Instant::now();
    poll_until(
        "allocation counts",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let now = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| Counts::parse(&t));
            if now != last {
                last = now;
                since = Instant::now();
            }
            // Unchanged for three of the reporter's periods.
            let r = last.filter(|_| since.elapsed() >= Duration::from_millis(30));
            async move { r }
        },
    )
    .await
    .with_context(|| format!("read {}", path.display()))
}

async fn alloc_counts(
    setup: &Setup,
    bins: &Path,
    work: &Path,
    plan: &Plan,
    out: &mut Collected,
) -> anyhow::Result<()> {
    let server_file = work.join("alloc-count-server.txt");
    let client_file = work.join("alloc-count-client.txt");
    let sf = server_file.to_string_lossy().into_owned();
    let cf = client_file.to_string_lossy().into_owned();
    let nginx = setup.backend(BackendKind::Nginx)?;
    let direct = nginx
        .route(PathKind::Direct)
        .context("no direct route to nginx")?;
    let (server, addr) = setup::start_server(bins, ServerKind::Bench, &[(FILE_ENV, &sf)]).await?;
    let client = setup::spawn_client(bins, addr, direct.addr, "alloc", &[(FILE_ENV, &cf)])?;
    setup::wait_tunnel(addr, "alloc", Instant::now()).await?;
    let conns = CONNECTIONS as usize;
    load::run(addr, "/alloc/", WARM_UP, conns).await?;
    let (s0, c0) = (settled(&server_file).await?, settled(&client_file).await?);
    let done = load::run(addr, "/alloc/", plan.count_requests, conns).await?;
    let (s1, c1) = (settled(&server_file).await?, settled(&client_file).await?);
    client.terminate(Duration::from_secs(10)).await?;
    server.terminate(Duration::from_secs(30)).await?;
    let n = done.requests.max(1) as f64;
    for (name, d) in [
        ("tunnel-server", s1.since(&s0)),
        ("tunnel-client", c1.since(&c0)),
    ] {
        let row = out.row(Some(PathKind::Tunnel), name);
        row.allocs = Some(d.allocs as f64 / n);
        row.reallocs = Some(d.reallocs as f64 / n);
        row.alloc_bytes = Some(d.bytes as f64 / n);
    }
    Ok(())
}
