//! `tunnel-bench tcp`: raw TCP through a TCP tunnel (issue 17), both ways in (its public port
//! of `TUNNEL_TCP_PORTS`, and the HTTP front door through `tunnel-client connect`), against
//! the same service reached directly and through rathole and bore, in the same run.
//!
//! The service runs in this process on 127.0.0.1:0 and speaks a one-byte protocol: `u` reads
//! to the end and answers how many bytes it read (an upload), `d` sends the number of bytes
//! the next 8 bytes ask for (a download), `p` answers one byte (a connection's first round
//! trip), and `G` (a `GET`) answers an empty HTTP 200, which is how the peers' readiness is
//! polled. Each path is measured in interleaved rounds whose order rotates: MB/s each way on
//! one connection, and the time from `connect` to the first byte back on fresh connections
//! (what a `psql` or `redis-cli` pays before its first query).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::machine::{self, neutral_env};
use crate::nginx::free_port;
use crate::peers;
use crate::procs::{poll_until, Proc};
use crate::setup::{start_server, ServerKind, API_KEY};
use crate::stats::{median, min_max};

/// Bytes per write and read of the transfers.
const CHUNK: usize = 256 * 1024;
/// How long a process has to become ready.
const READY: Duration = Duration::from_secs(20);
/// The tunnel's name.
const NAME: &str = "tcp-bench";

/// Options of `tunnel-bench tcp`.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// MiB of each transfer (each way, per round and path).
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Fresh connections per round and path for the set-up time.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Directory holding the release `tunnel-server` and `tunnel-client` (default: this
    /// program's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory holding `rathole` and `bore` (left out without it).
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// Directory for rathole's configuration files (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One path's figures over the rounds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PathFigures {
    /// The path.
    pub path: String,
    /// Upload MB/s (to the service), per round.
    pub up_mb_s: Vec<f64>,
    /// Download MB/s (from the service), per round.
    pub down_mb_s: Vec<f64>,
    /// Median connection set-up time (connect to first byte back), microseconds, per round.
    pub setup_us: Vec<f64>,
}

/// Every path's figures, and the machine they were taken on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TcpReport {
    /// What was measured.
    pub paths: Vec<PathFigures>,
    /// MiB per transfer.
    pub transfer_mib: u64,
    /// Fresh connections per round for the set-up time.
    pub connections_per_round: usize,
    /// The machine: cores, load before and after, steal.
    pub machine: serde_json::Value,
}

impl TcpReport {
    /// The table: medians (and the spread over rounds) and ratios to direct.
    pub fn table(&self) -> String {
        let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
        let spread = |v: &[f64]| match min_max(v) {
            Some((lo, hi)) => format!("{lo:.0}-{hi:.0}"),
            None => "-".into(),
        };
        let direct = self.paths.first();
        let (d_up, d_down) =
            direct.map_or((f64::NAN, f64::NAN), |d| (m(&d.up_mb_s), m(&d.down_mb_s)));
        let mut t = String::from(
            "| TCP path | upload MB/s | download MB/s | up / direct | down / direct | set-up us (median) |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for p in &self.paths {
            let (up, down) = (m(&p.up_mb_s), m(&p.down_mb_s));
            t.push_str(&format!(
                "| {} | {up:.0} ({}) | {down:.0} ({}) | {:.2} | {:.2} | {:.0} ({}) |\n",
                p.path,
                spread(&p.up_mb_s),
                spread(&p.down_mb_s),
                up / d_up,
                down / d_down,
                m(&p.setup_us),
                spread(&p.setup_us),
            ));
        }
        t
    }
}

