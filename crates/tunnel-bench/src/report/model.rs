//! The figures of a run: per path with their spread over rounds, per-request counts per
//! process, and the whole report as it goes to the JSON file.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::paths::{BackendKind, PathKind};
use crate::stats::{median, min_max};

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput.
    Higher,
    /// Latency, memory, time.
    Lower,
}

/// One path's values of a figure.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Which path.
    pub path: PathKind,
    /// One value per round (round `i` of every path was measured in the same round).
    pub rounds: Vec<f64>,
    /// Median of `rounds`.
    pub median: Option<f64>,
    /// Smallest of `rounds`: with `max`, how much the figure varies.
    pub min: Option<f64>,
    /// Largest of `rounds`.
    pub max: Option<f64>,
    /// Median of the per-round ratios to the direct path.
    pub vs_direct: Option<f64>,
    /// Median of the per-round ratios to rathole.
    pub vs_rathole: Option<f64>,
}

/// One measured figure, for every path that has it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable key in the JSON file (with `backend`).
    pub key: &'static str,
    /// The backend it was measured against (`None` for the tunnel's own figures).
    pub backend: Option<BackendKind>,
    /// Label in the table.
    pub label: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// One series per path, in [`PathKind::ALL`] order.
    pub series: Vec<Series>,
}

/// Median of the per-round ratios `num / den`.
fn ratio_of(num: &[f64], den: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = den
        .iter()
        .zip(num)
        .filter(|(d, _)| **d > 0.0)
        .map(|(d, n)| n / d)
        .collect();
    median(&ratios)
}

impl Figure {
    /// A figure measured on several paths in the same rounds.
    pub fn by_path(
        key: &'static str,
        backend: BackendKind,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
        rounds: &BTreeMap<PathKind, Vec<f64>>,
    ) -> Self {
        let direct = rounds.get(&PathKind::Direct);
        let rathole = rounds.get(&PathKind::Rathole);
        let series = PathKind::ALL
            .iter()
            .filter_map(|p| {
                let r = rounds.get(p)?;
                let (min, max) = min_max(r).unzip();
                Some(Series {
                    path: *p,
                    median: median(r),
                    min,
                    max,
                    vs_direct: direct.and_then(|d| ratio_of(r, d)),
                    vs_rathole: rathole.and_then(|d| ratio_of(r, d)),
                    rounds: r.clone(),
                })
            })
            .collect();
        Self {
            key,
            backend: Some(backend),
            label: label.into(),
            unit,
            better,
            series,
        }
    }

    /// A figure of the tunnel alone (memory, start-up time).
    pub fn alone(
        key: &'static str,
        label: impl Into<String>,
        unit: &'static str,
        rounds: Vec<f64>,
    ) -> Self {
        let (min, max) = min_max(&rounds).unzip();
        Self {
            key,
            backend: None,
            label: label.into(),
            unit,
            better: Better::Lower,
            series: vec![Series {
                path: PathKind::Tunnel,
                median: median(&rounds),
                min,
                max,
                vs_direct: None,
                vs_rathole: None,
                rounds,
            }],
        }
    }

    /// The series of `path`, if measured.
    pub fn series(&self, path: PathKind) -> Option<&Series> {
        self.series.iter().find(|s| s.path == path)
    }
}

/// Per-request counts of one process on one route, and its memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcRow {
    /// The path whose route the process is on.
    pub path: Option<PathKind>,
    /// The process, e.g. `tunnel-server`.
    pub process: String,
    /// CPU time per request (user + system), µs, median over the wrk rounds, per backend.
    pub cpu_us: BTreeMap<&'static str, f64>,
    /// Voluntary context switches per request (wrk rounds, nginx backend).
    pub voluntary_switches: Option<f64>,
    /// Involuntary context switches per request (wrk rounds, nginx backend).
    pub involuntary_switches: Option<f64>,
    /// System calls per request (`perf stat`, fixed-count phase, nginx backend).
    pub syscalls: Option<f64>,
    /// Calls into libc's allocator per request (uprobes, fixed-count phase, nginx backend).
    pub libc_allocs: Option<f64>,
    /// Rust allocations per request (the `alloc-count` build, fixed-count phase, nginx backend).
    pub allocs: Option<f64>,
    /// Reallocations per request (same build).
    pub reallocs: Option<f64>,
    /// Bytes allocated per request (same build).
    pub alloc_bytes: Option<f64>,
    /// Peak RSS during the bulk transfers, MiB.
    pub bulk_peak_mib: Option<f64>,
}

/// One goal and whether this run meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is compared, e.g. `small requests req/s vs rathole (nginx backend)`.
    pub what: String,
    /// The target, e.g. `≥ 1×`.
    pub target: String,
    /// The measured value, formatted.
    pub measured: String,
    /// Whether it is met (`None` when the figure is missing).
    pub met: Option<bool>,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// `--quick` mode (shorter runs, smaller transfers, one round).
    pub quick: bool,
    /// Rounds per paired figure.
    pub rounds: usize,
    /// Cores, kernel, load generator, versions.
    pub machine: serde_json::Value,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Per-request counts per process.
    pub per_request: Vec<ProcRow>,
    /// The goals.
    pub goals: Vec<Goal>,
    /// Notes on how figures were taken.
    pub notes: Vec<String>,
}

impl Report {
    /// The figure with `key` against `backend` (`None`: the tunnel's own figures).
    pub fn figure(&self, key: &str, backend: Option<BackendKind>) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|f| f.key == key && f.backend == backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_medians_of_round_ratios() {
        let rounds = BTreeMap::from([
            (PathKind::Direct, vec![100.0, 200.0, 100.0]),
            (PathKind::Tunnel, vec![50.0, 150.0, 60.0]),
            (PathKind::Rathole, vec![25.0, 100.0, 40.0]),
        ]);
        let f = Figure::by_path(
            "k",
            BackendKind::Nginx,
            "l",
            "MB/s",
            Better::Higher,
            &rounds,
        );
        let t = f.series(PathKind::Tunnel).expect("tunnel");
        assert_eq!(t.median, Some(60.0));
        assert_eq!((t.min, t.max), (Some(50.0), Some(150.0)));
        assert_eq!(t.vs_direct, Some(0.6));
        assert_eq!(t.vs_rathole, Some(1.5));
        assert!(f.series(PathKind::Bore).is_none());
        let r = f.series(PathKind::Rathole).expect("rathole");
        assert_eq!(r.vs_rathole, Some(1.0));
        assert_eq!(f.series.len(), 3);
    }
}
