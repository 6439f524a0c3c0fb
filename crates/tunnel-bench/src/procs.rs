//! Child processes, readiness by polling with a deadline, and memory and CPU from `/proc`.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::process::{Child, Command};

/// A child process that is killed when dropped, so that no failure path leaves one behind,
/// with the processes it started (nginx's workers, which outlive a killed master).
#[derive(Debug)]
pub struct Proc {
    /// For messages.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    child: Child,
    adopted: Vec<u32>,
}

/// Memory of a process, in KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`) since start or the last [`Proc::reset_peak`].
    pub hwm_kib: u64,
}

/// Extracts `VmRSS` and `VmHWM` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Clock ticks per second of the times in `/proc/PID/stat` (`USER_HZ`): fixed at 100 in the
/// kernel's user-space ABI on every architecture Linux runs this on.
const USER_HZ: f64 = 100.0;

/// CPU time and context switches of a process (all its threads), from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU time, in microseconds (10 ms resolution).
    pub cpu_us: f64,
    /// Voluntary context switches (the thread waited: a read with no data, a futex, a sleep).
    pub voluntary: u64,
    /// Involuntary ones (the thread was preempted, e.g. by another process on a shared core).
    pub involuntary: u64,
}

impl Usage {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            cpu_us: (self.cpu_us - earlier.cpu_us).max(0.0),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }

    /// Sum of two processes' usage.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            cpu_us: self.cpu_us + other.cpu_us,
            voluntary: self.voluntary + other.voluntary,
            involuntary: self.involuntary + other.involuntary,
        }
    }
}

/// User plus system time, in microseconds, from the text of `/proc/PID/stat` (fields 14 and
/// 15, counted after the parenthesised command name, which may contain spaces).
pub fn parse_stat_cpu_us(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 * 1e6 / USER_HZ)
}

/// Parent process id from the text of `/proc/PID/stat`.
fn parse_stat_ppid(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Voluntary and involuntary context switches from the text of `/proc/PID/task/TID/status`.
pub fn parse_ctxt_switches(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
    };
    Some((
        field("voluntary_ctxt_switches:")?,
        field("nonvoluntary_ctxt_switches:")?,
    ))
}

/// CPU time (all threads, living and exited) and context switches (summed over the living
/// threads: `/proc/PID/status` alone counts only the main thread's) of process `pid`.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let cpu_us = parse_stat_cpu_us(&stat).ok_or_else(|| anyhow!("no CPU times in {path}"))?;
    let mut usage = Usage {
        cpu_us,
        ..Usage::default()
    };
    let tasks = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&tasks).with_context(|| format!("read {tasks}"))? {
        let status = entry?.path().join("status");
        // A thread may end between the listing and the read: skip it.
        if let Some((v, n)) = std::fs::read_to_string(status)
            .ok()
            .as_deref()
            .and_then(parse_ctxt_switches)
        {
            usage.voluntary += v;
            usage.involuntary += n;
        }
    }
    Ok(usage)
}

/// The processes whose parent is `pid` (nginx's workers under its master), found by scanning
/// `/proc` (`/proc/PID/task/TID/children` needs a kernel option).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat_ppid)
                == Some(pid)
        })
        .collect()
}

/// Current and peak RSS of process `pid`.
pub fn mem(pid: u32) -> anyhow::Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_status(&text).ok_or_else(|| anyhow!("no VmRSS/VmHWM in {path}"))
}

/// Resets the peak RSS of process `pid` to its current RSS (`echo 5 > /proc/PID/clear_refs`),
/// so that a phase's peak is not the peak of an earlier phase. Needs the right to write that
/// file (the same user, or root).
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("write {path}"))
}

impl Proc {
    /// Starts `cmd`; the process is killed if this handle is dropped.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_string(),
            pid,
            child,
            adopted: Vec::new(),
        })
    }

    /// Kills `pids` too when this is dropped: processes this one started that would not die
    /// with it.
    pub fn adopt(&mut self, pids: &[u32]) {
        self.adopted.extend_from_slice(pids);
    }

    /// CPU time and context switches so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.pid)
    }

    /// Current and peak RSS.
    pub fn mem(&self) -> anyhow::Result<Mem> {
        mem(self.pid)
    }

    /// Resets the peak RSS (see [`reset_peak`]).
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        reset_peak(self.pid)
    }

    /// Whether the process has already exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit; kills it after that.
    pub async fn terminate(mut self, deadline: Duration) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .context("run kill")?;
        if !status.success() && self.has_exited() {
            return Ok(());
        }
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not exit within {deadline:?} of SIGTERM", self.name)
            }
        }
    }

    /// Takes the child's standard output or error, if it was piped.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.adopted.is_empty() {
            return; // `kill_on_drop` kills the process itself.
        }
        // The parent first, so that it cannot start new workers when the old ones die.
        let _ = self.child.start_kill();
        let pids: Vec<String> = self.adopted.iter().map(u32::to_string).collect();
        let killed = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(std::process::Stdio::null())
            .status();
        if killed.is_err() {
            eprintln!("tunnel-bench: could not kill {} (pids {pids:?})", self.name);
        }
    }
}

/// Calls `check` every `interval` until it returns `Some`, or fails after `deadline`.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("{what}: not ready within {deadline:?}");
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nVmPeak:\t  10 kB\nVmHWM:\t    4200 kB\nVmRSS:\t    4100 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kib: 4100,
                hwm_kib: 4200
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn parses_cpu_times_and_switches() {
        let stat = "42 (tokio (worker) x) S 7 42 42 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_us(stat), Some(3_000_000.0));
        assert_eq!(parse_stat_ppid(stat), Some(7));
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxt_switches(status), Some((120, 3)));
        assert_eq!(parse_ctxt_switches("Name: x\n"), None);
    }

    #[test]
    fn reads_own_usage() {
        let u = usage(std::process::id()).expect("linux");
        // This test process has at least run the test harness by now.
        assert!(u.voluntary + u.involuntary > 0, "{u:?}");
    }

    #[test]
    fn reads_own_memory() {
        let text = std::fs::read_to_string("/proc/self/status").expect("linux");
        let mem = parse_status(&text).expect("fields");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib);
    }
}
