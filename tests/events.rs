//! The server's live event stream: `GET /api/events` and `GET /api/tunnels/{id}/events` (API
//! key) carry a tunnel's connects, disconnects and one summary per proxied request, only to
//! the key that owns the tunnel.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use serde_json::Value;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::http::{request, send};
use tunnel_e2e::{TestClient, TestServer, API_KEY, DEADLINE};

const OTHER_KEY: &str = "other-api-key-0123456789";

struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(server: &TestServer, path: &str, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    async fn follow(server: &TestServer, path: &str) -> Self {
        let resp = Self::open(server, path, API_KEY).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event's name and data (keep-alive comments skipped).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(name), Some(data)) = (name, data) {
                    return (name.to_string(), serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.resp.chunk())
                .await
                .expect("no event in time")
                .unwrap()
                .expect("the stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn connects_requests_and_disconnects_stream_to_the_owner() {
    let server = TestServer::start(&["--api-keys", OTHER_KEY]).await;
    let backend = Backend::start("events").await;
    let mut all = Events::follow(&server, "/api/events").await;
    let client = TestClient::start(&server, backend.addr.port(), &["--name", "evented"]).await;
    let (name, connected) = all.next().await;
    assert_eq!(name, "connected");
    assert_eq!(connected["tunnel"], "evented");
    assert!(connected["agent"]
        .as_str()
        .unwrap()
        .starts_with("tunnel-client/"));

    let mut one = Events::follow(&server, "/api/tunnels/evented/events").await;
    let target = format!("{}/hello?x=1", client.prefix());
    let resp = send(server.addr, request("POST", &target, Bytes::from("hi"))).await;
    assert_eq!(resp.status(), 200);
    // The id the local service saw (the echo lists its headers).
    let echo: Value = serde_json::from_slice(resp.body()).unwrap();
    let request_id = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-request-id")
        .map(|h| h[1].clone())
        .unwrap();
    for stream in [&mut all, &mut one] {
        let (name, summary) = stream.next().await;
        assert_eq!(name, "request");
        assert_eq!(summary["tunnel"], "evented");
        assert_eq!(summary["method"], "POST");
        assert_eq!(summary["path"], "/hello");
        assert_eq!(summary["status"], 200);
        assert_eq!(summary["outcome"], "ok");
        assert_eq!(summary["request_id"], request_id);
    }

    // Another key sees none of it: not the tunnel's stream, not its events in its own.
    let theirs = Events::open(&server, "/api/tunnels/evented/events", OTHER_KEY).await;
    assert_eq!(theirs.status(), 404);
    let no_key = reqwest::get(server.url("/api/events")).await.unwrap();
    assert_eq!(no_key.status(), 401);
    let mut other = {
        let resp = Events::open(&server, "/api/events", OTHER_KEY).await;
        assert_eq!(resp.status(), 200);
        Events {
            resp,
            buf: String::new(),
        }
    };

    client.stop().await.unwrap();
    let (name, gone) = all.next().await;
    assert_eq!(name, "disconnected");
    assert_eq!(gone["tunnel"], "evented");
    // The other key's stream got nothing: a tunnel of its own shows that it is alive.
    let mine = TestClient::start_with_key(&server, backend.addr.port(), OTHER_KEY, &[]).await;
    let (name, first) = other.next().await;
    assert_eq!(name, "connected");
    assert_eq!(first["tunnel"], mine.tunnel_id.as_str());
    mine.stop().await.unwrap();
    server.stop().await;
}
