//! End-to-end: what a public client sends reaches the local service exactly, and what the
//! local service answers reaches the public client exactly, through a real server and client.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tunnel_e2e::backend::{hex, pattern, pattern_sha256, Backend};
use tunnel_e2e::http::{get, request, send, send_streaming};
use tunnel_e2e::{TestClient, TestServer};

async fn setup() -> (TestServer, Backend, TestClient) {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("b1").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    (server, backend, client)
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_method_reaches_the_local_service() {
    let (server, _backend, client) = setup().await;
    let target = format!("{}/m", client.prefix());
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "PROPFIND",
    ] {
        let resp = send(server.addr, request(method, &target, "body")).await;
        assert_eq!(resp.status(), 200, "{method}");
        let echo = json(resp.body());
        assert_eq!(echo["method"], method);
        assert_eq!(echo["target"], "/m");
        assert_eq!(echo["body_len"], 4, "{method}");
    }
    // HEAD: headers of the GET, no body.
    let resp = send(
        server.addr,
        request("HEAD", &format!("{}/bytes/1000", client.prefix()), ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "1000");
    assert!(resp.body().is_empty());
    client.stop().await.unwrap();
}

#[tokio::test]
async fn paths_and_queries_pass_byte_for_byte() {
    let (server, _backend, client) = setup().await;
    for rest in [
        "/",
        "/a%2Fb/c%20d?x=1&y=%2F&z",
        "/x//y/../z/./w",
        "/%2e%2e/%2e%2e/api/tunnels",
        "/caf%C3%A9?q=%E2%9C%93&empty=&&flag",
        "/semi;colon,comma+plus?a=b=c",
    ] {
        let resp = get(server.addr, &format!("{}{rest}", client.prefix())).await;
        assert_eq!(resp.status(), 200, "{rest}");
        assert_eq!(json(resp.body())["target"], rest);
    }
    // `/id` and `/id?q` redirect to `/id/`, keeping the query.
    let resp = get(server.addr, &format!("{}?a=1&b", client.prefix())).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("{}/?a=1&b", client.prefix())
    );
    client.stop().await.unwrap();
}

#[tokio::test]
async fn headers_are_forwarded_with_hop_by_hop_ones_removed() {
    let (server, _backend, client) = setup().await;
    let mut req = request("GET", &format!("{}/h", client.prefix()), "");
    let h = req.headers_mut();
    h.insert("x-custom", "v1".parse().unwrap());
    h.append("x-multi", "a".parse().unwrap());
    h.append("x-multi", "b".parse().unwrap());
    h.insert(
        "connection",
        "keep-alive, x-drop-me, x-forwarded-for".parse().unwrap(),
    );
    h.insert("x-drop-me", "secret".parse().unwrap());
    h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("te", "trailers".parse().unwrap());
    h.insert("proxy-authorization", "Basic eDp5".parse().unwrap());
    h.insert("x-bin", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let resp = send(server.addr, req).await;
    let echo = json(resp.body());
    assert_eq!(header(&echo, "x-custom"), ["v1"]);
    assert_eq!(header(&echo, "x-multi"), ["a", "b"]);
    assert_eq!(header(&echo, "x-bin"), ["caf\u{fffd}"]);
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(header(&echo, gone).is_empty(), "{gone} was forwarded");
    }
    // Named in Connection, so the client's value went; ours is still added.
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&echo, "x-forwarded-host"), ["tunnel.test"]);
    assert_eq!(
        header(&echo, "x-forwarded-prefix"),
        [client.prefix().as_str()]
    );
    assert_eq!(
        header(&echo, "host"),
        [format!("127.0.0.1:{}", _backend.addr.port()).as_str()]
    );
    assert_eq!(header(&echo, "x-request-id").len(), 1);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn binary_bodies_round_trip_exactly() {
    let (server, _backend, client) = setup().await;
    let body: Vec<u8> = (0..=255u8)
        .chain((0..=255u8).rev())
        .chain([0, 0, 13, 10, 0])
        .collect();
    let mut req = request("POST", &format!("{}/mirror", client.prefix()), body.clone());
    req.headers_mut()
        .insert("content-type", "application/x-binary".parse().unwrap());
    let resp = send(server.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-binary");
    assert_eq!(resp.body().as_ref(), body.as_slice());
    client.stop().await.unwrap();
}

#[tokio::test]
async fn sixty_four_mib_both_ways_hash_equal() {
    let (server, _backend, client) = setup().await;
    const SIZE: u64 = 64 * 1024 * 1024;
    // Download, streamed and hashed as it arrives.
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/bytes/{SIZE}", client.prefix()), ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            h.update(&data);
        }
    }
    assert_eq!(len, SIZE);
    assert_eq!(hex(&h.finalize()), pattern_sha256(SIZE));

    // Upload, streamed from a generator (chunked, no Content-Length).
    let chunks = futures_util::stream::iter(
        (0..SIZE / (1 << 20)).map(|i| Ok::<_, std::io::Error>(pattern(i << 20, 1 << 20))),
    );
    let resp = reqwest::Client::new()
        .post(server.url(&format!("{}/upload", client.prefix())))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["len"], SIZE);
    assert_eq!(v["sha256"], pattern_sha256(SIZE));
    client.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_over_three_tunnels_never_cross() {
    let server = TestServer::start(&[]).await;
    let mut tunnels = Vec::new();
    for label in ["one", "two", "three"] {
        let backend = Backend::start(label).await;
        let client = TestClient::start(&server, backend.addr.port(), &[]).await;
        tunnels.push((label, backend, client));
    }
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (label, _, client) = &tunnels[i % 3];
        let url = server.url(&format!("{}/req/{i}?n={i}", client.prefix()));
        let http = http.clone();
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            let body = format!("request-{i}");
            let resp = http.post(url).body(body.clone()).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let echo: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(
                echo["backend"],
                label.as_str(),
                "request {i} crossed tunnels"
            );
            assert_eq!(echo["target"], format!("/req/{i}?n={i}"));
            assert_eq!(echo["body_sha256"], hex(&Sha256::digest(body.as_bytes())));
        }));
    }
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap();
    }
    for (_, _, client) in tunnels {
        client.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bodiless_statuses_and_conditional_requests() {
    let (server, _backend, client) = setup().await;
    for code in [204u16, 304] {
        let resp = get(server.addr, &format!("{}/status/{code}", client.prefix())).await;
        assert_eq!(resp.status(), code);
        assert!(resp.body().is_empty());
        assert_eq!(resp.headers()["etag"], "\"v1\"");
        assert!(!resp.headers().contains_key("transfer-encoding"));
    }
    let resp = get(server.addr, &format!("{}/status/418", client.prefix())).await;
    assert_eq!(resp.status(), 418);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn cookies_stay_separate_and_redirects_stay_inside_the_tunnel() {
    let (server, _backend, client) = setup().await;
    let p = client.prefix();
    let resp = get(server.addr, &format!("{p}/cookies")).await;
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cookies,
        [
            format!("a=1; Path={p}/"),
            format!("b=2; Path={p}/; HttpOnly")
        ]
    );
    let resp = get(server.addr, &format!("{p}/redirect")).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], format!("{p}/target?a=1"));
    let resp = get(server.addr, &format!("{p}/redirect-abs")).await;
    assert_eq!(resp.headers()["location"], format!("{p}/target"));
    client.stop().await.unwrap();
}

