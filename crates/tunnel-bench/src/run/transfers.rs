//! A fresh connection per request, and bulk transfers: downloads from both backends, uploads
//! to the bench backend (nginx has no endpoint that reads a body and answers its length).

use std::collections::BTreeMap;

use super::plan::{Collected, Plan, Steps};
use crate::client;
use crate::paths::{BackendKind, PathKind};
use crate::report::{Better, Figure};
use crate::setup::{Route, Setup};
use crate::stats::median;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `fresh_per_round` requests on new connections per route and round, the routes taking
/// turns request by request; the figure is the median of each round.
pub(super) async fn fresh_connections(
    setup: &Setup,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step("fresh connection per request");
    for b in &setup.backends {
        let mut rounds: BTreeMap<PathKind, Vec<f64>> = BTreeMap::new();
        for round in 0..plan.rounds {
            let mut took: BTreeMap<PathKind, Vec<f64>> = BTreeMap::new();
            for _ in 0..plan.fresh_per_round {
                for r in Plan::rotated(&b.routes, round) {
                    let t = client::fresh_get(r.addr, &r.path("/")).await?;
                    took.entry(r.path).or_default().push(ms(t));
                }
            }
            for (path, t) in took {
                rounds
                    .entry(path)
                    .or_default()
                    .push(median(&t).unwrap_or(f64::NAN));
            }
        }
        out.figures.push(Figure::by_path(
            "fresh_conn_ms",
            b.kind,
            "fresh connection",
            "ms",
            Better::Lower,
            &rounds,
        ));
    }
    Ok(())
}

/// One transfer of `size` bytes through `route`, in MB/s.
async fn transfer(route: &Route, upload: bool, size: u64) -> anyhow::Result<f64> {
    let t = if upload {
        client::upload(route.addr, &route.path("/upload"), size).await?
    } else {
        client::download(
            route.addr,
            &route.path(&format!("/bytes/{size}")),
            None,
            None,
        )
        .await?
    };
    Ok(t.mb_per_s())
}

/// Downloads from both backends and uploads to the bench backend, every route in turn; the
/// tunnel's and the peers' peak RSS over the whole phase go to the per-process rows.
pub(super) async fn bulk(
    setup: &Setup,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    let size = plan.bulk_bytes;
    steps.step(&format!("bulk: {} MiB down and up", size >> 20));
    let measured: Vec<_> = setup
        .backends
        .iter()
        .flat_map(|b| b.routes.iter().map(move |r| (r.path, r.procs.iter())))
        .flat_map(|(path, roles)| roles.map(move |role| (path, role)))
        .collect();
    for (_, role) in &measured {
        for pid in &role.pids {
            crate::procs::reset_peak(*pid)?;
        }
    }
    let kinds = [
        (BackendKind::Nginx, false),
        (BackendKind::Bench, false),
        (BackendKind::Bench, true),
    ];
    let mut rounds: Vec<BTreeMap<PathKind, Vec<f64>>> = vec![BTreeMap::new(); kinds.len()];
    for round in 0..plan.rounds {
        for (k, (backend, upload)) in kinds.iter().enumerate() {
            let b = setup.backend(*backend)?;
            for r in Plan::rotated(&b.routes, round) {
                let mb_s = transfer(r, *upload, size).await?;
                rounds[k].entry(r.path).or_default().push(mb_s);
            }
        }
    }
    for ((backend, upload), rounds) in kinds.iter().zip(&rounds) {
        let (key, what) = if *upload {
            ("upload_mb_s", "upload")
        } else {
            ("download_mb_s", "download")
        };
        let label = format!("{what} {} MiB", size >> 20);
        out.figures.push(Figure::by_path(
            key,
            *backend,
            label,
            "MB/s",
            Better::Higher,
            rounds,
        ));
    }
    for (path, role) in measured {
        let mut peak_kib = 0;
        for pid in &role.pids {
            peak_kib += crate::procs::mem(*pid)?.hwm_kib;
        }
        let row = out.row(Some(path), role.name);
        let mib = peak_kib as f64 / 1024.0;
        row.bulk_peak_mib = Some(row.bulk_peak_mib.map_or(mib, |m: f64| m.max(mib)));
    }
    // Also as the tunnel's own figures, under the keys of earlier runs.
    for (key, process) in [
        ("bulk_peak_server_mib", "tunnel-server"),
        ("bulk_peak_client_mib", "tunnel-client"),
    ] {
        let peak = out.row(Some(PathKind::Tunnel), process).bulk_peak_mib;
        out.figures.push(Figure::alone(
            key,
            format!("{process} peak RSS during the bulk transfers"),
            "MiB",
            peak.into_iter().collect(),
        ));
    }
    Ok(())
}
