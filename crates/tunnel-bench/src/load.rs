//! A fixed number of small requests over keep-alive connections, for figures that are counts
//! per request (syscalls, allocations, instructions under callgrind): a count needs a known
//! number of requests, not a duration, and must not depend on how fast the machine is.
//!
//! Also `tunnel-bench load --to ADDR --path P --requests N`, to drive a process that is being
//! measured by hand (e.g. under `valgrind --tool=callgrind`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;

use crate::client;

/// What a fixed-count load did.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// Requests answered 200.
    pub requests: u64,
    /// Wall time of the whole load.
    pub elapsed: Duration,
}

/// Sends `requests` GETs of `path` to `addr` over `connections` keep-alive connections (each
/// connection sends its next request when the previous answer is read, as wrk does); fails on
/// any status other than 200.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    requests: u64,
    connections: usize,
) -> anyhow::Result<Done> {
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(requests));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let left = Arc::clone(&left);
        let path = path.to_string();
        tasks.spawn(async move {
            let mut sender = client::connect::<Empty<Bytes>>(addr).await?;
            let mut done = 0u64;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let status = client::get_status(&mut sender, addr, &path).await?;
                if status != StatusCode::OK {
                    bail!("GET {path} through {addr}: status {status}");
                }
                done += 1;
            }
            Ok::<u64, anyhow::Error>(done)
        });
    }
    let mut total = 0u64;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(Done {
        requests: total,
        elapsed: started.elapsed(),
    })
}
