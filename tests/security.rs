//! End-to-end: the server on the open internet. Bad input from public clients is sent as raw
//! bytes (where an HTTP library would refuse to), bad input from tunnel clients by a scripted
//! malicious client speaking the protocol directly; each test checks what the sender sees and
//! that the local service saw nothing it should not have.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::http::{get, raw, request, send};
use tunnel_e2e::{eventually, TestClient, TestServer, DEADLINE};
use tunnel_protocol::frame::DataFrame;
use tunnel_protocol::{ControlMessage, GoodbyeReason};

async fn setup(server_args: &[&str], client_args: &[&str]) -> (TestServer, Backend, TestClient) {
    let server = TestServer::start(server_args).await;
    let backend = Backend::start("sec").await;
    let client = TestClient::start(&server, backend.addr.port(), client_args).await;
    (server, backend, client)
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[tokio::test]
async fn smuggling_attempts_are_refused_and_never_forwarded() {
    let (server, backend, client) = setup(&[], &[]).await;
    let p = client.prefix();
    let cases: Vec<(&str, String)> = vec![
        ("CL and TE", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {p}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("TE and CL", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n")),
        ("two equal CL", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd")),
        ("two CL", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde")),
        ("CL list", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd")),
        ("CL sign", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd")),
        ("TE chunked,", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n")),
        ("TE tab before", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n")),
        ("TE tab after", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n")),
        ("TE gzip, chunked", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")),
        ("TE gzip", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd")),
        ("TE twice", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("TE on 1.0", format!("POST {p}/ HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("space before colon", format!("POST {p}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n")),
        ("obs-fold", format!("GET {p}/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")),
        ("absolute form", format!("GET http://evil.example{p}/ HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_string()),
    ];
    for (name, req) in cases {
        let started = Instant::now();
        let resp = raw(server.addr, req.as_bytes()).await;
        assert!(
            status_line(&resp).starts_with("HTTP/1.1 400"),
            "{name}: {resp}"
        );
        // `raw` reads to EOF: the server closed the connection (well before our deadline).
        assert!(started.elapsed() < DEADLINE, "{name}: connection left open");
    }
    assert_eq!(
        backend.requests(),
        0,
        "a smuggling attempt reached the local service"
    );
    client.stop().await.unwrap();
}

#[tokio::test]
async fn paths_can_never_escape_their_tunnel() {
    let server = TestServer::start(&[]).await;
    let backend_a = Backend::start("a").await;
    let backend_b = Backend::start("b").await;
    let a = TestClient::start(&server, backend_a.addr.port(), &["--name", "web"]).await;
    let b = TestClient::start(&server, backend_b.addr.port(), &["--name", "web-admin"]).await;
    for target in [
        "/web/../web-admin/x",
        "/web/%2e%2e/web-admin/x",
        "/web/%2E%2E%2Fweb-admin/x",
        "/web//web-admin/x",
        "/web/..%2fapi/tunnels",
    ] {
        let resp = get(server.addr, target).await;
        assert_eq!(resp.status(), 200, "{target}");
        let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(echo["backend"], "a", "{target} reached another tunnel");
    }
    // A prefix of another tunnel's id never catches its traffic, and vice versa.
    let resp = get(server.addr, "/web-admin/y").await;
    let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(echo["backend"], "b");
    assert_eq!(get(server.addr, "/we/y").await.status(), 404);
    assert_eq!(get(server.addr, "/web-/y").await.status(), 404);
    // Encoded ids are not ids.
    assert_eq!(get(server.addr, "/%77eb/y").await.status(), 404);
    assert_eq!(get(server.addr, "/%2e%2e/api/tunnels").await.status(), 404);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn hop_by_hop_smuggling_headers_never_reach_the_service() {
    let (server, _backend, client) = setup(&[], &[]).await;
    let req = format!(
        "GET {}/h HTTP/1.1\r\nHost: x\r\nConnection: close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Prefix\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\nProxy-Authorization: Basic eDp5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nKeep-Alive: timeout=99\r\n\r\n",
        client.prefix()
    );
    let resp = raw(server.addr, req.as_bytes()).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let get_h = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get_h("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(get_h("x-forwarded-proto"), ["http"]);
    assert_eq!(get_h("x-forwarded-prefix"), [client.prefix().as_str()]);
    for gone in [
        "proxy-authorization",
        "proxy-connection",
        "te",
        "keep-alive",
        "connection",
    ] {
        assert!(get_h(gone).is_empty(), "{gone} reached the service");
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn size_limits_answer_before_anything_is_forwarded() {
    let (server, backend, client) = setup(
        &[
            "--max-header-bytes",
            "8192",
            "--max-headers",
            "20",
            "--max-uri-bytes",
            "200",
            "--max-body-bytes",
            "1000",
        ],
        &[],
    )
    .await;
    let p = client.prefix();
    let big = format!(
        "GET {p}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(status_line(&raw(server.addr, big.as_bytes()).await).starts_with("HTTP/1.1 431"));
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET {p}/ HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert!(status_line(&raw(server.addr, many.as_bytes()).await).starts_with("HTTP/1.1 431"));
    let long = format!(
        "GET {p}/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(300)
    );
    assert!(status_line(&raw(server.addr, long.as_bytes()).await).starts_with("HTTP/1.1 414"));
    // A declared body over the limit gets 413 at once, never "100 Continue" first.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST {p}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A chunked body that grows past the limit is cut, with a 413.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 500]))),
    );
    let resp = reqwest::Client::new()
        .post(server.url(&format!("{p}/upload")))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    } // (or the connection was cut while we were still sending: also a refusal)
    assert!(
        backend.requests() <= 1,
        "only the chunked request may have started upstream"
    );
    client.stop().await.unwrap();
}

#[tokio::test]
async fn slowloris_connections_are_closed() {
    let server = TestServer::start(&["--header-read-timeout-secs", "1"]).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /x/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out))
        .await
        .expect("the server kept a slowloris connection open")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn basic_auth_protects_the_tunnel_and_is_not_forwarded() {
    let (server, backend, client) = setup(&[], &["--basic-auth", "alice:wonderland!"]).await;
    let target = format!("{}/secret", client.prefix());
    let resp = get(server.addr, &target).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let mut req = request("GET", &target, "");
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong-password");
    req.headers_mut()
        .insert("authorization", format!("Basic {wrong}").parse().unwrap());
    assert_eq!(send(server.addr, req).await.status(), 401);
    assert_eq!(backend.requests(), 0);
    let mut req = request("GET", &target, "");
    let right = base64::engine::general_purpose::STANDARD.encode("alice:wonderland!");
    req.headers_mut()
        .insert("authorization", format!("Basic {right}").parse().unwrap());
    let resp = send(server.addr, req).await;
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    let forwarded: Vec<String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect();
    assert!(!forwarded.contains(&"authorization".to_string()));
    // The API shows the tunnel is protected, never the credential.
    let status: serde_json::Value = reqwest::Client::new()
        .get(server.url(&format!("/api/tunnels/{}/status", client.tunnel_id)))
        .bearer_auth(tunnel_e2e::API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["basic_auth"], true);
    assert!(!status.to_string().contains("wonderland"));
    client.stop().await.unwrap();
}

#[tokio::test]
async fn ip_lists_use_the_real_client_address() {
    // The test's socket is 127.0.0.1, a trusted proxy here, so X-Forwarded-For names the client.
    let (server, backend, client) = setup(
        &["--trusted-proxies", "127.0.0.1/32"],
        &[
            "--allow-ip",
            "203.0.113.0/24,2001:db8::/32",
            "--deny-ip",
            "203.0.113.66",
        ],
    )
    .await;
    let target = format!("{}/x", client.prefix());
    let from = |ip: &str| {
        let mut req = request("GET", &target, "");
        req.headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
        send(server.addr, req)
    };
    assert_eq!(from("203.0.113.7").await.status(), 200);
    assert_eq!(from("2001:db8::7").await.status(), 200);
    assert_eq!(from("203.0.113.66").await.status(), 403);
    assert_eq!(from("198.51.100.1").await.status(), 403);
    // A spoofed entry left of the real one does not help.
    assert_eq!(from("203.0.113.7, 198.51.100.1").await.status(), 403);
    assert_eq!(backend.requests(), 2);
    client.stop().await.unwrap();

    // Without trust, X-Forwarded-For is ignored and the socket address (127.0.0.1) decides.
    let (server, _backend, client) = setup(&[], &["--allow-ip", "203.0.113.0/24"]).await;
    let mut req = request("GET", &format!("{}/x", client.prefix()), "");
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    assert_eq!(send(server.addr, req).await.status(), 403);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limits_answer_429_and_one_tunnel_does_not_slow_another() {
    let server =
        TestServer::start(&["--public-rate-per-sec", "5", "--api-rate-per-min", "8"]).await;
    let backend = Backend::start("r").await;
    let noisy = TestClient::start(&server, backend.addr.port(), &[]).await;
    let quiet = TestClient::start(&server, backend.addr.port(), &[]).await;
    let mut limited = None;
    for _ in 0..20 {
        let resp = get(server.addr, &format!("{}/x", noisy.prefix())).await;
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let limited = limited.expect("the noisy tunnel was never limited");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(limited.headers()["x-tunnel-error"], "rate_limited");
    assert_eq!(
        get(server.addr, &format!("{}/x", quiet.prefix()))
            .await
            .status(),
        200
    );
    // The control API is limited per address.
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = http
            .get(server.url("/api/tunnels"))
            .bearer_auth(tunnel_e2e::API_KEY)
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert!(codes.contains(&429), "{codes:?}");
    // Probes never are.
    for _ in 0..20 {
        assert_eq!(
            reqwest::get(server.url("/health")).await.unwrap().status(),
            200
        );
    }
    drop((noisy, quiet));
}

/// A tunnel client that speaks the protocol by hand, to misbehave.
struct EvilClient {
    ws: tunnel_e2e::RawWs,
}

impl EvilClient {
    async fn connect(server: &TestServer, name: &str) -> Self {
        let created = server
            .create_tunnel(serde_json::json!({ "name": name }))
            .await;
        let token = created["token"].as_str().unwrap();
        let ws = tunnel_e2e::raw_tunnel_client(server, name, token, 1).await;
        let mut me = Self { ws };
        assert!(matches!(
            me.control().await,
            Some(ControlMessage::Welcome(_))
        ));
        me
    }

    /// The next control message, or `None` once the server closed the connection.
    async fn control(&mut self) -> Option<ControlMessage> {
        tunnel_e2e::next_control(&mut self.ws).await
    }

    async fn next_request(&mut self) -> u32 {
        loop {
            match self.control().await {
                Some(ControlMessage::Request(head)) => return head.stream_id,
                Some(_) => continue,
                None => panic!("connection closed while waiting for a request"),
            }
        }
    }

    async fn send_json(&mut self, v: serde_json::Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }
}

#[tokio::test]
async fn a_malicious_tunnel_client_only_hurts_its_own_requests() {
    // A 16 KiB window: the first 64 KiB data frame past credit is a violation, however fast
    // the public side drains the stream (with a large window, read-ahead in socket buffers
    // would keep returning credit).
    let server = TestServer::start(&["--window-bytes", "16384"]).await;
    // A well-behaved tunnel next to the evil one must not notice anything.
    let backend = Backend::start("good").await;
    let good = TestClient::start(&server, backend.addr.port(), &[]).await;
    let good_target = format!("{}/ok", good.prefix());
    let mut evil = EvilClient::connect(&server, "evil").await;
    let addr = server.addr;
    let public = |target: &'static str| tokio::spawn(async move { get(addr, target).await });

    // 1. Header injection in a response head → 502, nothing injected.
    let pending = public("/evil/a");
    let id = evil.next_request().await;
    evil.send_json(
        serde_json::json!({"type": "response", "stream_id": id, "status": 200,
        "headers": [["x-evil", "a\r\nset-cookie: pwned=1"]], "end_stream": true}),
    )
    .await;
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-tunnel-error"], "invalid_client_response");
    assert!(!resp.headers().contains_key("set-cookie"));

    // 2. NUL in a header name, an invalid status, a 1xx status → 502.
    for (headers, status) in [
        (serde_json::json!([["x-\u{0}", "v"]]), 200),
        (serde_json::json!([]), 42),
        (serde_json::json!([]), 101),
        (serde_json::json!([]), 103),
    ] {
        let pending = public("/evil/b");
        let id = evil.next_request().await;
        evil.send_json(
            serde_json::json!({"type": "response", "stream_id": id, "status": status,
            "headers": headers, "end_stream": true}),
        )
        .await;
        assert_eq!(pending.await.unwrap().status(), 502, "status {status}");
    }

    // 3. A second response head for one stream: the stream fails, the connection stays.
    let pending = tokio::spawn(async move {
        tunnel_e2e::http::send_streaming(addr, request("GET", "/evil/c", "")).await
    });
    let id = evil.next_request().await;
    let head = serde_json::json!({"type": "response", "stream_id": id, "status": 200,
        "headers": [], "end_stream": false});
    evil.send_json(head.clone()).await;
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), 200);
    evil.send_json(head).await;
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(
        body.is_err(),
        "the body of a stream with two heads must fail"
    );

    // 4. Data and resets for streams it does not have are ignored.
    evil.ws
        .send(Message::Binary(
            DataFrame {
                stream_id: 999_999,
                end: false,
                payload: "x".into(),
            }
            .encode(),
        ))
        .await
        .unwrap();
    evil.send_json(serde_json::json!({"type": "reset", "stream_id": 424_242, "code": "cancelled"}))
        .await;
    evil.send_json(serde_json::json!({"type": "window", "stream_id": 424_243, "increment": 5}))
        .await;

    // 5. Data beyond the window: that stream is reset, the connection stays.
    let pending = tokio::spawn(async move {
        tunnel_e2e::http::send_streaming(addr, request("GET", "/evil/d", "")).await
    });
    let id = evil.next_request().await;
    evil.send_json(
        serde_json::json!({"type": "response", "stream_id": id, "status": 200,
        "headers": [], "end_stream": false}),
    )
    .await;
    let resp = pending.await.unwrap();
    for _ in 0..40 {
        let frame = DataFrame {
            stream_id: id,
            end: false,
            payload: vec![0u8; 64 * 1024].into(),
        };
        if evil.ws.send(Message::Binary(frame.encode())).await.is_err() {
            break;
        }
    }
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "a stream past its window must fail");
    loop {
        match evil.control().await {
            Some(ControlMessage::Reset {
                stream_id, code, ..
            }) if stream_id == id => {
                assert_eq!(code, tunnel_protocol::ResetCode::FlowControl);
                break;
            }
            Some(_) => continue,
            None => panic!("flow-control violation closed the whole connection"),
        }
    }

    // Meanwhile the good tunnel works.
    assert_eq!(get(server.addr, &good_target).await.status(), 200);

    // 6. A malformed message closes the evil connection, with a reason; in-flight requests
    //    on it fail at once; the good tunnel is untouched.
    let pending = public("/evil/e");
    evil.next_request().await;
    evil.ws.send(Message::text("{not json")).await.unwrap();
    let mut reason = None;
    while let Some(msg) = evil.control().await {
        if let ControlMessage::Goodbye { reason: r, message } = msg {
            reason = Some((r, message));
        }
    }
    let (r, message) = reason.expect("no goodbye before the close");
    assert_eq!(r, GoodbyeReason::ProtocolError);
    assert!(message.contains("malformed"), "{message}");
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(get(server.addr, &good_target).await.status(), 200);
    assert_eq!(backend.requests(), 2);
    good.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_only_that_client() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("good").await;
    let good = TestClient::start(&server, backend.addr.port(), &[]).await;
    let mut evil = EvilClient::connect(&server, "big").await;
    let huge = format!(
        r#"{{"type":"goodbye","reason":"other","message":"{}"}}"#,
        "a".repeat(2 << 20)
    );
    let _ = evil.ws.send(Message::text(huge)).await;
    eventually("the oversized client to be dropped", || async {
        let gone = server
            .state
            .registry
            .get("big")
            .is_some_and(|t| t.connection().is_none());
        gone.then_some(())
    })
    .await;
    assert_eq!(
        get(server.addr, &format!("{}/ok", good.prefix()))
            .await
            .status(),
        200
    );
    good.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_tunnel_answers_503_and_recovers() {
    let (server, mut backend, client) = setup(&["--max-streams-per-tunnel", "2"], &[]).await;
    let addr = server.addr;
    let hang = format!("{}/hang", client.prefix());
    let first = {
        let hang = hang.clone();
        tokio::spawn(async move { get(addr, &hang).await })
    };
    let second = {
        let hang = hang.clone();
        tokio::spawn(async move { get(addr, &hang).await })
    };
    backend.arrivals.recv().await.unwrap();
    backend.arrivals.recv().await.unwrap();
    let resp = get(server.addr, &format!("{}/x", client.prefix())).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-tunnel-error"], "tunnel_overloaded");
    first.abort();
    second.abort();
    // Once the public clients are gone their streams close, and the tunnel serves again.
    eventually("the tunnel to accept requests again", || async {
        (get(addr, &format!("{}/x", client.prefix())).await.status() == 200).then_some(())
    })
    .await;
    client.stop().await.unwrap();
}

#[tokio::test]
async fn client_handshakes_are_bounded_in_number_and_time() {
    let server = TestServer::start(&[
        "--max-pending-handshakes",
        "1",
        "--handshake-timeout-secs",
        "1",
    ])
    .await;
    let created = server
        .create_tunnel(serde_json::json!({ "name": "slow" }))
        .await;
    let token = created["token"].as_str().unwrap();
    // Upgrade but never say hello: holds the only handshake slot until the timeout.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/tunnel/connect/slow", server.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut silent, _) = tokio_tungstenite::connect_async(req.clone()).await.unwrap();
    match tokio_tungstenite::connect_async(req.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("a second pending handshake was accepted: {other:?}"),
    }
    // The silent one is told why and dropped after the handshake timeout.
    let mut goodbye = None;
    while let Some(Ok(msg)) =
        tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut silent))
            .await
            .unwrap()
    {
        if let Message::Text(t) = msg {
            goodbye = Some(t.to_string());
        }
    }
    assert!(goodbye.is_some_and(|g| g.contains("no hello within 1s")));
    // Then the slot is free again.
    let mut ws = tunnel_e2e::raw_tunnel_client(&server, "slow", token, 1).await;
    assert!(matches!(
        tunnel_e2e::next_control(&mut ws).await,
        Some(ControlMessage::Welcome(_))
    ));
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_back() {
    // A short head timeout, so that the client's pooled API connection (which holds the only
    // slot while the client connects) is closed quickly.
    let (server, _backend, client) = setup(
        &["--max-connections", "1", "--header-read-timeout-secs", "1"],
        &[],
    )
    .await;
    // Upgraded connections (the tunnel client's) no longer count; an idle public connection
    // now holds the only slot.
    let idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let addr = server.addr;
    let target = format!("{}/x", client.prefix());
    let mut waiting = tokio::spawn(async move { get(addr, &target).await });
    // Negative check: held back while the slot is taken.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err()
    );
    drop(idle);
    let resp = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    client.stop().await.unwrap();
}
