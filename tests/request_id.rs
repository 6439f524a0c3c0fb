//! End-to-end: every proxied request reaches the local service with exactly one
//! `X-Request-Id`: the public client's own when it is a plausible id, a generated one
//! otherwise. The server logs it on every line of the request, and tunnel-client shows it.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::http::send;
use tunnel_e2e::{TestClient, TestServer};

/// The `X-Request-Id` values the backend saw for a GET sent with `presented`.
async fn seen_ids(
    server: &TestServer,
    client: &TestClient,
    presented: Option<&str>,
) -> Vec<String> {
    let mut req = Request::builder()
        .uri(format!("{}/echo", client.prefix()))
        .header("host", "tunnel.test");
    if let Some(id) = presented {
        req = req.header("x-request-id", id);
    }
    let resp = send(server.addr, req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-request-id")
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[tokio::test]
async fn a_valid_request_id_is_kept_and_a_missing_one_generated() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("rid").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;

    for own in [
        "trace-42",
        "3f2a9c1b-8e4d-4c6a-9f00-1234567890ab",
        "svc:a/b+c=",
    ] {
        assert_eq!(seen_ids(&server, &client, Some(own)).await, [own]);
    }

    let first = seen_ids(&server, &client, None).await;
    let second = seen_ids(&server, &client, None).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(is_generated(&first[0]), "{first:?}");
    assert_ne!(first, second, "each request gets its own id");

    // Ids that could forge log lines or flood log storage are replaced, not forwarded.
    let long = "x".repeat(129);
    for bad in ["two words", "a\"quote", long.as_str()] {
        let seen = seen_ids(&server, &client, Some(bad)).await;
        assert_eq!(seen.len(), 1, "{bad}: {seen:?}");
        assert!(is_generated(&seen[0]), "{bad}: {seen:?}");
    }
    client.stop().await.unwrap();
    server.stop().await;
}
