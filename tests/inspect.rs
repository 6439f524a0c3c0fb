//! The client's traffic inspector, end to end: requests through a real tunnel are captured
//! (methods, bodies, cut at the limit with a marker, the oldest evicted past the budget),
//! replayed byte for byte or edited to the local service, deleted; WebSocket messages and SSE
//! events are logged both ways; Host and Origin checks refuse what a web page could forge;
//! and a stalled inspector page never holds the tunnel back.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_e2e::backend::{pattern, pattern_sha256, Backend};
use tunnel_e2e::http::{raw, request, send};
use tunnel_e2e::{TestClient, TestServer, DEADLINE};

struct Setup {
    server: TestServer,
    backend: Backend,
    client: TestClient,
    api: reqwest::Client,
}

impl Setup {
    async fn start(flags: &[&str]) -> Self {
        let server = TestServer::start(&[]).await;
        let backend = Backend::start("inspect").await;
        let client = TestClient::start(&server, backend.addr.port(), flags).await;
        Self {
            server,
            backend,
            client,
            api: reqwest::Client::new(),
        }
    }

    fn inspector(&self, path: &str) -> String {
        format!("{}{path}", self.client.inspector.as_deref().unwrap())
    }

    fn inspector_addr(&self) -> std::net::SocketAddr {
        let url = self.client.inspector.as_deref().unwrap();
        url.trim_start_matches("http://").parse().unwrap()
    }

