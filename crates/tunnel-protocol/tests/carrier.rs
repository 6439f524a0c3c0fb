//! The front door's carriage of a TCP connection on a WebSocket of its own
//! ([`tunnel_protocol::carrier`]): bytes both ways, half-close, and what ends it early.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;
use tunnel_protocol::carrier::{carry_io, carry_stream, CarryError, CarryOptions};
use tunnel_protocol::mux::{self, ClientEvent, MuxConfig, Role};
use tunnel_protocol::ws::{Message, WebSocket};
use tunnel_protocol::{TcpOpen, TcpVia};

const PROMPT: Duration = Duration::from_secs(10);

fn ws_pair() -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (c, s) = tokio::io::duplex(256 * 1024);
    (
        WebSocket::new(c, Role::Client, 1 << 20),
        WebSocket::new(s, Role::Server, 1 << 20),
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// consumer app <-> carry_io (client ws) <-> carry_stream (server ws) <-> mux <-> splice <->
/// local service: the whole front-door chain in memory.
#[tokio::test]
async fn the_front_door_chain_carries_bytes_and_keeps_half_close() {
    let (client_ws, server_ws) = ws_pair();
    let (m_s, m_c) = tokio::io::duplex(1 << 20);
    let cfg = MuxConfig {
        initial_window: 64 * 1024,
        max_window: 64 * 1024,
        ..MuxConfig::default()
    };
    let (server, _goodbyes) =
        mux::start_server(WebSocket::new(m_s, Role::Server, 1 << 20), cfg.clone());
    let (_client, mut events) = mux::start_client(WebSocket::new(m_c, Role::Client, 1 << 20), cfg);
    let open = TcpOpen {
        peer: "127.0.0.1:1".parse().expect("address"),
        local: "127.0.0.1:2".parse().expect("address"),
        via: TcpVia::FrontDoor,
    };
    let (sender, response) = server.open_tcp(open).await.expect("opened");
    let Some(ClientEvent::Tcp(incoming)) = timeout(PROMPT, events.recv()).await.expect("event")
    else {
        panic!("expected a tcp stream");
    };
    let (c_sender, c_receiver) = incoming.accept().await.expect("accepted");
    let answer = timeout(PROMPT, response)
        .await
        .expect("in time")
        .expect("answer");

    let (app, app_end) = tokio::io::duplex(64 * 1024);
    let (local, local_end) = tokio::io::duplex(64 * 1024);
    // The order the real ends use: the consumer speaks first, the server waits for it.
    let consumer_opts = CarryOptions {
        ping_first: true,
        ..CarryOptions::default()
    };
    let server_opts = CarryOptions {
        wait_for_peer: true,
        ..CarryOptions::default()
    };
    let consumer = tokio::spawn(carry_io(client_ws, app_end, consumer_opts));
    let front = tokio::spawn(carry_stream(server_ws, sender, answer.body, server_opts));
    let tunnel = tokio::spawn(mux::splice(local_end, c_sender, c_receiver, None));

    let up = pattern(3 << 20, 7);
    let down = pattern(2 << 20, 9);
    let (mut app_rd, mut app_wr) = tokio::io::split(app);
    let (mut local_rd, mut local_wr) = tokio::io::split(local);
    let sent = up.clone();
    let writer = tokio::spawn(async move {
        app_wr.write_all(&sent).await.expect("write");
        app_wr.shutdown().await.expect("half-close");
        app_wr
    });
    // The consumer reads all along: the download's first part must not wait on it.
    let app_side = tokio::spawn(async move {
        let mut got = Vec::new();
        app_rd.read_to_end(&mut got).await.expect("read");
        got
    });
    // Half-close: the local service sees the end of the upload while it still writes.
    let local_side = tokio::spawn(async move {
        let mut got = Vec::new();
        local_rd.read_to_end(&mut got).await.expect("read");
        (got, local_rd)
    });
    local_wr.write_all(&down[..1 << 20]).await.expect("write");
    let (got_up, _rd) = timeout(PROMPT, local_side)
        .await
        .expect("upload ends")
        .expect("task");
    assert!(
        got_up == up,
        "public -> local: {} of {} bytes",
        got_up.len(),
        up.len()
    );
    local_wr
        .write_all(&down[1 << 20..])
        .await
        .expect("write after the peer's end");
    local_wr.shutdown().await.expect("shutdown");
    let got_down = timeout(PROMPT, app_side)
        .await
        .expect("in time")
        .expect("task");
    assert!(
        got_down == down,
        "local -> public: {} of {} bytes",
        got_down.len(),
        down.len()
    );
    let _wr = writer.await.expect("writer");
    let c = timeout(PROMPT, consumer)
        .await
        .expect("in time")
        .expect("task")
        .expect("clean");
    let f = timeout(PROMPT, front)
        .await
        .expect("in time")
        .expect("task")
        .expect("clean");
    timeout(PROMPT, tunnel)
        .await
        .expect("in time")
        .expect("task")
        .expect("clean");
    assert_eq!((c.sent, c.received), (up.len() as u64, down.len() as u64));
    assert_eq!((f.sent, f.received), (down.len() as u64, up.len() as u64));
}

#[tokio::test]
async fn a_close_before_both_ends_is_an_early_end() {
    let (client_ws, mut server_ws) = ws_pair();
    let (_app, app_end) = tokio::io::duplex(1024);
    let carried = tokio::spawn(carry_io(client_ws, app_end, CarryOptions::default()));
    server_ws.close(1000, "bye").await;
    let r = timeout(PROMPT, carried)
        .await
        .expect("in time")
        .expect("task");
    assert!(matches!(r, Err(CarryError::ClosedEarly)), "{r:?}");
}

#[tokio::test]
async fn a_text_message_is_a_violation() {
    let (client_ws, mut server_ws) = ws_pair();
    let (_app, app_end) = tokio::io::duplex(1024);
    let carried = tokio::spawn(carry_io(client_ws, app_end, CarryOptions::default()));
    server_ws.send_text("{}").await.expect("sent");
    let r = timeout(PROMPT, carried)
        .await
        .expect("in time")
        .expect("task");
    assert!(matches!(r, Err(CarryError::Protocol(_))), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn the_consumer_pings_and_the_idle_watch_ignores_pings() {
    let (client_ws, mut server_ws) = ws_pair();
    let (_app, app_end) = tokio::io::duplex(1024);
    let opts = CarryOptions {
        ping_every: Some(Duration::from_secs(20)),
        ..CarryOptions::default()
    };
    let _carried = tokio::spawn(carry_io(client_ws, app_end, opts));
    let first = timeout(Duration::from_secs(30), server_ws.reader.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Message::Ping(_))))), "{first:?}");

    let (idle_ws, _peer) = ws_pair();
    let (_app, app_end) = tokio::io::duplex(1024);
    let opts = CarryOptions {
        idle: Some(Duration::from_secs(60)),
        ..CarryOptions::default()
    };
    let r = timeout(Duration::from_secs(61), carry_io(idle_ws, app_end, opts))
        .await
        .expect("ends by itself");
    assert!(matches!(r, Err(CarryError::IdleTimeout)), "{r:?}");
}

