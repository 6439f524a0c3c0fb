//! TCP tunnels end to end, both ways in (a public port of TUNNEL_TCP_PORTS, the HTTP front
//! door): a real server, a real `tunnel-client tcp` and `tunnel-client connect`, and local TCP
//! services, all on port 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::tcp::consume::ConsumeError;
use tunnel_e2e::tcp::{free_port, front_door, read_hash, send_random, Consumer, TcpService};
use tunnel_e2e::{TestClient, TestServer, API_KEY, DEADLINE};

/// Bytes each way of the large transfer.
const LARGE: u64 = 100 << 20;

/// A server whose TCP tunnels get a public port of a range of `n` ports the OS has free now
/// (another program may take one meanwhile: the server then skips it).
async fn server_with_ports(n: u16, extra: &[&str]) -> TestServer {
    let first = free_port();
    let range = format!("{first}-{}", first.saturating_add(n - 1));
    let mut args = vec!["--tcp-ports", &range, "--tcp-bind-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    TestServer::start(&args).await
}

fn public_addr(server: &TestServer, id: &str) -> SocketAddr {
    let tcp = server.state.tcp.get(id).expect("a tcp tunnel");
    SocketAddr::from(([127, 0, 0, 1], tcp.port.expect("a public port")))
}

/// What the service of [`hashing_service`] read (length, hash) and the hash of what it sent.
type Hashes = ((u64, String), String);

/// A service that reads everything while it sends `len` bytes of seed 2, and reports the
/// hashes of what it read and sent.
async fn hashing_service(len: u64) -> (TcpService, tokio::sync::mpsc::Receiver<Hashes>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let service = TcpService::start(move |s| {
        let tx = tx.clone();
        async move {
            let (mut rd, mut wr) = s.into_split();
            let sending = tokio::spawn(async move { send_random(&mut wr, 2, len).await });
            let got = read_hash(&mut rd).await;
            let sent = sending.await.expect("sender");
            let _ = tx.send((got, sent)).await;
        }
    })
    .await;
    (service, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_mib_each_way_arrive_intact_both_ways_in() {
    let server = server_with_ports(4, &[]).await;
    let (service, mut received) = hashing_service(LARGE).await;
    let client = TestClient::start_tcp(&server, service.port, &[]).await;
    let took = both_ways_intact_with(public_addr(&server, &client.tunnel_id), &mut received).await;
    eprintln!("public port: 2 x 100 MiB in {took:?}");
    let consumer = Consumer::start(&server, &client.tunnel_id, API_KEY).await;
    let took = both_ways_intact_with(consumer.addr, &mut received).await;
    eprintln!("front door: 2 x 100 MiB in {took:?}");
    client.stop().await.expect("clean stop");
    server.stop().await;
}

/// Sends `LARGE` random bytes each way through `addr` at once, to the service of
/// [`hashing_service`]; both arrive hash-equal.
async fn both_ways_intact_with(
    addr: SocketAddr,
    received: &mut tokio::sync::mpsc::Receiver<Hashes>,
) -> Duration {
    let started = Instant::now();
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = socket.into_split();
    let up = tokio::spawn(async move { send_random(&mut wr, 1, LARGE).await });
    let (down_len, down_hash) = tokio::time::timeout(DEADLINE * 6, read_hash(&mut rd))
        .await
        .expect("the download in time");
    let up_hash = up.await.expect("upload");
    let ((up_len, got_up_hash), want_down) = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .expect("in time")
        .expect("the service's hashes");
    let took = started.elapsed();
    let up = (up_len, got_up_hash);
    assert_eq!(up, (LARGE, up_hash), "consumer -> service");
    let down = (down_len, down_hash);
    assert_eq!(down, (LARGE, want_down), "service -> consumer");
    took
}

/// The consumer ends its direction first; the service sees the end of input, and only then
/// answers: its bytes still arrive.
async fn half_close_through(addr: SocketAddr) {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = socket.into_split();
    wr.write_all(b"question").await.expect("write");
    wr.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, rd.read_to_end(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(answer, b"saw the end of: question; still writing".to_vec());
}

#[tokio::test]
async fn half_close_the_peer_sees_eof_while_still_writing_both_ways_in() {
    let server = server_with_ports(4, &[]).await;
    let service = TcpService::start(|mut s| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read to the end");
        // End of input seen; this direction is still open.
        s.write_all(b"saw the end of: ").await.expect("write");
        s.write_all(&got).await.expect("write");
        s.write_all(b"; still writing").await.expect("write");
        s.shutdown().await.expect("shutdown");
    })
    .await;
    let client = TestClient::start_tcp(&server, service.port, &[]).await;
    // The control API says what the tunnel carries and its public port.
    let status: serde_json::Value = reqwest::Client::new()
        .get(server.url(&format!("/api/tunnels/{}", client.tunnel_id)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let port = public_addr(&server, &client.tunnel_id).port();
    assert_eq!(status["proto"], "tcp", "{status}");
    assert_eq!(status["port"], port, "{status}");
    // The client shows the public port as its way in.
    let shown = &client.public_url;
    assert!(
        shown.starts_with("tcp://") && shown.ends_with(&format!(":{port}")),
        "{shown}"
    );
    half_close_through(public_addr(&server, &client.tunnel_id)).await;
    let consumer = Consumer::start(&server, &client.tunnel_id, API_KEY).await;
    half_close_through(consumer.addr).await;
    client.stop().await.expect("clean stop");
    server.stop().await;
}

/// `n` connections open at once through `addr`, each echoing its own bytes.
async fn many_at_once(addr: SocketAddr, n: usize) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let msg = format!("connection {i} ").repeat(200);
            s.write_all(msg.as_bytes()).await.expect("write");
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).await.expect("echo");
            assert_eq!(back, msg.as_bytes(), "connection {i}");
            // All of them open at the same time before any closes.
            barrier.wait().await;
            s.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.expect("end");
            assert!(rest.is_empty());
        }));
    }
    for t in tasks {
        tokio::time::timeout(DEADLINE, t)
            .await
            .expect("in time")
            .expect("connection task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_connections_at_once_both_ways_in() {
    let server = server_with_ports(4, &[]).await;
    let service = TcpService::echo().await;
    let client = TestClient::start_tcp(&server, service.port, &[]).await;
    many_at_once(public_addr(&server, &client.tunnel_id), 200).await;
    let consumer = Consumer::start(&server, &client.tunnel_id, API_KEY).await;
    many_at_once(consumer.addr, 200).await;
    client.stop().await.expect("clean stop");
    server.stop().await;
}

async fn create(server: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(server.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .expect("create");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test]
async fn an_exhausted_port_range_is_a_clear_error_and_a_deleted_tunnels_port_is_reused() {
    let server = server_with_ports(1, &[]).await;
    let (status, first) = create(&server, serde_json::json!({ "proto": "tcp" })).await;
    assert_eq!(status, 200, "{first}");
    let port = first["tcp"]["port"].as_u64().expect("a port") as u16;
    assert_eq!(
        first["tcp"]["address"],
        format!("localhost:{port}"),
        "{first}"
    );
    let (status, refused) = create(&server, serde_json::json!({ "proto": "tcp" })).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "tcp_ports_exhausted", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("all 1 public TCP ports"), "{message}");
    // An HTTP tunnel needs no port and is still created.
    let (status, _) = create(&server, serde_json::json!({})).await;
    assert_eq!(status, 200);

    let id = first["tunnel_id"].as_str().expect("id");
    let deleted = reqwest::Client::new()
        .delete(server.url(&format!("/api/tunnels/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let (status, again) = create(
        &server,
        serde_json::json!({ "proto": "tcp", "tcp_port": port }),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["tcp"]["port"], port, "the deleted tunnel's port");
    let (status, taken) = create(
        &server,
        serde_json::json!({ "proto": "tcp", "tcp_port": port }),
    )
    .await;
    assert_eq!((status, &taken["error"]["code"]), (409, &"conflict".into()));
    let (status, outside) = create(
        &server,
        serde_json::json!({ "proto": "tcp", "tcp_port": 1 }),
    )
    .await;
    assert_eq!(
        (status, &outside["error"]["code"]),
        (400, &"invalid_request".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_port_range_a_tcp_tunnel_has_the_front_door_only() {
    let server = TestServer::start(&[]).await;
    let service = TcpService::echo().await;
    let client = TestClient::start_tcp(&server, service.port, &[]).await;
    assert_eq!(
        server.state.tcp.get(&client.tunnel_id).expect("tcp").port,
        None
    );
    let consumer = Consumer::start(&server, &client.tunnel_id, API_KEY).await;
    many_at_once(consumer.addr, 3).await;
    let (status, refused) = create(
        &server,
        serde_json::json!({ "proto": "tcp", "tcp_port": 20000 }),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    client.stop().await.expect("clean stop");
    server.stop().await;
}

#[tokio::test]
async fn the_front_door_opens_to_the_access_token_or_the_owners_key_only() {
    let server = TestServer::start(&["--api-keys", "other-key-0123456789abcdef"]).await;
    let (status, created) = create(&server, serde_json::json!({ "proto": "tcp" })).await;
    assert_eq!(status, 200, "{created}");
    let id = created["tunnel_id"].as_str().expect("id");
    let token = created["tcp"]["access_token"].as_str().expect("token");
    assert!(created["tcp"]["connect_url"]
        .as_str()
        .is_some_and(|u| u.ends_with(&format!("/api/tunnels/{id}/tcp"))));
    let status_of = |r: Result<(), ConsumeError>| match r {
        Err(ConsumeError::Refused { status, .. }) => status,
        Ok(()) => 101,
        Err(e) => panic!("{e}"),
    };
    // No client is connected: a good credential gets as far as "offline".
    assert_eq!(status_of(front_door(&server, id, token).await), 502);
    assert_eq!(status_of(front_door(&server, id, API_KEY).await), 502);
    for wrong in ["wrong-token", "other-key-0123456789abcdef", ""] {
        assert_eq!(
            status_of(front_door(&server, id, wrong).await),
            401,
            "{wrong}"
        );
    }
    assert_eq!(status_of(front_door(&server, "no-such", token).await), 401);
    // An HTTP tunnel has no front door; its owner is told why.
    let (_, http) = create(&server, serde_json::json!({})).await;
    let http_id = http["tunnel_id"].as_str().expect("id");
    assert_eq!(status_of(front_door(&server, http_id, API_KEY).await), 400);
    server.stop().await;
}

#[tokio::test]
async fn ip_lists_and_the_connection_cap_apply() {
    let server = server_with_ports(4, &["--tcp-max-connections", "1"]).await;
    let service = TcpService::echo().await;
    let denied = TestClient::start_tcp(&server, service.port, &["--deny-ip", "127.0.0.0/8"]).await;
    let mut s = TcpStream::connect(public_addr(&server, &denied.tunnel_id))
        .await
        .expect("connect");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "a denied address is cut off: {n:?}"
    );
    match front_door(&server, &denied.tunnel_id, API_KEY).await {
        Err(ConsumeError::Refused { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    denied.stop().await.expect("clean stop");

    let capped = TestClient::start_tcp(&server, service.port, &[]).await;
    let mut first = TcpStream::connect(public_addr(&server, &capped.tunnel_id))
        .await
        .expect("connect");
    first.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    first
        .read_exact(&mut echo)
        .await
        .expect("the first connection is carried");
    match front_door(&server, &capped.tunnel_id, API_KEY).await {
        Err(ConsumeError::Refused {
            status: 503,
            message,
        }) => {
            assert!(message.contains("too many"), "{message}")
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop(first);
    capped.stop().await.expect("clean stop");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_cannot_carry_tcp_is_refused_on_a_tcp_tunnel() {
    let server = TestServer::start(&[]).await;
    let (_, created) = create(&server, serde_json::json!({ "proto": "tcp" })).await;
    let id = created["tunnel_id"].as_str().expect("id");
    let token = created["token"].as_str().expect("token");
    // A hello without features: what clients before TCP tunnels send.
    let mut ws =
        tunnel_e2e::raw_tunnel_client(&server, id, token, tunnel_protocol::PROTOCOL_VERSION).await;
    match tunnel_e2e::next_control(&mut ws).await {
        Some(tunnel_protocol::ControlMessage::Goodbye { reason, message }) => {
            assert_eq!(reason, tunnel_protocol::GoodbyeReason::VersionMismatch);
            assert!(message.contains("upgrade tunnel-client"), "{message}");
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn the_local_service_gets_a_proxy_protocol_v2_header_when_asked() {
    let server = server_with_ports(4, &[]).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let service = TcpService::start(move |mut s| {
        let tx = tx.clone();
        async move {
            // 16 bytes of fixed header, then the addresses (12 for IPv4).
            let mut head = vec![0u8; 28];
            s.read_exact(&mut head).await.expect("header");
            let header = ppp::v2::Header::try_from(head.as_slice()).map(|h| h.addresses);
            let _ = tx.send(format!("{header:?}")).await;
            let (mut rd, mut wr) = s.split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        }
    })
    .await;
    let client = TestClient::start_tcp(&server, service.port, &["--proxy-protocol"]).await;
    let public = public_addr(&server, &client.tunnel_id);
    let mut s = TcpStream::connect(public).await.expect("connect");
    let me = s.local_addr().expect("addr");
    s.write_all(b"after the header").await.expect("write");
    let mut back = [0u8; 16];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"after the header");
    let seen = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("in time")
        .expect("header");
    assert!(seen.contains("source_address: 127.0.0.1"), "{seen}");
    assert!(
        seen.contains(&format!("source_port: {}", me.port())),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("destination_port: {}", public.port())),
        "{seen}"
    );
    client.stop().await.expect("clean stop");
    server.stop().await;
}
