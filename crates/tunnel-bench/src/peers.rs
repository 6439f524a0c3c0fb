//! The tunnels users would pick instead of ours, run the way their READMEs run them, on
//! loopback: rathole (TOML configuration, one server and one client process) and bore (a
//! server and one `bore local` per exposed port). `bench/run.sh` installs both with
//! `cargo install --root` into a cache under `target/`.
//!
//! Both carry each public connection over a TCP connection of its own between their two
//! processes (rathole from a pool it opens ahead, bore on demand, after a round trip on its
//! control connection), where our tunnel multiplexes every request over one WebSocket.
//! They run with their default log levels (`RUST_LOG` removed from their environment, as for
//! every process of the run): rathole
//! logs at info, bore at error; their output is drained as a log collector would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::client;
use crate::machine::neutral_env;
use crate::nginx::free_port;
use crate::procs::{poll_until, Proc};

/// Token of the benchmark's rathole services (loopback only).
const RATHOLE_TOKEN: &str = "tunnel-bench-rathole-token";
/// Secret of the benchmark's bore server (loopback only).
const BORE_SECRET: &str = "tunnel-bench-bore-secret";
/// bore's control port, fixed in bore 0.6 (`bore_cli::shared::CONTROL_PORT`).
const BORE_CONTROL_PORT: u16 = 7835;
/// Deadline for a peer to carry its first request.
const READY: Duration = Duration::from_secs(20);

/// rathole: its two processes and one public address per backend.
pub struct Rathole {
    /// `rathole --server`.
    pub server: Proc,
    /// `rathole --client`.
    pub client: Proc,
    /// Public address of the service for each backend, in the order given.
    pub public: Vec<SocketAddr>,
}

/// bore: its server, one `bore local` per backend and their public addresses.
pub struct Bore {
    /// `bore server`.
    pub server: Proc,
    /// `bore local`, one per backend, in the order given.
    pub clients: Vec<Proc>,
    /// Public address of each backend's tunnel.
    pub public: Vec<SocketAddr>,
}

/// Reads `out` to its end, as a log collector would.
fn drain(out: Option<impl AsyncRead + Unpin + Send + 'static>) {
    if let Some(out) = out {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
    }
}

/// Starts `program args` with its output drained and `RUST_LOG` removed (its default level,
/// see [`neutral_env`]).
fn spawn(name: &str, program: &Path, args: &[&str]) -> anyhow::Result<Proc> {
    let mut proc = Proc::spawn(
        name,
        neutral_env(&mut Command::new(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    drain(proc.child_mut().stdout.take());
    drain(proc.child_mut().stderr.take());
    Ok(proc)
}

/// Polls `GET /` through `public` until it answers 200 (a peer's client needs a moment to
/// register with its server); fails if `proc` exits first.
async fn wait_serving(
    name: &str,
    public: SocketAddr,
    procs: &mut [&mut Proc],
) -> anyhow::Result<()> {
    poll_until(name, READY, Duration::from_millis(10), || {
        let exited = procs
            .iter_mut()
            .find_map(|p| p.has_exited().then(|| p.name.clone()));
        async move {
            if let Some(p) = exited {
                return Some(Err(anyhow!("{p} exited")));
            }
            let mut s = client::connect::<Empty<Bytes>>(public).await.ok()?;
            let st = client::get_status(&mut s, public, "/").await.ok()?;
            (st == StatusCode::OK).then_some(Ok(()))
        }
    })
    .await?
}

/// rathole's server configuration: a control port and one public port per service.
fn rathole_server_toml(control: u16, public: &[u16]) -> String {
    let mut t = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{RATHOLE_TOKEN}\"\n"
    );
    for (i, p) in public.iter().enumerate() {
        t.push_str(&format!(
            "\n[server.services.backend{i}]\nbind_addr = \"127.0.0.1:{p}\"\n"
        ));
    }
    t
}

/// rathole's client configuration: one service per backend.
fn rathole_client_toml(control: u16, backends: &[SocketAddr]) -> String {
    let mut t = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{RATHOLE_TOKEN}\"\n"
    );
    for (i, b) in backends.iter().enumerate() {
        t.push_str(&format!(
            "\n[client.services.backend{i}]\nlocal_addr = \"{b}\"\n"
        ));
    }
    t
}

/// Starts rathole (binary `bin`, configuration files written to `dir`) in front of `backends`.
pub async fn start_rathole(
    bin: &Path,
    dir: &Path,
    backends: &[SocketAddr],
) -> anyhow::Result<Rathole> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let control = free_port([127, 0, 0, 1])?;
    let ports = backends
        .iter()
        .map(|_| free_port([127, 0, 0, 1]))
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let server_toml = dir.join("rathole-server.toml");
    let client_toml = dir.join("rathole-client.toml");
    std::fs::write(&server_toml, rathole_server_toml(control, &ports))?;
    std::fs::write(&client_toml, rathole_client_toml(control, backends))?;
    let s = server_toml.to_string_lossy();
    let c = client_toml.to_string_lossy();
    let mut server = spawn("rathole server", bin, &["--server", &s])?;
    let mut client = spawn("rathole client", bin, &["--client", &c])?;
    let public: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    for &p in &public {
        wait_serving("rathole", p, &mut [&mut server, &mut client]).await?;
    }
    Ok(Rathole {
        server,
        client,
        public,
    })
}