/// The server's end holds its bytes until the consumer's first message: nothing can arrive
/// while a WebSocket library on the consumer's side still reads the handshake. (Paused time:
/// the early read's timeout fires once every task is idle, i.e. when nothing else will come.)
#[tokio::test(start_paused = true)]
async fn the_server_end_sends_nothing_before_the_consumer_spoke() {
    let (mut client_ws, server_ws) = ws_pair();
    let (mut local, local_end) = tokio::io::duplex(1024);
    let opts = CarryOptions {
        wait_for_peer: true,
        ..CarryOptions::default()
    };
    let _carried = tokio::spawn(carry_io(server_ws, local_end, opts));
    local.write_all(b"SSH-2.0-banner\r\n").await.expect("write");
    tokio::task::yield_now().await;
    let early = timeout(Duration::from_millis(50), client_ws.reader.next()).await;
    assert!(early.is_err(), "sent before the consumer spoke: {early:?}");
    client_ws.writer.ping(b"");
    client_ws.writer.flush().await.expect("flush");
    loop {
        match timeout(PROMPT, client_ws.reader.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(b))) => {
                assert_eq!(&b[..], b"SSH-2.0-banner\r\n");
                break;
            }
            Some(Ok(Message::Pong(_))) => continue,
            other => panic!("expected the banner, got {other:?}"),
        }
    }
}
