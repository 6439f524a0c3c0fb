//! The `tunnel-server` binary: configuration errors, the dev-mode banner and key, signals.
//!
//! Every server started here listens on port 0 (metrics included) and keeps its dev key in a
//! state directory of its own, so that these tests pass beside a running dev server and never
//! touch the user's files. A failure shows the server's stderr.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A state directory of this test's own, removed at the end.
struct StateDir(PathBuf);

impl StateDir {
    fn new(test: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli-state-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with no setting from the test's own environment, on port 0 for both listeners,
/// with its state in `state`.
fn server(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tunnel-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TUNNEL_") || k.starts_with("LOG_") {
            c.env_remove(k);
        }
    }
    c.env("TUNNEL_BIND", "127.0.0.1:0")
        .env("TUNNEL_METRICS_BIND", "127.0.0.1:0")
        .env("XDG_STATE_HOME", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running server whose stderr is collected as it comes (so that a full pipe never blocks
/// it), to show with any failure.
struct Running {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Arc<Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdout,
            stderr,
            drain: Some(drain),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stdout up to and including the line that contains `until`; panics with both streams
    /// when the server exits first or takes longer than 20 s.
    fn read_until(&mut self, until: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        while !text.contains(until) {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(
                n > 0 && Instant::now() < deadline,
                "the server printed no {until:?} before it {}; stdout:\n{text}\nstderr:\n{}",
                if n == 0 { "exited" } else { "timed out" },
                self.stderr()
            );
            text.push_str(&line);
        }
        text
    }

    /// SIGTERM, then the exit status and the whole stderr.
    fn terminate(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap().code();
        if let Some(d) = self.drain.take() {
            d.join().unwrap();
        }
        (code, self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value after `label` on a line of `text`.
fn value_after<'a>(text: &'a str, label: &str) -> &'a str {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    text[start + label.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
}

#[test]
fn invalid_settings_exit_64_naming_the_setting() {
    let state = StateDir::new("invalid");
    for (var, value, expect) in [
        ("TUNNEL_TTL_SECS", "0", "TUNNEL_TTL_SECS"),
        ("TUNNEL_TTL_SECS", "soon", "TUNNEL_TTL_SECS"),
        ("TUNNEL_BIND", "not-an-address", "TUNNEL_BIND"),
        ("TUNNEL_BIND", "0.0.0.0:0", "TUNNEL_API_KEYS"),
        ("TUNNEL_API_KEYS", "short", "TUNNEL_API_KEYS"),
        ("LOG_TIMEZONE", "Nowhere/Special", "LOG_TIMEZONE"),
        ("TUNNEL_DOMAIN", "not a domain", "TUNNEL_DOMAIN"),
        ("TUNNEL_DOMAIN", "tunnels.example.com:443", "TUNNEL_DOMAIN"),
        ("TUNNEL_URL_STYLE", "fancy", "TUNNEL_URL_STYLE"),
        ("TUNNEL_NAME_GRACE_SECS", "-1", "TUNNEL_NAME_GRACE_SECS"),
        (
            "TUNNEL_BLOCKED_NAMES",
            "www,bad name",
            "TUNNEL_BLOCKED_NAMES",
        ),
        (
            "TUNNEL_RESERVED_NAMES",
            "/nonexistent/reserved",
            "TUNNEL_RESERVED_NAMES",
        ),
        ("TUNNEL_DNS_RESOLVER", "dns.example", "TUNNEL_DNS_RESOLVER"),
        (
            "TUNNEL_DOMAIN_RECHECK_SECS",
            "0",
            "TUNNEL_DOMAIN_RECHECK_SECS",
        ),
    ] {
        let out = server(&state.0).env(var, value).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {err}");
        assert!(err.contains(expect), "{var}={value}: {err}");
    }
    // Settings that are wrong only together with others.
    let keys = ("TUNNEL_API_KEYS", "0123456789abcdef0123");
    for (vars, expect) in [
        (
            vec![keys, ("TUNNEL_URL_STYLE", "subdomain")],
            "TUNNEL_URL_STYLE",
        ),
        (
            vec![("TUNNEL_DOMAIN", "off"), ("TUNNEL_URL_STYLE", "subdomain")],
            "TUNNEL_URL_STYLE",
        ),
    ] {
        let out = server(&state.0)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{vars:?}: {err}");
        assert!(err.contains(expect), "{vars:?}: {err}");
    }
}

#[test]
fn dev_mode_prints_a_key_and_sigterm_shuts_down_cleanly() {
    let state = StateDir::new("banner");
    let mut running = Running::start(server(&state.0).env("LOG_FORMAT", "json"));
    let banner = running.read_until("Expose a local service");
    let banner = banner + &running.read_until("--api-key");
    assert!(banner.contains("API key: "), "{banner}");
    // Dev mode: subdomains of localhost, which resolve to loopback with no DNS set-up.
    assert!(banner.contains("http://NAME.localhost:"), "{banner}");
    let (code, logs) = running.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

#[test]
fn the_dev_key_is_kept_private_across_restarts_and_printed_with_its_place() {
    let state = StateDir::new("kept");
    let file = state.0.join("tunnel").join("dev-api-key");
    let mut first = Running::start(&mut server(&state.0));
    let banner = first.read_until("restarts keep it");
    let key = value_after(&banner, "API key: ").to_string();
    assert!(key.len() >= 16, "{banner}");
    assert!(
        banner.contains(&format!("saved to {}", file.display())),
        "{banner}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file:?}");
    }
    assert_eq!(first.terminate().0, Some(0));

    let mut second = Running::start(&mut server(&state.0));
    let banner = second.read_until("restarts keep it");
    assert_eq!(value_after(&banner, "API key: "), key, "{banner}");
    assert!(
        banner.contains(&format!("kept in {}", file.display())),
        "{banner}"
    );
    // The printed command carries the key it serves with.
    let banner = banner + &second.read_until("--api-key");
    assert!(
        banner.contains(&format!("--api-key {key} 3000")),
        "{banner}"
    );
    assert_eq!(second.terminate().0, Some(0));
}

#[test]
fn the_dev_server_answers_on_ipv6_loopback_too() {
    let state = StateDir::new("v6");
    let mut running = Running::start(&mut server(&state.0));
    let banner = running.read_until("Dev mode");
    let v4: SocketAddr = value_after(&banner, "listens on ").parse().unwrap();
    assert!(
        banner.contains(&format!("and [::1]:{}", v4.port())),
        "{banner}"
    );
    for addr in [v4, SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], v4.port()))] {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(
            &mut tcp,
            b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{addr}: {answer}");
    }
    assert_eq!(running.terminate().0, Some(0));
}
