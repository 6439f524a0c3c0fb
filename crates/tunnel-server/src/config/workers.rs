//! How many threads run the server's tasks (`TUNNEL_WORKERS`).
//!
//! One by default. A tunnel's traffic all goes through one multiplexed connection, whose
//! reader and writer tasks every public connection of the tunnel hands its frames to and
//! gets its answers from: a few task wake-ups per request. On one thread those are pushes
//! onto a local run queue; spread over several, most of them are a wake-up of another thread
//! (a futex call and a context switch each), and idle threads spin looking for work to steal.
//! Measured on a 2-vCPU host (wrk `-c50` through one tunnel to nginx, the client and the
//! backend on the same host): one thread took the server from 17.9 to 12.5 µs of CPU per
//! request and from 37k to 42k requests/s (in three interleaved pairs with a build running
//! alongside, 16.2 to 13.3 µs and 12–20% more requests/s); with four tunnels under load at
//! once it still used 17% less CPU per request and served 2.5% more; a 1 GiB download ran at
//! the same speed.
//!
//! One thread carries about 80,000 small requests/s or a gigabyte a second of this server's
//! work, which TLS (terminated by the ingress) does not share. A pod that has more cores to
//! give it, and many busy tunnels to use them, sets `TUNNEL_WORKERS=auto` (one per core the
//! process may use, or `TOKIO_WORKER_THREADS`) or a count; the cluster mode spreads tunnels
//! over pods instead.

use std::fmt;
use std::num::NonZeroUsize;

/// The most threads a count may ask for: beyond any core count this server runs on, and a
/// bound on what a typo can make it start.
pub const MAX_WORKERS: usize = 1024;

/// `TUNNEL_WORKERS`: a count of threads, or one per available core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many threads.
    Count(NonZeroUsize),
    /// One per core the process may use (its CPU affinity and cgroup quota), or
    /// `TOKIO_WORKER_THREADS` when that is set: tokio's own default.
    Auto,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::Count(NonZeroUsize::MIN)
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Count(n) => write!(f, "{n}"),
            Workers::Auto => f.write_str("auto"),
        }
    }
}

/// A TUNNEL_WORKERS that is neither `auto` nor a count from 1 to [`MAX_WORKERS`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither auto nor a number of threads from 1 to {MAX_WORKERS}")]
pub struct BadWorkers(String);

/// Parses `auto` or a count from 1 to [`MAX_WORKERS`].
pub fn parse_workers(value: &str) -> Result<Workers, BadWorkers> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(Workers::Auto);
    }
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_WORKERS)
        .and_then(NonZeroUsize::new)
        .map(Workers::Count)
        .ok_or_else(|| BadWorkers(value.to_string()))
}

impl Workers {
    /// The runtime: tokio's work-stealing scheduler with this many worker threads. With one
    /// it measured the same as the current-thread scheduler (12.8 against 13.2 µs per request,
    /// within the noise), and keeps what works on more threads working the same way
    /// (`block_in_place`, a task that blocks does not stall the thread that called `main`).
    pub fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Workers::Count(n) = self {
            builder.worker_threads(n.get());
        }
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_auto() {
        let count = |n| Workers::Count(NonZeroUsize::new(n).expect("non-zero"));
        assert_eq!(parse_workers("1").ok(), Some(count(1)));
        assert_eq!(parse_workers(" 4 ").ok(), Some(count(4)));
        assert_eq!(parse_workers("1024").ok(), Some(count(1024)));
        assert_eq!(parse_workers("auto").ok(), Some(Workers::Auto));
        assert_eq!(parse_workers("AUTO").ok(), Some(Workers::Auto));
        assert_eq!(Workers::default(), count(1));
    }

    #[test]
    fn refuses_what_is_not_a_usable_count() {
        for bad in [
            "0",
            "-1",
            "1025",
            "two",
            "",
            "1.5",
            "99999999999999999999999",
        ] {
            let e = parse_workers(bad).expect_err(bad);
            assert!(e.to_string().contains("from 1 to 1024"), "{bad}: {e}");
        }
    }

    #[test]
    fn builds_each_kind_of_runtime() {
        for workers in [
            Workers::default(),
            Workers::Count(NonZeroUsize::new(2).expect("non-zero")),
            Workers::Auto,
        ] {
            let rt = workers.runtime().expect("runtime");
            // Timers and I/O are enabled: a task that sleeps and binds a socket completes.
            let bound = rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tokio::net::TcpListener::bind("127.0.0.1:0").await.is_ok()
            });
            assert!(bound, "{workers}");
        }
    }
}
