//! Runs `wrk -t1 -cN -dNs --latency URL` and parses what it prints.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::Command;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests completed in the run (to turn CPU time and counters into per-request figures).
    pub requests: u64,
    /// Requests answered with a status outside 2xx/3xx, plus socket errors.
    pub errors: u64,
}

/// Parses a wrk duration such as `245.00us`, `1.20ms`, `2.00s` or `1.00m` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * factor)
}

/// Parses wrk's report (run with `--latency`).
pub fn parse(output: &str) -> anyhow::Result<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0u64;
    for line in output.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_duration_ms(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_duration_ms(v);
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match (rps, p50, p99, requests) {
        (Some(rps), Some(p50_ms), Some(p99_ms), Some(requests)) => Ok(WrkResult {
            rps,
            p50_ms,
            p99_ms,
            requests,
            errors,
        }),
        _ => bail!("cannot read wrk's report:\n{output}"),
    }
}

/// Runs wrk with one thread and `connections` keep-alive connections for `duration`.
pub async fn run(url: &str, connections: u32, duration: Duration) -> anyhow::Result<WrkResult> {
    let secs = duration.as_secs().max(1);
    let run = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .args(["--timeout", "5s", "--latency", url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(duration + Duration::from_secs(15), run)
        .await
        .context("wrk did not finish in time")?
        .context("cannot run wrk (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 5s test @ http://127.0.0.1:1/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  210.00us   5.00ms   90.00%
    Req/Sec    48.00k     2.00k   50.00k    80.00%
  Latency Distribution
     50%  980.00us
     75%    1.10ms
     90%    1.30ms
     99%    2.50ms
  240000 requests in 5.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  48000.50
Transfer/sec:      8.00MB
";

    #[test]
    fn parses_a_report() {
        let r = parse(SAMPLE).expect("parses");
        assert_eq!(r.rps, 48000.5);
        assert!((r.p50_ms - 0.98).abs() < 1e-9);
        assert_eq!(r.p99_ms, 2.5);
        assert_eq!(r.requests, 240000);
        assert_eq!(r.errors, 7);
        assert!(parse("garbage").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("2.00s"), Some(2000.0));
        assert_eq!(parse_duration_ms("1.00m"), Some(60000.0));
        assert_eq!(parse_duration_ms("x"), None);
    }
}
