//! A raw TCP relay: the floor any two-process tunnel can reach on this machine.
//!
//! Two of these in a chain (`public → relay → relay → backend`) move the same bytes through the
//! same two extra processes and loopback hops as `tunnel-server` and `tunnel-client`, with none
//! of the work a tunnel does (HTTP parsing, routing, headers, framing, multiplexing, logs):
//! each connection is copied as is, one TCP connection per public connection, the way rathole
//! and bore carry traffic. Measured next to the tunnel, it separates what the architecture
//! costs on this machine (extra hops, context switches on shared cores) from what our code
//! costs on top.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Copy buffer per direction: large, so that the relay is as fast as a relay gets.
const BUF: usize = 64 * 1024;

/// Serves a relay to `to` on 127.0.0.1:0 (prints `listening ADDR`); runs until killed.
pub async fn main(to: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {}\n", listener.local_addr()?).as_bytes())
        .await?;
    out.flush().await?;
    loop {
        let (inbound, _) = listener.accept().await.context("accept")?;
        tokio::spawn(async move {
            // A connection that fails ends on its own; the benchmark sees the error.
            let _ = relay(inbound, to).await;
        });
    }
}

async fn relay(mut inbound: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    inbound.set_nodelay(true)?;
    let mut outbound = TcpStream::connect(to).await?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, BUF, BUF).await?;
    Ok(())
}