/// Serves the protocol of the module documentation on 127.0.0.1:0.
async fn start_service() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A failed connection is the measuring side's to report.
                let _ = serve(socket).await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode).await?;
    match mode[0] {
        b'u' => {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 1u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_be_bytes()).await?;
        }
        b'd' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len).await?;
            let buf = vec![0x5au8; CHUNK];
            let mut left = u64::from_be_bytes(len);
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                s.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        b'p' => s.write_all(b"p").await?,
        b'G' => {
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await?;
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            s.write_all(ok).await?;
        }
        _ => {}
    }
    s.shutdown().await
}

/// Sends `bytes` through `addr`; MB/s until the service confirmed all of them.
async fn upload(addr: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"u").await?;
    let buf = vec![0xa5u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut got = [0u8; 8];
    s.read_exact(&mut got).await.context("upload: no count")?;
    let got = u64::from_be_bytes(got);
    anyhow::ensure!(
        got == bytes + 1,
        "upload: {got} bytes arrived of {}",
        bytes + 1
    );
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Reads `bytes` through `addr`; MB/s until the last one.
async fn download(addr: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"d").await?;
    s.write_all(&bytes.to_be_bytes()).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    anyhow::ensure!(total == bytes, "download: {total} bytes of {bytes}");
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// The median time from `connect` to the first byte back over `n` fresh connections, in
/// microseconds.
async fn setup_time(addr: SocketAddr, n: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(b"p").await?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.context("set-up: no answer")?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    median(&times).ok_or_else(|| anyhow!("no connections"))
}

/// Polls a `p` round trip through `addr` until it works (a tunnel needs a moment to connect).
async fn wait_carrying(what: &str, addr: SocketAddr) -> anyhow::Result<()> {
    poll_until(what, READY, Duration::from_millis(20), || async {
        setup_time(addr, 1).await.ok().map(|_| ())
    })
    .await
}

fn bin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()));
    }
    let exe = std::env::current_exe().context("where is this program?")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))
}

/// `tunnel-client` (from `bins`) with `args`, quiet, output to the terminal's stderr.
fn spawn_client(bins: &Path, name: &str, args: &[&str]) -> anyhow::Result<Proc> {
    Proc::spawn(
        name,
        neutral_env(&mut Command::new(bins.join("tunnel-client")))
            .current_dir(std::env::temp_dir())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// Tunnel [`NAME`]'s status from the control API (one `GET`, `Connection: close`).
async fn status(server: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(server).await?;
    let req = format!(
        "GET /api/tunnels/{NAME} HTTP/1.1\r\nHost: {server}\r\n\
         Authorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "status: {head}");
    Ok(serde_json::from_str(body)?)
}

/// The public port the server gave tunnel [`NAME`] (its status's `port`), once its client is
/// connected.
async fn public_port(server: SocketAddr) -> anyhow::Result<u16> {
    poll_until(
        "the tcp tunnel's port",
        READY,
        Duration::from_millis(20),
        || async {
            let v = status(server).await.ok()?;
            let connected = v["connected"].as_bool() == Some(true);
            let port = v["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            port.filter(|_| connected)
        },
    )
    .await
}

/// The processes of our tunnel: the server (public ports on), `tunnel-client tcp`, and
/// `tunnel-client connect`; the public port's and the front door's addresses.
async fn start_tunnel(
    bins: &Path,
    service: SocketAddr,
) -> anyhow::Result<(Vec<Proc>, SocketAddr, SocketAddr)> {
    let first = free_port([127, 0, 0, 1])?;
    let range = format!("{first}-{}", first.saturating_add(3));
    let env = [
        ("TUNNEL_TCP_PORTS", range.as_str()),
        ("TUNNEL_TCP_BIND_IP", "127.0.0.1"),
    ];
    let (server, addr) = start_server(bins, ServerKind::Bench, &env).await?;
    let server_s = addr.to_string();
    let port_s = service.port().to_string();
    let client = spawn_client(
        bins,
        "tunnel-client tcp",
        &[
            "tcp",
            &port_s,
            "--server",
            &server_s,
            "--api-key",
            API_KEY,
            "--local-host",
            "127.0.0.1",
            "--name",
            NAME,
            "--quiet",
        ],
    )?;
    let port = public_port(addr).await?;
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1])?));
    let listen_s = listen.to_string();
    let door = spawn_client(
        bins,
        "tunnel-client connect",
        &[
            "connect",
            NAME,
            "--listen",
            &listen_s,
            "--server",
            &server_s,
            "--api-key",
            API_KEY,
            "--quiet",
        ],
    )?;
    wait_carrying("tcp tunnel, public port", public).await?;
    wait_carrying("tcp tunnel, front door", listen).await?;
    Ok((vec![door, client, server], public, listen))
}

