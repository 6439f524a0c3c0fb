//! The report as Markdown tables: per backend, the values per path with their spread and the
//! ratios to direct and to rathole; the per-request counts per process; the tunnel's own
//! figures; the goals.

use std::fmt::Write as _;

use super::model::{Figure, ProcRow, Report, Series};
use crate::paths::{BackendKind, PathKind};

fn number(v: f64, unit: &str) -> String {
    if unit == "req/s" || v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn with_unit(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit == "req/s" => number(v, unit),
        Some(v) => format!("{} {unit}", number(v, unit)),
    }
}

/// `median (min–max)`, the spread only when there was more than one round.
fn cell(s: &Series, unit: &str) -> String {
    let mut out = with_unit(s.median, unit);
    if let (true, Some(lo), Some(hi)) = (s.rounds.len() > 1, s.min, s.max) {
        let _ = write!(out, " ({}–{})", number(lo, unit), number(hi, unit));
    }
    out
}

fn times(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}×")).unwrap_or_else(|| "-".into())
}

fn header(out: &mut String, first: &str, figures: &[&Figure]) {
    let _ = write!(out, "| {first} |");
    for f in figures {
        let _ = write!(out, " {} |", f.label);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(figures.len()));
    out.push('\n');
}

fn backend_tables(out: &mut String, r: &Report, backend: BackendKind) {
    let figures: Vec<&Figure> = r
        .figures
        .iter()
        .filter(|f| f.backend == Some(backend))
        .collect();
    if figures.is_empty() {
        return;
    }
    let paths: Vec<PathKind> = PathKind::ALL
        .into_iter()
        .filter(|p| figures.iter().any(|f| f.series(*p).is_some()))
        .collect();
    let _ = writeln!(out, "### {}\n", backend.label());
    header(out, "path", &figures);
    for p in &paths {
        let _ = write!(out, "| {} |", p.label());
        for f in &figures {
            let c = f.series(*p).map(|s| cell(s, f.unit));
            let _ = write!(out, " {} |", c.unwrap_or_else(|| "-".into()));
        }
        out.push('\n');
    }
    out.push('\n');
    header(out, "vs direct / vs rathole", &figures);
    for p in paths.iter().filter(|p| **p != PathKind::Direct) {
        let _ = write!(out, "| {} |", p.label());
        for f in &figures {
            let c = f
                .series(*p)
                .map(|s| format!("{} / {}", times(s.vs_direct), times(s.vs_rathole)));
            let _ = write!(out, " {} |", c.unwrap_or_else(|| "-".into()));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn opt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn per_request_table(out: &mut String, rows: &[ProcRow]) {
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "### Per request, per process\n\n\
         | path | process | CPU µs (nginx) | CPU µs (bench) | context switches (vol + invol) \
         | syscalls | libc malloc calls | Rust allocs | bytes allocated | peak RSS, bulk |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let switches = match (row.voluntary_switches, row.involuntary_switches) {
            (Some(v), Some(n)) => format!("{v:.2} + {n:.2}"),
            _ => "-".into(),
        };
        let allocs = match (row.allocs, row.reallocs) {
            (Some(a), Some(re)) if re >= 0.05 => format!("{a:.1} (+{re:.1} realloc)"),
            (a, _) => opt(a),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {switches} | {} | {} | {allocs} | {} | {} |",
            row.path.map(PathKind::label).unwrap_or("-"),
            row.process,
            opt(row.cpu_us.get(BackendKind::Nginx.as_str()).copied()),
            opt(row.cpu_us.get(BackendKind::Bench.as_str()).copied()),
            opt(row.syscalls),
            opt(row.libc_allocs),
            opt(row.alloc_bytes),
            row.bulk_peak_mib
                .map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    out.push('\n');
}

/// Renders the whole report.
pub(super) fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each value: median of {} round(s){}; ratios: median of the per-round ratios.\n",
        r.rounds,
        if r.rounds > 1 {
            " (min–max over the rounds)"
        } else {
            ""
        }
    );
    for b in [BackendKind::Nginx, BackendKind::Bench] {
        backend_tables(&mut out, r, b);
    }
    per_request_table(&mut out, &r.per_request);
    out.push_str("### The tunnel's own figures\n\n| figure | tunnel |\n|---|---|\n");
    for f in r.figures.iter().filter(|f| f.backend.is_none()) {
        let c = f.series(PathKind::Tunnel).map(|s| cell(s, f.unit));
        let _ = writeln!(out, "| {} | {} |", f.label, c.unwrap_or_default());
    }
    out.push_str("\n| goal | target | measured | met |\n|---|---|---|---|\n");
    for g in &r.goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "?",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            g.what, g.target, g.measured
        );
    }
    out
}