#[tokio::test]
async fn public_client_leaving_cancels_the_stream_end_to_end() {
    let (server, backend, client) = setup().await;
    let dropped = backend.hooks.stream_dropped.notified();
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/stream", client.prefix()), ""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body); // closes the public connection mid-stream
    tokio::time::timeout(tunnel_e2e::DEADLINE, dropped)
        .await
        .expect("the local service never saw the public client leave");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_reader_keeps_buffering_bounded() {
    // 256 MiB offered, the public client reads 1 MiB and stops. Flow control must stop the
    // local service after about two windows (server + client, 1 MiB each) plus socket and
    // HTTP buffers, far below the body size.
    let (server, backend, client) = setup().await;
    const SIZE: u64 = 256 * 1024 * 1024;
    const BOUND: u64 = 24 * 1024 * 1024;
    let resp = send_streaming(
        server.addr,
        request("GET", &format!("{}/bytes/{SIZE}", client.prefix()), ""),
    )
    .await;
    let mut body = resp.into_body().into_data_stream();
    let mut read = 0u64;
    while read < 1024 * 1024 {
        read += body.next().await.unwrap().unwrap().len() as u64;
    }
    // Negative check: give the pipeline time to fill, and watch that it never passes the bound.
    for _ in 0..25 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            backend.produced() <= read + BOUND,
            "local service produced {} bytes for a reader at {read}",
            backend.produced()
        );
    }
    // And the stream still completes when the reader resumes.
    while let Some(chunk) = body.next().await {
        read += chunk.unwrap().len() as u64;
    }
    assert_eq!(read, SIZE);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_before_the_upload_is_read_reaches_the_client_intact() {
    let (server, _backend, client) = setup().await;
    let chunks = futures_util::stream::iter(
        (0..8u64).map(|i| Ok::<_, std::io::Error>(pattern(i << 20, 1 << 20))),
    );
    let resp = reqwest::Client::new()
        .post(server.url(&format!("{}/reject-upload", client.prefix())))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.text().await.unwrap(), "too big for me");
    // The tunnel is still healthy.
    let resp = get(server.addr, &format!("{}/ok", client.prefix())).await;
    assert_eq!(resp.status(), 200);
    client.stop().await.unwrap();
}
