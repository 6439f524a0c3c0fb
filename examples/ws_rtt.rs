//! WebSocket echo round trip through the tunnel vs direct:
//! `cargo run --release --example ws_rtt [round_trips]`.
//!
//! Starts, in one process, a tunnel server and client on loopback and an axum WebSocket echo
//! service, then times sequential echo round trips of a 32-byte and a 64 KiB message, directly
//! and through the tunnel, interleaved in rounds, and prints medians and percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tunnel_client::Status;
use tunnel_e2e::backend::Backend;
use tunnel_server::{AppState, Settings};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.next().await; // the echo service's greeting (what it saw of the upgrade)
    Ok(ws)
}

/// Times `n` sequential round trips of `payload`.
async fn round_trips(ws: &mut Ws, payload: &Bytes, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        ws.send(Message::Binary(payload.clone())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.len() == payload.len() => break,
                Some(Ok(_)) => continue,
                other => anyhow::bail!("echo broke off: {other:?}"),
            }
        }
        times.push(started.elapsed());
    }
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let settings = Settings::parse_from([
        "tunnel-server",
        "--bind",
        "127.0.0.1:0",
        "--public-rate-per-sec",
        "0",
        "--metrics-bind",
        "off",
    ])?;
    let key = settings.generated_key.clone().unwrap_or_default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(settings, addr));
    tokio::spawn(tunnel_server::run(listener, state.clone()));
    let backend = Backend::start("rtt").await;
    let cfg = tunnel_e2e::client_config(
        addr,
        &key,
        backend.addr.port(),
        &["--name", "rtt", "--quiet"],
    )
    .map_err(anyhow::Error::msg)?;
    let (tx, mut rx) = watch::channel(Status::Starting);
    let shutdown = CancellationToken::new();
    tokio::spawn(tunnel_client::run(cfg, shutdown.clone(), tx));
    rx.wait_for(|s| matches!(s, Status::Online { .. })).await?;

    let mut direct = open(&format!("ws://{}/ws", backend.addr)).await?;
    let mut tunnel = open(&format!("ws://{addr}/rtt/ws")).await?;
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>8}",
        "payload", "direct p50", "tunnel p50", "tunnel p99", "ratio"
    );
    for size in [32usize, 64 * 1024] {
        let payload = Bytes::from(vec![7u8; size]);
        let (mut d, mut t) = (Vec::new(), Vec::new());
        for round in 0..4 {
            // Interleave, alternating which path goes first.
            if round % 2 == 0 {
                d.extend(round_trips(&mut direct, &payload, n / 4).await?);
                t.extend(round_trips(&mut tunnel, &payload, n / 4).await?);
            } else {
                t.extend(round_trips(&mut tunnel, &payload, n / 4).await?);
                d.extend(round_trips(&mut direct, &payload, n / 4).await?);
            }
        }
        d.sort();
        t.sort();
        let (dp50, tp50) = (percentile(&d, 0.5), percentile(&t, 0.5));
        println!(
            "{:<10} {:>9.1} µs {:>9.1} µs {:>9.1} µs {:>7.2}×",
            format!("{size} B"),
            dp50.as_secs_f64() * 1e6,
            tp50.as_secs_f64() * 1e6,
            percentile(&t, 0.99).as_secs_f64() * 1e6,
            tp50.as_secs_f64() / dp50.as_secs_f64()
        );
    }
    shutdown.cancel();
    Ok(())
}
