//! The benchmark of issue 5: the tunnel against the same backend reached directly.
//!
//! Everything runs on one machine, on loopback and ephemeral ports, bounded in time. Every
//! figure is taken for both paths in the same run, interleaved, and reported as a ratio, so
//! that the load generator, the backend and the tunnel sharing the same cores cancels out.
//!
//! # Layout
//! - [`backend`]: the local HTTP service (small response, large streamed body, uploads).
//! - [`client`]: the load client: bulk transfers, fresh connections, a rate-limited reader.
//! - [`wrk`]: runs `wrk` and parses its report.
//! - [`procs`]: child processes, readiness by polling with a deadline, RSS from `/proc`.
//! - [`idle`]: many idle tunnels, each a real WebSocket that speaks the protocol.
//! - [`relay`]: a raw TCP relay; two in a chain are the floor of any two-process tunnel.
//! - [`run`]: the orchestration, and [`report`] the table and the JSON file.

pub mod backend;
pub mod client;
pub mod idle;
pub mod procs;
pub mod relay;
pub mod report;
pub mod run;
pub mod wrk;

/// Median of `values` (the mean of the two middle ones for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
