//! Small requests with keep-alive: `wrk -t1 -c50` on every route of both backends, in rounds
//! whose order rotates, and for each run the CPU time and context switches that each process
//! on the route spent per request (from `/proc`, so on the shipped binaries at full load).

use std::collections::BTreeMap;

use anyhow::bail;

use super::plan::{Collected, Plan, Steps, CONNECTIONS};
use crate::paths::{BackendKind, PathKind};
use crate::procs::{usage, Usage};
use crate::report::{Better, Figure};
use crate::setup::{Backend, Role, Route, Setup};
use crate::stats::median;
use crate::wrk::{self, WrkResult};

/// CPU time and context switches of one process, per request of one run.
#[derive(Debug, Clone, Copy)]
struct PerRequest {
    cpu_us: f64,
    voluntary: f64,
    involuntary: f64,
}

/// One wrk run's result and each process's usage per request.
struct Measured {
    wrk: WrkResult,
    per_request: Vec<(&'static str, PerRequest)>,
}

fn usage_of(role: &Role) -> anyhow::Result<Usage> {
    role.pids
        .iter()
        .try_fold(Usage::default(), |acc, pid| Ok(acc.plus(&usage(*pid)?)))
}

/// The processes charged for a run on `route`: the route's own, and the backend's on the
/// direct route (on the others the backend does the same work).
fn roles<'a>(route: &'a Route, backend: &'a Backend) -> Vec<&'a Role> {
    let mut roles: Vec<&Role> = route.procs.iter().collect();
    if route.path == PathKind::Direct {
        roles.push(&backend.role);
    }
    roles
}

async fn measured_wrk(route: &Route, backend: &Backend, plan: &Plan) -> anyhow::Result<Measured> {
    let roles = roles(route, backend);
    let before = roles
        .iter()
        .map(|r| usage_of(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let url = route.url("/");
    let r = wrk::run(&url, CONNECTIONS, plan.wrk_time(backend.kind)).await?;
    if r.errors > 0 {
        bail!("wrk saw {} errors on {url}", r.errors);
    }
    let n = r.requests.max(1) as f64;
    let mut per_request = Vec::new();
    for (role, before) in roles.iter().zip(before) {
        let d = usage_of(role)?.since(&before);
        per_request.push((
            role.name,
            PerRequest {
                cpu_us: d.cpu_us / n,
                voluntary: d.voluntary as f64 / n,
                involuntary: d.involuntary as f64 / n,
            },
        ));
    }
    Ok(Measured {
        wrk: r,
        per_request,
    })
}

/// Per (backend, path): one series per figure.
#[derive(Default)]
struct Series {
    rps: BTreeMap<PathKind, Vec<f64>>,
    p50: BTreeMap<PathKind, Vec<f64>>,
    p99: BTreeMap<PathKind, Vec<f64>>,
}

/// Per (backend, path, process): per-round CPU µs and context switches per request.
type PerProcess = BTreeMap<(BackendKind, PathKind, &'static str), Vec<PerRequest>>;

/// Small requests on every route; adds the three figures per backend and the CPU and
/// context-switch columns of the per-request rows.
pub(super) async fn small_requests(
    setup: &Setup,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step("small requests: wrk -t1 -c50 (warm-up, then rounds)");
    // The per-process rows in route order (server before client), backends last.
    for b in &setup.backends {
        for r in &b.routes {
            for role in &r.procs {
                out.row(Some(r.path), role.name);
            }
        }
    }
    for b in &setup.backends {
        out.row(Some(PathKind::Direct), b.role.name);
    }
    for b in &setup.backends {
        for r in &b.routes {
            wrk::run(&r.url("/"), CONNECTIONS, plan.warm_up).await?;
        }
    }
    let mut series: BTreeMap<&'static str, Series> = BTreeMap::new();
    let mut per_process = PerProcess::new();
    for round in 0..plan.rounds {
        for b in &setup.backends {
            for route in Plan::rotated(&b.routes, round) {
                let m = measured_wrk(route, b, plan).await?;
                let s = series.entry(b.kind.as_str()).or_default();
                s.rps.entry(route.path).or_default().push(m.wrk.rps);
                s.p50.entry(route.path).or_default().push(m.wrk.p50_ms);
                s.p99.entry(route.path).or_default().push(m.wrk.p99_ms);
                for (name, u) in m.per_request {
                    per_process
                        .entry((b.kind, route.path, name))
                        .or_default()
                        .push(u);
                }
            }
        }
    }
    for b in &setup.backends {
        let Some(s) = series.get(b.kind.as_str()) else {
            continue;
        };
        let secs = plan.wrk_time(b.kind).as_secs();
        out.figures.extend([
            Figure::by_path(
                "small_rps",
                b.kind,
                format!("small req/s ({secs} s)"),
                "req/s",
                Better::Higher,
                &s.rps,
            ),
            Figure::by_path("small_p50_ms", b.kind, "p50", "ms", Better::Lower, &s.p50),
            Figure::by_path("small_p99_ms", b.kind, "p99", "ms", Better::Lower, &s.p99),
        ]);
    }
    for ((backend, path, name), rounds) in per_process {
        let cpu: Vec<f64> = rounds.iter().map(|u| u.cpu_us).collect();
        let vol: Vec<f64> = rounds.iter().map(|u| u.voluntary).collect();
        let inv: Vec<f64> = rounds.iter().map(|u| u.involuntary).collect();
        let row = out.row(Some(path), name);
        if let Some(c) = median(&cpu) {
            row.cpu_us.insert(backend.as_str(), c);
        }
        if backend == BackendKind::Nginx {
            row.voluntary_switches = median(&vol);
            row.involuntary_switches = median(&inv);
        }
    }
    Ok(())
}
