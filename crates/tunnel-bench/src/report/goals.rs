//! The goals of issue 14 (and the memory and start-up goals kept from issue 5), checked
//! against a run's figures.

use super::model::{Goal, Report, Series};
use crate::paths::{BackendKind, PathKind};

/// What a goal compares.
#[derive(Debug, Clone, Copy)]
enum Measure {
    /// The tunnel's median of the per-round ratios to rathole, figure `key` on a backend.
    VsRathole(&'static str, BackendKind),
    /// The same, to direct.
    VsDirect(&'static str, BackendKind),
    /// The median of one of the tunnel's own figures.
    Own(&'static str),
}

/// Which side of the limit meets the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    AtLeast,
    AtMost,
    Below,
}

/// One goal: what, how it is measured, the limit.
struct Spec {
    what: &'static str,
    measure: Measure,
    side: Side,
    limit: f64,
    unit: &'static str,
    /// Said after the target, e.g. the stretch goal.
    remark: &'static str,
}

const fn spec(what: &'static str, measure: Measure, side: Side, limit: f64) -> Spec {
    let unit = match measure {
        Measure::VsRathole(..) | Measure::VsDirect(..) => "×",
        Measure::Own(_) => "",
    };
    Spec {
        what,
        measure,
        side,
        limit,
        unit,
        remark: "",
    }
}

const fn in_unit(mut s: Spec, unit: &'static str) -> Spec {
    s.unit = unit;
    s
}

const N: BackendKind = BackendKind::Nginx;
const B: BackendKind = BackendKind::Bench;

/// Issue 14: small requests at least rathole's req/s (stretch 1.25×) with a p99 no worse;
/// bulk at least 1.5× rathole and half of direct; fresh connections no slower than rathole;
/// issue 5's memory and start-up goals kept.
const GOALS: [Spec; 11] = [
    Spec {
        remark: " (stretch 1.25×)",
        ..spec(
            "small requests req/s vs rathole (nginx)",
            Measure::VsRathole("small_rps", N),
            Side::AtLeast,
            1.0,
        )
    },
    spec(
        "small requests p99 vs rathole (nginx)",
        Measure::VsRathole("small_p99_ms", N),
        Side::AtMost,
        1.0,
    ),
    spec(
        "download vs rathole (nginx)",
        Measure::VsRathole("download_mb_s", N),
        Side::AtLeast,
        1.5,
    ),
    spec(
        "download vs direct (nginx)",
        Measure::VsDirect("download_mb_s", N),
        Side::AtLeast,
        0.5,
    ),
    spec(
        "upload vs rathole (bench backend)",
        Measure::VsRathole("upload_mb_s", B),
        Side::AtLeast,
        1.5,
    ),
    spec(
        "upload vs direct (bench backend)",
        Measure::VsDirect("upload_mb_s", B),
        Side::AtLeast,
        0.5,
    ),
    spec(
        "fresh connection per request vs rathole (nginx)",
        Measure::VsRathole("fresh_conn_ms", N),
        Side::AtMost,
        1.0,
    ),
    in_unit(
        spec(
            "server peak RSS while streaming 1 GiB",
            Measure::Own("stream_peak_server_mib"),
            Side::AtMost,
            16.0,
        ),
        " MiB",
    ),
    in_unit(
        spec(
            "client peak RSS while streaming 1 GiB",
            Measure::Own("stream_peak_client_mib"),
            Side::AtMost,
            16.0,
        ),
        " MiB",
    ),
    in_unit(
        spec(
            "server memory per idle tunnel",
            Measure::Own("idle_per_tunnel_kib"),
            Side::AtMost,
            32.0,
        ),
        " KiB",
    ),
    in_unit(
        spec(
            "client ready",
            Measure::Own("client_ready_ms"),
            Side::Below,
            50.0,
        ),
        " ms",
    ),
];

fn measured(r: &Report, m: Measure) -> Option<f64> {
    let tunnel = |key: &str, b: Option<BackendKind>| -> Option<&Series> {
        r.figure(key, b)?.series(PathKind::Tunnel)
    };
    match m {
        Measure::VsRathole(key, b) => tunnel(key, Some(b))?.vs_rathole,
        Measure::VsDirect(key, b) => tunnel(key, Some(b))?.vs_direct,
        Measure::Own(key) => tunnel(key, None)?.median,
    }
}

/// Checks every goal against `r`.
pub(crate) fn goals(r: &Report) -> Vec<Goal> {
    GOALS
        .iter()
        .map(|g| {
            let v = measured(r, g.measure);
            let (sign, met): (&str, fn(f64, f64) -> bool) = match g.side {
                Side::AtLeast => ("≥", |v, l| v >= l),
                Side::AtMost => ("≤", |v, l| v <= l),
                Side::Below => ("<", |v, l| v < l),
            };
            Goal {
                what: g.what.into(),
                target: format!("{sign} {}{}{}", g.limit, g.unit, g.remark),
                measured: v
                    .map(|v| format!("{v:.2}{}", g.unit))
                    .unwrap_or_else(|| "-".into()),
                met: v.map(|v| met(v, g.limit)),
            }
        })
        .collect()
}
