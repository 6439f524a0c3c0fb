//! The tunnel's own figures, which have no peer equivalent here: how soon a client carries
//! its first request, memory while a slow reader streams 1 GiB, and memory per idle tunnel.

use std::time::{Duration, Instant};

use super::plan::{Collected, Plan, Steps, GIB};
use crate::client;
use crate::idle::{self, Api};
use crate::paths::{BackendKind, PathKind};
use crate::procs::poll_until;
use crate::report::Figure;
use crate::setup::{self, Places, ServerKind, Setup, API_KEY, READY};

/// Rate of the slow reader, bytes per second.
const SLOW_RATE: u64 = 5_000_000;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// From starting a `tunnel-client` process to the first request through it, a few times.
pub(super) async fn client_ready(
    setup: &Setup,
    places: &Places,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step("client start-up time");
    let backend = setup.backend(BackendKind::Bench)?;
    let to = backend
        .route(PathKind::Direct)
        .map(|r| r.addr)
        .ok_or_else(|| anyhow::anyhow!("no direct route to the bench backend"))?;
    let mut ready_ms = Vec::new();
    for i in 0..plan.startup_rounds {
        let name = format!("startup-{i}");
        let t0 = Instant::now();
        let c = setup::spawn_client(&places.bins, setup.server_addr, to, &name, &[])?;
        let took = setup::wait_tunnel(setup.server_addr, &name, t0).await?;
        ready_ms.push(took.as_secs_f64() * 1000.0);
        c.terminate(Duration::from_secs(10)).await?;
    }
    out.figures.push(Figure::alone(
        "client_ready_ms",
        "client start → first request through it",
        "ms",
        ready_ms,
    ));
    Ok(())
}

/// Both processes' peak RSS while a 1 GiB body is read through the tunnel at 5 MB/s, and the
/// client's RSS after all the load.
pub(super) async fn slow_reader(
    setup: &Setup,
    plan: &Plan,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step("slow reader: 1 GiB download read at 5 MB/s");
    let backend = setup.backend(BackendKind::Bench)?;
    let i = setup
        .backends
        .iter()
        .position(|b| b.kind == BackendKind::Bench)
        .unwrap_or(0);
    let (server, client) = (&setup.server, &setup.clients[i]);
    let tunnel = backend
        .route(PathKind::Tunnel)
        .ok_or_else(|| anyhow::anyhow!("no tunnel route to the bench backend"))?;
    server.reset_peak()?;
    client.reset_peak()?;
    // The peak (VmHWM, reset above) is read at the end: no sampling needed.
    let path = tunnel.path(&format!("/bytes/{GIB}"));
    let slow = client::download(tunnel.addr, &path, Some(SLOW_RATE), plan.slow_time).await?;
    out.notes.push(format!(
        "slow reader: read {} MB of a 1 GiB body at {:.1} MB/s in {:.1} s{}",
        slow.bytes / 1_000_000,
        slow.mb_per_s(),
        slow.elapsed.as_secs_f64(),
        if plan.slow_time.is_some() {
            " (bounded window; --slow-full reads it all)"
        } else {
            ""
        }
    ));
    for (key, label, kib) in [
        (
            "stream_peak_server_mib",
            "server peak RSS, 1 GiB read at 5 MB/s",
            server.mem()?.hwm_kib,
        ),
        (
            "stream_peak_client_mib",
            "client peak RSS, 1 GiB read at 5 MB/s",
            client.mem()?.hwm_kib,
        ),
        (
            "client_rss_after_mib",
            "client RSS after all the load",
            client.mem()?.rss_kib,
        ),
    ] {
        out.figures
            .push(Figure::alone(key, label, "MiB", vec![mib(kib)]));
    }
    Ok(())
}

/// Server memory per idle tunnel: `n` tunnels on a fresh server, after one warm-up tunnel.
pub(super) async fn idle_tunnels(
    places: &Places,
    n: usize,
    out: &mut Collected,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step(&format!("idle tunnels: {n} on a fresh server"));
    let (server, addr) = setup::start_server(&places.bins, ServerKind::Idle, &[]).await?;
    let fresh_rss = server.mem()?.rss_kib;
    let mut api = Api::connect(addr, API_KEY).await?;
    let connected = |at_least: usize, exactly: bool| async move {
        let mut a = Api::connect(addr, API_KEY).await.ok()?;
        let c = a.connected().await.ok()?;
        (if exactly {
            c == at_least
        } else {
            c >= at_least
        })
        .then_some(())
    };
    // Warm-up: one tunnel through its whole life, so that one-time allocations (runtime
    // threads' arenas, lazily built tables) are not counted per tunnel.
    drop(idle::open(addr, &mut api, 1, 1).await?);
    poll_until(
        "warm-up tunnel gone",
        READY,
        Duration::from_millis(5),
        || connected(0, true),
    )
    .await?;
    let rss0 = server.mem()?.rss_kib;
    let conns = idle::open(addr, &mut api, n, 32).await?;
    poll_until(
        "idle tunnels attached",
        READY,
        Duration::from_millis(20),
        || connected(n, false),
    )
    .await?;
    let rss_n = server.mem()?.rss_kib;
    drop(conns);
    server.terminate(Duration::from_secs(30)).await?;
    let per_tunnel = (rss_n.saturating_sub(rss0)) as f64 / n.max(1) as f64;
    out.notes.push(format!(
        "idle: server RSS {fresh_rss} KiB fresh, {rss0} KiB after a warm-up tunnel, {rss_n} KiB with {n} idle tunnels"
    ));
    out.figures.extend([
        Figure::alone(
            "idle_per_tunnel_kib",
            format!("server memory per idle tunnel ({n})"),
            "KiB",
            vec![per_tunnel],
        ),
        Figure::alone(
            "idle_rss_0_mib",
            "server RSS, 0 tunnels",
            "MiB",
            vec![mib(rss0)],
        ),
        Figure::alone(
            "idle_rss_n_mib",
            format!("server RSS, {n} idle tunnels"),
            "MiB",
            vec![mib(rss_n)],
        ),
    ]);
    Ok(())
}