/// A loopback address whose bore control port is free: bore 0.6 always listens on port 7835,
/// so each run takes an address of 127.0.0.0/8 of its own (from its process id), which also
/// keeps two benchmarks on one machine apart.
fn bore_address() -> anyhow::Result<Ipv4Addr> {
    let pid = std::process::id();
    for attempt in 0..64u32 {
        let n = pid.wrapping_add(attempt.wrapping_mul(7919));
        let ip = Ipv4Addr::new(127, 83, (n >> 8) as u8, (n as u8).max(1));
        if std::net::TcpListener::bind((ip, BORE_CONTROL_PORT)).is_ok() {
            return Ok(ip);
        }
    }
    bail!("no loopback address with port {BORE_CONTROL_PORT} free for bore's server")
}

/// Starts bore (binary `bin`) in front of `backends`: one server, one `bore local` each.
pub async fn start_bore(bin: &Path, backends: &[SocketAddr]) -> anyhow::Result<Bore> {
    let ip = bore_address()?;
    let ip_s = ip.to_string();
    let mut server = spawn(
        "bore server",
        bin,
        &["server", "--bind-addr", &ip_s, "--secret", BORE_SECRET],
    )?;
    // The control port is up when a connect succeeds.
    poll_until("bore server", READY, Duration::from_millis(5), || async {
        tokio::net::TcpStream::connect((ip, BORE_CONTROL_PORT))
            .await
            .ok()
            .map(|_| ())
    })
    .await?;
    let mut clients = Vec::new();
    let mut public = Vec::new();
    for b in backends {
        let port = free_port(ip.octets())?;
        let mut c = spawn(
            "bore local",
            bin,
            &[
                "local",
                &b.port().to_string(),
                "--local-host",
                &b.ip().to_string(),
                "--to",
                &ip_s,
                "--port",
                &port.to_string(),
                "--secret",
                BORE_SECRET,
            ],
        )?;
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        wait_serving("bore", addr, &mut [&mut server, &mut c]).await?;
        clients.push(c);
        public.push(addr);
    }
    Ok(Bore {
        server,
        clients,
        public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rathole_configurations_pair_up() {
        let s = rathole_server_toml(7000, &[7001, 7002]);
        assert!(s.contains("bind_addr = \"127.0.0.1:7000\""));
        assert!(s.contains("[server.services.backend1]\nbind_addr = \"127.0.0.1:7002\""));
        let backends = [
            SocketAddr::from(([127, 0, 0, 1], 80)),
            SocketAddr::from(([127, 0, 0, 1], 81)),
        ];
        let c = rathole_client_toml(7000, &backends);
        assert!(c.contains("remote_addr = \"127.0.0.1:7000\""));
        assert!(c.contains("[client.services.backend1]\nlocal_addr = \"127.0.0.1:81\""));
        assert_eq!(s.matches("default_token").count(), 1);
        assert_eq!(c.matches(RATHOLE_TOKEN).count(), 1);
    }
}
