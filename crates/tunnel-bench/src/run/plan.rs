//! What a run measures (sizes, durations, rounds) and what its phases have collected so far.

use std::time::{Duration, Instant};

use crate::paths::{BackendKind, PathKind};
use crate::report::{Figure, ProcRow};

/// One GiB.
pub(super) const GIB: u64 = 1 << 30;
/// Keep-alive connections of every wrk run and fixed-count load (issue 14's `wrk -t1 -c50`).
pub(super) const CONNECTIONS: u32 = 50;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) rounds: usize,
    /// wrk duration against nginx (the headline figures).
    pub(super) wrk_nginx: Duration,
    /// wrk duration against the bench backend: 5 s as in the runs before issue 14, so that
    /// those figures stay comparable, and the full run stays within about five minutes.
    pub(super) wrk_bench: Duration,
    pub(super) warm_up: Duration,
    pub(super) bulk_bytes: u64,
    pub(super) fresh_per_round: usize,
    pub(super) slow_time: Option<Duration>,
    pub(super) startup_rounds: usize,
    /// Requests per route in the fixed-count phase.
    pub(super) count_requests: u64,
}

impl Plan {
    pub(super) fn new(quick: bool, rounds: Option<usize>, slow_full: bool) -> Self {
        let secs = |quick_s, full_s| Duration::from_secs(if quick { quick_s } else { full_s });
        Self {
            rounds: rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            wrk_nginx: secs(2, 8),
            wrk_bench: secs(2, 5),
            warm_up: Duration::from_secs(1),
            bulk_bytes: if quick { GIB / 4 } else { GIB },
            fresh_per_round: if quick { 50 } else { 100 },
            slow_time: (!slow_full).then(|| secs(5, 20)),
            startup_rounds: if quick { 3 } else { 5 },
            count_requests: if quick { 5_000 } else { 20_000 },
        }
    }

    pub(super) fn wrk_time(&self, backend: BackendKind) -> Duration {
        match backend {
            BackendKind::Nginx => self.wrk_nginx,
            BackendKind::Bench => self.wrk_bench,
        }
    }

    /// Rotates `items` by `round`, so that no path always runs first (or right after
    /// another) and drifts of the machine spread over all of them.
    pub(super) fn rotated<T>(items: &[T], round: usize) -> impl Iterator<Item = &T> {
        let n = items.len().max(1);
        (0..items.len()).map(move |i| &items[(i + round) % n])
    }
}

/// What the phases measured so far.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub(super) figures: Vec<Figure>,
    pub(super) rows: Vec<ProcRow>,
    pub(super) notes: Vec<String>,
}

impl Collected {
    /// The per-request row of `process` on `path`, created on first use.
    pub(super) fn row(&mut self, path: Option<PathKind>, process: &str) -> &mut ProcRow {
        let i = match self
            .rows
            .iter()
            .position(|r| r.path == path && r.process == process)
        {
            Some(i) => i,
            None => {
                self.rows.push(ProcRow {
                    path,
                    process: process.to_string(),
                    ..ProcRow::default()
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }
}

/// Prints a progress line with the time since the start.
pub(super) struct Steps(pub(super) Instant);

impl Steps {
    pub(super) fn step(&self, what: &str) {
        eprintln!("[{:>5.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}
