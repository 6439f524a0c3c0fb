//! Counts per process with `perf stat`: system calls (the `raw_syscalls:sys_enter` tracepoint)
//! and calls into the C library's allocator (uprobes on `malloc`, `calloc`, `realloc`,
//! `posix_memalign`), for any program, ours or a peer's, without rebuilding it.
//!
//! Both are software events, so they work in a VM without hardware counters, and both are
//! counts, so they mean the same on a busy machine as on an idle one. A uprobe hit costs the
//! process a trap (about a microsecond), which is why these counts are taken in a phase of
//! their own, never during the throughput rounds. Needs `perf` (Debian: `linux-perf`) and the
//! right to trace (root, or `perf_event_paranoid` ≤ 1 and access to tracefs); without them the
//! figures are left out and the report says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::process::{Child, Command};

use crate::procs::poll_until;

/// The syscall tracepoint.
pub const SYSCALLS: &str = "raw_syscalls:sys_enter";
/// The allocator entry points probed; Rust's `System` allocator calls the first four.
const ALLOC_FUNCTIONS: [&str; 4] = ["malloc", "calloc", "realloc", "posix_memalign"];

/// Whether `perf stat` can count the syscall tracepoint here.
pub async fn can_count_syscalls() -> Result<(), String> {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", SYSCALLS, "--", "true"])
        .stdout(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("perf not runnable ({e}; Debian package linux-perf)"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && parse(&text).contains_key(SYSCALLS) {
        Ok(())
    } else {
        Err(format!(
            "perf cannot count {SYSCALLS}: {}",
            text.lines().last().unwrap_or("")
        ))
    }
}

/// Uprobes on the C library's allocator, under a group named after this process; removed
/// when dropped.
#[derive(Debug)]
pub struct AllocProbes {
    group: String,
    /// The events, as `perf stat -e` takes them.
    pub events: Vec<String>,
}

/// The C library mapped by process `pid` (from `/proc/PID/maps`).
fn libc_of(pid: u32) -> anyhow::Result<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("process {pid} maps no libc"))
}

impl AllocProbes {
    /// Adds the probes to the C library that process `pid` uses (every program measured here
    /// links the same one).
    pub async fn add(pid: u32) -> anyhow::Result<Self> {
        let libc = libc_of(pid)?;
        let group = format!("tunnel_bench_{}", std::process::id());
        let mut cmd = Command::new("perf");
        cmd.args(["probe", "-q", "-x"]).arg(&libc);
        for f in ALLOC_FUNCTIONS {
            cmd.arg("-a").arg(format!("{group}:{f}={f}"));
        }
        let out = cmd.output().await.context("run perf probe")?;
        let probes = Self {
            events: ALLOC_FUNCTIONS
                .iter()
                .map(|f| format!("{group}:{f}"))
                .collect(),
            group,
        };
        if !out.status.success() {
            bail!(
                "perf probe on {}: {}",
                libc.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(probes)
    }
}

impl Drop for AllocProbes {
    fn drop(&mut self) {
        // Synchronous on purpose: it must also run on the error paths, and it takes a moment.
        let removed = std::process::Command::new("perf")
            .args(["probe", "-q", "-d", &format!("{}:*", self.group)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !removed.is_ok_and(|s| s.success()) {
            eprintln!(
                "tunnel-bench: could not remove the uprobes {}:* (perf probe -d)",
                self.group
            );
        }
    }
}

/// A running `perf stat` on some processes.
pub struct Counter {
    child: Child,
    out: PathBuf,
}

/// Starts counting `events` in the processes `pids`, into the file `out`; returns once perf
/// counts (its first interval line is written).
pub async fn start(pids: &[u32], events: &[String], out: &Path) -> anyhow::Result<Counter> {
    let _ = std::fs::remove_file(out);
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new("perf")
        .args(["stat", "-x,", "-I", "50", "-e", &events.join(","), "-p"])
        .arg(&pid_list)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start perf stat")?;
    let first = events.first().cloned().unwrap_or_default();
    poll_until(
        "perf stat",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            let text = std::fs::read_to_string(out).ok()?;
            text.contains(&first).then_some(())
        },
    )
    .await?;
    Ok(Counter {
        child,
        out: out.to_path_buf(),
    })
}

impl Counter {
    /// Stops perf (SIGINT, so that it writes its last interval) and returns each event's total.
    pub async fn stop(mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await
                .context("run kill")?;
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("perf stat did not stop")??;
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("read {}", self.out.display()))?;
        Ok(parse(&text))
    }
}

/// Sums the counts of `perf stat -x,` output (interval lines `time,count,unit,event,...`, or
/// `count,unit,event,...` without `-I`) per event; uncounted lines are skipped.
pub fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        // With -I the first field is a time (it has a '.'); without, it is the count.
        let (count, event) = match f.as_slice() {
            [t, c, _, e, ..] if t.contains('.') => (*c, *e),
            [c, _, e, ..] => (*c, *e),
            _ => continue,
        };
        if let Ok(n) = count.parse::<u64>() {
            *totals.entry(event.to_string()).or_insert(0) += n;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sums_interval_lines() {
        let text = "# started on Tue Dec  1 22:00:00 2026\n\n\
             0.050123,120,,raw_syscalls:sys_enter,50000000,100.00,,\n\
             0.050123,7,,g:malloc,50000000,100.00,,\n\
             0.100200,30,,raw_syscalls:sys_enter,50000000,100.00,,\n\
             0.100200,<not counted>,,g:malloc,0,100.00,,\n";
        let t = parse(text);
        assert_eq!(t["raw_syscalls:sys_enter"], 150);
        assert_eq!(t["g:malloc"], 7);
        let plain = parse("144,,raw_syscalls:sys_enter,1000,100.00,,\n");
        assert_eq!(plain["raw_syscalls:sys_enter"], 144);
    }
}
