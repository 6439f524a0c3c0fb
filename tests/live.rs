//! End-to-end: WebSockets, server-sent events and long-lived streams through the tunnel, with
//! tokio-tungstenite as the public client and an axum WebSocket service as the local one.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tunnel_e2e::backend::{pattern, Backend};
use tunnel_e2e::http::{request, send, send_streaming};
use tunnel_e2e::{TestClient, TestServer, DEADLINE};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn setup(server_args: &[&str]) -> (TestServer, Backend, TestClient) {
    let server = TestServer::start(server_args).await;
    let backend = Backend::start("live").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    (server, backend, client)
}

async fn open(
    server: &TestServer,
    client: &TestClient,
    path: &str,
) -> (Ws, http::Response<Option<Vec<u8>>>) {
    let mut req = format!("ws://{}{}{path}", server.addr, client.prefix())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat, superchat".parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let config = WebSocketConfig::default().max_message_size(Some(8 << 20));
    tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .unwrap()
    .unwrap()
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("websocket error")
}

#[tokio::test]
async fn websocket_echo_of_text_and_binary_up_to_one_mib() {
    let (server, _backend, client) = setup(&[]).await;
    let (mut ws, resp) = open(&server, &client, "/ws").await;
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    // The service saw the browser's headers.
    let seen: serde_json::Value =
        serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(seen["origin"], "https://app.example");
    assert_eq!(seen["protocol"], "chat, superchat");
    for size in [1usize, 125, 126, 65_535, 65_536, 300_000, 1 << 20] {
        let text: String = "x".repeat(size);
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(text), "text of {size}");
        let bin = pattern(size as u64, size);
        ws.send(Message::Binary(bin.clone())).await.unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::Binary(bin),
            "binary of {size}"
        );
    }
    // Ping from the public client is answered (by the local service, end to end).
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::Pong(Bytes::from_static(b"p")));
    ws.close(None).await.unwrap();
    client.stop().await.unwrap();
}

#[tokio::test]
async fn fragmented_message_passes() {
    let (server, _backend, client) = setup(&[]).await;
    let (mut ws, _) = open(&server, &client, "/ws").await;
    next(&mut ws).await; // the headers report
    ws.send(Message::Frame(Frame::message(
        Bytes::from_static(b"frag"),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        Bytes::from_static(b"mented"),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await, Message::text("fragmented"));
    client.stop().await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_websocket_sessions_through_one_tunnel() {
    let (server, _backend, client) = setup(&[]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = format!("ws://{}{}/ws", server.addr, client.prefix());
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            next(&mut ws).await;
            for j in 0..20 {
                let msg = format!("session {i} message {j}");
                ws.send(Message::text(msg.clone())).await.unwrap();
                assert_eq!(next(&mut ws).await, Message::text(msg));
            }
            ws.close(None).await.unwrap();
        }));
    }
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap();
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn close_from_either_side_reaches_the_other() {
    let (server, _backend, client) = setup(&[]).await;
    // Public client closes: the service answers the close handshake, then the stream ends.
    let (mut ws, _) = open(&server, &client, "/ws").await;
    next(&mut ws).await;
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Away,
            reason: "leaving".into(),
        },
    )))
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(WsError::ConnectionClosed)) => break,
            Some(Err(e)) => panic!("unexpected {e}"),
        }
    }
    // Service closes: the public client gets its close frame with the reason.
    let (mut ws, _) = open(&server, &client, "/ws-close").await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hi"));
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected close, got {other:?}"),
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn refused_upgrade_passes_back_as_a_normal_response() {
    let (server, _backend, client) = setup(&[]).await;
    let url = format!("ws://{}{}/ws-refuse", server.addr, client.prefix());
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.body().as_deref(), Some(&b"nope"[..]));
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    // The tunnel still works afterwards.
    let resp = send(
        server.addr,
        request("GET", &format!("{}/after", client.prefix()), ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn h2c_upgrade_is_refused_and_the_request_served_as_http1() {
    let (server, _backend, client) = setup(&[]).await;
    let mut req = request("GET", &format!("{}/plain", client.prefix()), "");
    let h = req.headers_mut();
    h.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
    h.insert("upgrade", "h2c".parse().unwrap());
    h.insert(
        "http2-settings",
        "AAMAAABkAARAAAAAAAIAAAAA".parse().unwrap(),
    );
    let resp = send(server.addr, req).await;
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !names.contains(&gone),
            "{gone} reached the service: {names:?}"
        );
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn sse_events_arrive_as_they_are_produced() {
    // The request timeout is 1 s; the stream outlives it because its head arrived in time.
    let (server, backend, client) = setup(&["--request-timeout-secs", "1"]).await;
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/sse", client.prefix()), ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    // The service is blocked before the second event: the first must already be here.
    let first = tokio::time::timeout(DEADLINE, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.as_ref(), b"data: first\n\n");
    // Outlive the request timeout: a request sent now to a route that never answers gets its
    // 504 only once a whole request timeout has passed, so the stream is older than that
    // when the second event is let through (an event to wait for, not a sleep).
    let hung = send(
        server.addr,
        request("GET", &format!("{}/hang", client.prefix()), ""),
    )
    .await;
    assert_eq!(hung.status(), 504);
    backend.hooks.release.notify_one();
    let second = tokio::time::timeout(DEADLINE, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.as_ref(), b"data: second\n\n");
    assert!(tokio::time::timeout(DEADLINE, body.next())
        .await
        .unwrap()
        .is_none());
    client.stop().await.unwrap();
}

#[tokio::test]
async fn leaving_an_sse_stream_is_seen_by_the_service() {
    let (server, backend, client) = setup(&[]).await;
    let dropped = backend.hooks.stream_dropped.notified();
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/sse-forever", client.prefix()), ""),
    )
    .await;
    let mut body = resp.into_body().into_data_stream();
    assert_eq!(
        body.next().await.unwrap().unwrap().as_ref(),
        b"data: hello\n\n"
    );
    drop(body);
    tokio::time::timeout(DEADLINE, dropped)
        .await
        .expect("the service never saw the public client leave");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_stream_is_closed_after_the_idle_timeout() {
    let (server, backend, client) = setup(&["--idle-timeout-secs", "1"]).await;
    let dropped = backend.hooks.stream_dropped.notified();
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/sse-forever", client.prefix()), ""),
    )
    .await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap().as_ref(), b"data: hello\n\n");
    // The next read fails once the stream was silent for a second.
    let rest = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
    assert!(matches!(rest, Some(Err(_)) | None), "{rest:?}");
    tokio::time::timeout(DEADLINE, dropped)
        .await
        .expect("the service was not told");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_websocket_reader_keeps_buffering_bounded() {
    // The service floods 64 MiB; the public client reads nothing for a while. Flow control
    // must hold the service back to about two windows plus socket buffers.
    let (server, backend, client) = setup(&[]).await;
    const BOUND: u64 = 24 * 1024 * 1024;
    let (mut ws, _) = open(&server, &client, "/ws-flood").await;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            backend.produced() <= BOUND,
            "service produced {} unread bytes",
            backend.produced()
        );
    }
    let mut got = 0u64;
    loop {
        match next(&mut ws).await {
            Message::Binary(b) => got += b.len() as u64,
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(got, 64 * 1024 * 1024);
    client.stop().await.unwrap();
}
