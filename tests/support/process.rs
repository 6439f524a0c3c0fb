//! A child process a test watches by its output: `tunnel-client` (or the demo) started from a
//! prepared [`Command`], its stdout and stderr gathered line by line as they come, waits that
//! end at the first matching line or fail at the deadline (or when the process exits first)
//! with everything it printed, and a stop by signal that returns the exit status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::DEADLINE;

/// A running process and the lines it printed so far (stdout and stderr interleaved as they
/// arrived).
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    grew: Arc<Notify>,
}

impl Running {
    /// Starts `command` with stdout and stderr piped (killed if the test drops it).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let grew = Arc::new(Notify::new());
        gather(child.stdout.take().unwrap(), &lines, &grew);
        gather(child.stderr.take().unwrap(), &lines, &grew);
        Self { child, lines, grew }
    }

    /// Waits for a line with every one of `parts` and returns it; fails with all the output
    /// if the process exits first or the deadline passes.
    pub async fn line(&mut self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let grew = self.grew.notified();
            let found = {
                let lines = self.lines.lock().unwrap();
                lines
                    .iter()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                    .cloned()
            };
            if let Some(line) = found {
                return line;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && tokio::time::Instant::now() < deadline,
                "no line with {parts:?} (exit {exited:?}):\n{}",
                self.output()
            );
            // A new line wakes this at once; the cap only bounds how late an exit is seen.
            let _ = tokio::time::timeout(Duration::from_millis(100), grew).await;
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP`…).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status (within the deadline).
    pub async fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit after SIGTERM:\n{}", self.output()))
            .unwrap();
        status.code()
    }
}

fn gather(
    out: impl AsyncRead + Unpin + Send + 'static,
    lines: &Arc<Mutex<Vec<String>>>,
    grew: &Arc<Notify>,
) {
    let (lines, grew) = (lines.clone(), grew.clone());
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
            grew.notify_waiters();
        }
    });
}
