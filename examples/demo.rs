//! One command to see the tunnel work: `cargo run --release --example demo`.
//!
//! Starts, in one process, a tunnel server in dev mode (loopback only, a generated API key), a
//! small local service (it echoes every request it receives as JSON, and echoes WebSocket
//! messages at `/ws`), and a tunnel client exposing that service. Then it prints the public
//! URL and commands to try, and runs until Ctrl-C.
//!
//! `TUNNEL_BIND` picks the server's address (default 127.0.0.1:8989).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tunnel_client::Status;
use tunnel_e2e::backend::Backend;
use tunnel_server::{AppState, Settings};

/// The error for an address the demo cannot listen on: the address, and the setting that
/// moves it (a tunnel-server started with the README's first command holds 127.0.0.1:8989).
fn cannot_listen(bind: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let mut other = bind;
    other.set_port(bind.port().wrapping_add(1).max(1));
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        "is a tunnel-server already running there? Stop it, or move the demo"
    } else {
        "move the demo"
    };
    anyhow::anyhow!("cannot listen on {bind}: {e} ({hint} with TUNNEL_BIND={other})")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind: SocketAddr = std::env::var("TUNNEL_BIND")
        .unwrap_or_else(|_| "127.0.0.1:8989".into())
        .parse()?;
    anyhow::ensure!(
        bind.ip().is_loopback(),
        "the demo only binds loopback addresses"
    );
    let settings = Settings::parse_from(["tunnel-server", "--bind", &bind.to_string()])?;
    let key = settings.generated_key.clone().unwrap_or_default();
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| cannot_listen(bind, e))?;
    let state = Arc::new(AppState::new(settings, listener.local_addr()?));
    let server = tokio::spawn(tunnel_server::run(listener, state.clone()));

    let backend = Backend::start("demo").await;
    let cfg = tunnel_e2e::client_config(bind, &key, backend.addr.port(), &["--name", "demo"])
        .map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = watch::channel(Status::Starting);
    let client = tokio::spawn(tunnel_client::run(cfg, shutdown.clone(), tx));
    let online = tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| matches!(s, Status::Online { .. })),
    )
    .await??
    .clone();
    if let Status::Online { public_url, .. } = online {
        let ws = public_url.replacen("http://", "ws://", 1);
        println!("Demo running. The local service echoes what it receives.");
        println!();
        println!("  curl -s '{public_url}hello?name=world'");
        println!("  curl -s -X POST --data-binary @Cargo.toml {public_url}upload");
        println!("  websocat {ws}ws        (any WebSocket client)");
        println!();
        println!("  API key of this server: {key}");
        println!("  curl -s -H 'Authorization: Bearer {key}' http://{bind}/api/tunnels");
        println!();
        println!("Ctrl-C to stop.");
    }
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    let _ = client.await;
    state.shutdown.cancel();
    let _ = server.await;
    Ok(())
}
