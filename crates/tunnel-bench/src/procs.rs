//! Child processes, readiness by polling with a deadline, and memory from `/proc`.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::process::{Child, Command};

/// A child process that is killed when dropped, so that no failure path leaves one behind.
#[derive(Debug)]
pub struct Proc {
    /// For messages.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    child: Child,
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
        })
    }

    /// Current and peak RSS.
    pub fn mem(&self) -> anyhow::Result<Mem> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        parse_status(&text).ok_or_else(|| anyhow!("no VmRSS/VmHWM in {path}"))
    }

    /// Resets the peak RSS to the current RSS (`echo 5 > /proc/PID/clear_refs`), so that a
    /// phase's peak is not the peak of an earlier phase. Needs the right to write that file
    /// (the same user, or root).
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid);
        std::fs::write(&path, "5").with_context(|| format!("write {path}"))
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
    fn reads_own_memory() {
        let text = std::fs::read_to_string("/proc/self/status").expect("linux");
        let mem = parse_status(&text).expect("fields");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib);
    }
}