    /// A request through the tunnel; the response body.
    async fn public(&self, method: &str, path: &str, body: impl Into<Bytes>) -> (u16, Bytes) {
        let target = format!("{}{path}", self.client.prefix());
        let resp = send(self.server.addr, request(method, &target, body)).await;
        (resp.status().as_u16(), resp.into_body())
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self.api.get(self.inspector(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    async fn list(&self) -> Vec<Value> {
        let v = self.get_json("/api/requests/http").await;
        v["requests"].as_array().unwrap().clone()
    }

    /// The newest entry once it has ended (the capture ends just after the response).
    async fn newest_done(&self, count: usize) -> Vec<Value> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                // Subscribed before looking, so that no change falls in between.
                let mut events = self.events().await;
                let list = self.list().await;
                if list.len() >= count && list.iter().take(count).all(|e| e["in_flight"] == false) {
                    return list;
                }
                let _ = events.next_event().await;
            }
        })
        .await
        .expect("entries did not end in time")
    }

    async fn detail(&self, id: &str) -> Value {
        self.get_json(&format!("/api/requests/http/{id}")).await
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.api
            .post(self.inspector(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn events(&self) -> SseReader {
        let resp = self
            .api
            .get(self.inspector("/api/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        SseReader {
            resp,
            buf: String::new(),
        }
    }
}

struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// The next event's (name, data), skipping keep-alive comments.
    async fn next_event(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return (name, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.resp.chunk())
                .await
                .expect("no event in time")
                .unwrap()
                .expect("event stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// What the echo backend says it received: method, target, headers, body hash.
fn received(echo: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(echo).unwrap();
    json!([v["method"], v["target"], v["headers"], v["body_sha256"]])
}

#[tokio::test]
async fn requests_appear_live_with_methods_bodies_and_responses() {
    let s = Setup::start(&[]).await;
    let mut events = s.events().await;
    s.public("GET", "/first?x=1", Bytes::new()).await;
    let (name, data) = events.next_event().await;
    assert_eq!(name, "request");
    let first: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(first["request"]["method"], "GET");
    assert_eq!(first["request"]["uri"], "/first?x=1");

    let json_body = br#"{"event":"push","commits":[1,2]}"#;
    s.public("POST", "/hook", &json_body[..]).await;
    s.public("PUT", "/blob", pattern(0, 3000)).await;
    s.public("DELETE", "/thing/7", Bytes::new()).await;
    let list = s.newest_done(4).await;
    let methods: Vec<_> = list
        .iter()
        .map(|e| e["request"]["method"].clone())
        .collect();
    assert_eq!(
        methods,
        vec!["DELETE", "PUT", "POST", "GET"],
        "newest first"
    );
    assert!(list.iter().all(|e| e["response"]["status_code"] == 200));
    assert_eq!(list[0]["tunnel_name"], s.client.tunnel_id.as_str());

    let post = s.detail(list[2]["id"].as_str().unwrap()).await;
    assert_eq!(b64(&post["request"]["body"]["base64"]), json_body);
    assert_eq!(post["request"]["body"]["truncated_at"], Value::Null);
    assert!(post["duration"].as_u64().unwrap() > 0);
    // ngrok's `raw`: the head then the body.
    let raw_req = b64(&post["request"]["raw"]);
    assert!(raw_req.starts_with(b"POST /hook HTTP/1.1\r\n"));
    assert!(raw_req.ends_with(json_body));
    // The echo's answer (what the local service received) is the captured response.
    let echo = b64(&post["response"]["body"]["base64"]);
    let v: Value = serde_json::from_slice(&echo).unwrap();
    assert_eq!(v["method"], "POST");
    let put = s.detail(list[1]["id"].as_str().unwrap()).await;
    assert_eq!(b64(&put["request"]["body"]["base64"]), pattern(0, 3000));

    // ngrok's query parameters and the search over bodies.
    let one = s.get_json("/api/requests/http?limit=1").await;
    assert_eq!(one["requests"].as_array().unwrap().len(), 1);
    let other = s.get_json("/api/requests/http?tunnel_name=nope").await;
    assert!(other["requests"].as_array().unwrap().is_empty());
    let found = s.get_json("/api/requests/http?q=COMMITS").await;
    let found = found["requests"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["request"]["uri"], "/hook");
    let tunnels = s.get_json("/api/tunnels").await;
    assert_eq!(
        tunnels["tunnels"][0]["public_url"],
        s.client.public_url.as_str()
    );
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_past_the_limit_pass_whole_and_are_kept_cut_with_a_marker() {
    let s = Setup::start(&["--inspect-body-limit", "1KiB"]).await;
    let (status, body) = s.public("POST", "/upload", pattern(0, 100_000)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], 100_000);
    assert_eq!(
        v["sha256"],
        pattern_sha256(100_000),
        "the local service got it all"
    );
    let (_, down) = s.public("GET", "/bytes/300000", Bytes::new()).await;
    assert_eq!(down.len(), 300_000);

    let list = s.newest_done(2).await;
    let up = s.detail(list[1]["id"].as_str().unwrap()).await;
    let body = &up["request"]["body"];
    assert_eq!(body["size"], 100_000);
    assert_eq!(body["kept"], 1024);
    assert_eq!(body["truncated_at"], 1024);
    assert_eq!(b64(&body["base64"]), pattern(0, 1024));
    let dl = s.detail(list[0]["id"].as_str().unwrap()).await;
    assert_eq!(dl["response"]["body"]["truncated_at"], 1024);
    assert_eq!(dl["response"]["body"]["size"], 300_000);
    // A cut body cannot be replayed as it was.
    let id = list[1]["id"].as_str().unwrap();
    let resp = s.post("/api/requests/http", json!({ "id": id })).await;
    assert_eq!(resp.status(), 409);
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn the_oldest_entries_are_evicted_past_the_budget() {
    let s = Setup::start(&["--inspect-budget", "64KiB", "--inspect-body-limit", "8KiB"]).await;
    for i in 0..20 {
        s.public("POST", &format!("/n/{i}"), pattern(0, 8192)).await;
    }
    let list = s.newest_done(1).await;
    assert!(
        list.len() < 20 && list.len() >= 3,
        "{} entries kept",
        list.len()
    );
    assert_eq!(list[0]["request"]["uri"], "/n/19", "the newest is kept");
    let oldest_kept = list.last().unwrap()["request"]["uri"].as_str().unwrap();
    let n: usize = oldest_kept.trim_start_matches("/n/").parse().unwrap();
    assert_eq!(n, 20 - list.len(), "exactly the oldest went");
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn replay_sends_the_same_bytes_and_edits_change_only_what_was_asked() {
    let s = Setup::start(&[]).await;
    let before = s.backend.requests();
    let target = format!("{}/hook?delivery=1", s.client.prefix());
    let mut req = request("POST", &target, pattern(5, 5000));
    req.headers_mut()
        .insert("x-signature", "sha256=original".parse().unwrap());
    let original = send(s.server.addr, req).await.into_body();
    let list = s.newest_done(1).await;
    let id = list[0]["id"].as_str().unwrap().to_string();

    // As captured (ngrok's call): 204, and the local service got the same request again.
    let resp = s.post("/api/requests/http", json!({ "id": id })).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(s.backend.requests(), before + 2);
    let list = s.newest_done(2).await;
    assert_eq!(list[0]["replay_of"], id.as_str());
    let replayed = s.detail(list[0]["id"].as_str().unwrap()).await;
    let again = b64(&replayed["response"]["body"]["base64"]);
    assert_eq!(
        received(&again),
        received(&original),
        "byte-identical replay"
    );

    // Edited: a header changed, the body replaced (Content-Length follows it).
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, values) in list[1]["request"]["headers"].as_object().unwrap() {
        for v in values.as_array().unwrap() {
            let v = if name == "X-Signature" {
                "sha256=edited"
            } else {
                v.as_str().unwrap()
            };
            headers.push((name.clone(), v.to_string()));
        }
    }
    headers.push(("X-Extra".into(), "yes".into()));
    let resp = s
        .post(
            &format!("/api/requests/http/{id}/replay"),
            json!({ "method": "PUT", "path": "/other", "headers": headers, "body": "new body" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let done: Value = resp.json().await.unwrap();
    assert_eq!(done["status"], 200);
    let edited = s.detail(done["id"].as_str().unwrap()).await;
    let echo: Value = serde_json::from_slice(&b64(&edited["response"]["body"]["base64"])).unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["target"], "/other");
    assert_eq!(echo["body_len"], 8);
    let seen: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let header = |n: &str| seen.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(header("x-signature").as_deref(), Some("sha256=edited"));
    assert_eq!(header("x-extra").as_deref(), Some("yes"));
    assert_eq!(header("content-length").as_deref(), Some("8"));

    // Only paths: nothing can be aimed past the local service.
    let resp = s
        .post(
            &format!("/api/requests/http/{id}/replay"),
            json!({ "path": "http://elsewhere.example/" }),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = s.post("/api/requests/http", json!({ "id": "ffff" })).await;
    assert_eq!(resp.status(), 404);

    // Delete: everything goes.
    let resp = s
        .api
        .delete(s.inspector("/api/requests/http"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(s.list().await.is_empty());
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let s = Setup::start(&[]).await;
    let addr = s.inspector_addr();
    // DNS rebinding: a page on another name that resolves here.
    let resp = raw(
        addr,
        b"GET /api/requests/http HTTP/1.1\r\nHost: rebind.example:4040\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let resp = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("content-security-policy"), "{resp}");

    // A cross-site form post: no JSON, or another origin.
    let form = s
        .api
        .post(s.inspector("/api/requests/http"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=0000000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let delete = s
        .api
        .delete(s.inspector("/api/requests/http"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 415);
    let foreign = s
        .api
        .delete(s.inspector("/api/requests/http"))
        .header("content-type", "application/json")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let own = s
        .api
        .delete(s.inspector("/api/requests/http"))
        .header("content-type", "application/json")
        .header("origin", s.client.inspector.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 204);
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_messages_are_logged_both_ways_as_they_flow() {
    let s = Setup::start(&[]).await;
    let url = format!("ws://{}{}/ws", s.server.addr, s.client.prefix());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let greeting = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(greeting.unwrap().unwrap().is_text());
    let mut events = s.events().await;
    ws.send(Message::text("hello inspector")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello inspector")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap();
    // Four messages reach the page live: text in, its echo out, binary in, its echo out.
    let mut live = Vec::new();
    while live.len() < 4 {
        let (name, data) = events.next_event().await;
        if name == "message" {
            live.push(serde_json::from_str::<Value>(&data).unwrap());
        }
    }
    let dirs: Vec<_> = live
        .iter()
        .map(|m| m["message"]["direction"].clone())
        .collect();
    assert_eq!(dirs, vec!["in", "out", "in", "out"]);
    assert_eq!(live[0]["message"]["text"], "hello inspector");
    assert_eq!(live[2]["message"]["type"], "binary");
    assert_eq!(live[2]["message"]["base64"], "AAEC/w==");

    let id = live[0]["id"].as_str().unwrap();
    let log = s
        .get_json(&format!("/api/requests/http/{id}/messages"))
        .await;
    assert_eq!(log["kind"], "websocket");
    let msgs = log["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "greeting + 4: {msgs:?}");
    assert_eq!(msgs[0]["direction"], "out");
    assert_eq!(msgs[1]["size"], 15);
    let after = s
        .get_json(&format!("/api/requests/http/{id}/messages?after=3"))
        .await;
    assert_eq!(after["messages"].as_array().unwrap().len(), 1);
    ws.close(None).await.unwrap();
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn sse_responses_list_their_events() {
    let s = Setup::start(&[]).await;
    let target = format!("{}/sse", s.client.prefix());
    let server = s.server.addr;
    let reading =
        tokio::spawn(async move { send(server, request("GET", &target, Bytes::new())).await });
    let mut events = s.events().await;
    loop {
        let (name, data) = events.next_event().await;
        if name == "message" {
            let v: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(v["message"]["type"], "event");
            assert_eq!(v["message"]["text"], "first");
            break;
        }
    }
    s.backend.hooks.release.notify_one();
    let resp = tokio::time::timeout(DEADLINE, reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list = s.newest_done(1).await;
    assert_eq!(list[0]["kind"], "sse");
    let id = list[0]["id"].as_str().unwrap();
    let log = s
        .get_json(&format!("/api/requests/http/{id}/messages"))
        .await;
    assert_eq!(log["messages"].as_array().unwrap().len(), 2);
    s.client.stop().await.unwrap();
}

/// A browser tab that stopped reading its event stream, and a budget that is always full:
/// the tunnel carries every byte as if nothing were capturing.
#[tokio::test]
async fn a_stalled_page_and_a_full_budget_never_hold_the_tunnel_back() {
    let s = Setup::start(&["--inspect-budget", "1MiB", "--inspect-body-limit", "4KiB"]).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(s.inspector_addr()).await.unwrap();
    let host = s.inspector_addr().to_string();
    stalled
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Enough changes (three per request) to overrun the page's queue, from 8 connections.
    let big_header = "x".repeat(4000);
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let url = format!("{}n/{t}", s.client.public_url);
            let padding = big_header.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..75 {
                    let resp = http
                        .post(&url)
                        .header("x-padding", &padding)
                        .body(pattern(0, 2000))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let v: Value = resp.json().await.unwrap();
                    assert_eq!(v["body_len"], 2000);
                }
            })
        })
        .collect();
    for sender in senders {
        tokio::time::timeout(DEADLINE, sender)
            .await
            .unwrap()
            .unwrap();
    }
    let (_, down) = s.public("GET", "/bytes/2000000", Bytes::new()).await;
    assert_eq!(down.len(), 2_000_000);
    let stats = s.get_json("/api/tunnels").await;
    assert!(stats["tunnels"][0]["capture"]["evicted"].as_u64().unwrap() > 300);
    assert!(stats["tunnels"][0]["capture"]["bytes"].as_u64().unwrap() <= 1 << 20);

    // The stalled tab is still connected (it was sent what fit, and missed the rest: the
    // `lagged` event is tested in the client's unit tests, without a network).
    let mut first = [0u8; 64];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    s.client.stop().await.unwrap();
}

#[tokio::test]
async fn no_inspect_opens_nothing() {
    let s = Setup::start(&["--no-inspect"]).await;
    assert_eq!(s.client.inspector, None);
    let (status, _) = s.public("GET", "/x", Bytes::new()).await;
    assert_eq!(status, 200);
    s.client.stop().await.unwrap();
}