/// One round of one path: upload, download, set-up time.
async fn measure(addr: SocketAddr, args: &TcpArgs, into: &mut PathFigures) -> anyhow::Result<()> {
    let bytes = args.mib << 20;
    let what = |w: &str| format!("{}: {w}", into.path);
    into.up_mb_s
        .push(upload(addr, bytes).await.with_context(|| what("upload"))?);
    into.down_mb_s.push(
        download(addr, bytes)
            .await
            .with_context(|| what("download"))?,
    );
    let setup = setup_time(addr, args.connections).await;
    into.setup_us.push(setup.with_context(|| what("set-up"))?);
    Ok(())
}

/// Runs the comparison.
pub async fn run(args: TcpArgs) -> anyhow::Result<TcpReport> {
    if args.rounds == 0 || args.mib == 0 || args.connections == 0 {
        bail!("--rounds, --mib and --connections must be at least 1");
    }
    let before = machine::before();
    let bins = bin_dir(args.bin_dir.as_deref())?;
    let service = start_service().await?;
    let (mut procs, public, door) = start_tunnel(&bins, service).await?;
    let mut paths = vec![
        ("direct".to_string(), service),
        ("tunnel, public port".to_string(), public),
        (
            "tunnel, front door (tunnel-client connect)".to_string(),
            door,
        ),
    ];
    if let Some(dir) = &args.peers_dir {
        let dir = bin_dir(Some(dir))?;
        let work = match &args.work_dir {
            Some(w) => w.clone(),
            None => std::env::temp_dir().join(format!("tunnel-bench-tcp-{}", std::process::id())),
        };
        let rathole = peers::start_rathole(&dir.join("rathole"), &work, &[service]).await?;
        let bore = peers::start_bore(&dir.join("bore"), &[service]).await?;
        paths.push(("rathole".into(), rathole.public[0]));
        paths.push(("bore".into(), bore.public[0]));
        procs.extend([rathole.client, rathole.server]);
        procs.extend(bore.clients);
        procs.push(bore.server);
    }
    let mut figures: Vec<PathFigures> = paths
        .iter()
        .map(|(name, _)| PathFigures {
            path: name.clone(),
            ..PathFigures::default()
        })
        .collect();
    // Warm-up: every path carries a transfer before anything is measured.
    for (_, addr) in &paths {
        upload(*addr, 16 << 20).await?;
    }
    for round in 0..args.rounds {
        for i in 0..paths.len() {
            // The order rotates: no path always follows the same one.
            let k = (i + round) % paths.len();
            measure(paths[k].1, &args, &mut figures[k]).await?;
        }
    }
    for p in procs {
        p.terminate(Duration::from_secs(10)).await?;
    }
    let report = TcpReport {
        paths: figures,
        transfer_mib: args.mib,
        connections_per_round: args.connections,
        machine: before.describe(),
    };
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_service_speaks_its_protocol() {
        let addr = start_service().await.expect("service");
        let up = upload(addr, 3 * CHUNK as u64 + 7).await.expect("upload");
        let down = download(addr, 2 * CHUNK as u64 + 1)
            .await
            .expect("download");
        assert!(up > 0.0 && down > 0.0);
        assert!(setup_time(addr, 3).await.expect("set-up") > 0.0);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}
