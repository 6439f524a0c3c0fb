//! Real TCP services for the TCP tunnel tests, each a process of the test's own on a free
//! port, in a fresh directory removed when it is dropped: Debian's `redis-server`, and a
//! Postgres cluster made by `initdb` (run as the `postgres` user when the tests run as root,
//! since Postgres refuses root), its unix socket in that directory too.
//!
//! A missing program prints a loud SKIPPED line and the test passes, unless
//! `TUNNEL_REQUIRE_REDIS=1` or `TUNNEL_REQUIRE_POSTGRES=1` (as `.ci/run` sets) makes it a
//! failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::eventually;
use crate::tcp::free_port;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `program` runs; otherwise SKIPPED, or a panic when `require_var` is `1`.
pub fn available(test: &str, program: &Path, require_var: &str, install: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var(require_var).is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {} is not installed, and {require_var}=1",
            program.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED {test}: {} is not installed ({install}) !!!!!\n",
        program.display()
    );
    false
}

fn fresh_dir(kind: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tunnel-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A `redis-server` on 127.0.0.1 and a free port, without persistence.
pub struct RedisTcp {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    _child: Child,
}

impl RedisTcp {
    /// Starts one and waits until it answers PING; `None` after a SKIPPED line.
    pub async fn start(test: &str) -> Option<Self> {
        let install = "apt-get install redis-server";
        if !available(
            test,
            Path::new("redis-server"),
            "TUNNEL_REQUIRE_REDIS",
            install,
        ) {
            return None;
        }
        let dir = fresh_dir("redis-tcp");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server");
        eventually("redis-server to answer PING", || async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        })
        .await;
        Some(Self {
            port,
            dir,
            _child: child,
        })
    }
}

impl Drop for RedisTcp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres cluster of the test's own (`initdb`, trust authentication for `postgres`),
/// listening on 127.0.0.1 and a free port.
pub struct Postgres {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The directory of Postgres' server programs (Debian keeps them out of `PATH`), the newest
/// version first.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_default()
}

/// Runs as the `postgres` user when we are root (Postgres refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Makes a cluster, starts it and waits until it answers; `None` after a SKIPPED line.
    pub async fn start(test: &str) -> Option<Self> {
        let bin = postgres_bin();
        let install = "apt-get install postgresql";
        if !available(
            test,
            &bin.join("postgres"),
            "TUNNEL_REQUIRE_POSTGRES",
            install,
        ) || !available(test, Path::new("psql"), "TUNNEL_REQUIRE_POSTGRES", install)
        {
            return None;
        }
        let dir = fresh_dir("postgres");
        // The postgres user must own it when we are root; elsewhere chown is refused and the
        // directory is ours already.
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let data = dir.join("data");
        let init = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&dir)
            .args(["-c", "fsync=off", "-c", "max_connections=20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres");
        let pg = Self {
            port,
            dir,
            child: Some(child),
        };
        eventually("postgres to accept connections", || async move {
            (psql(port, "SELECT 1").await.as_deref() == Some("1")).then_some(())
        })
        .await;
        Some(pg)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGINT: Postgres' fast shutdown (its backends go with it); kill_on_drop's
            // SIGKILL would leave them until they notice.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `psql -h 127.0.0.1 -p PORT -U postgres -tAc SQL`: its output, trimmed, if it succeeded.
pub async fn psql(port: u16, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-w", "-tA", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS...`: its output, trimmed, if it succeeded.
pub async fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
