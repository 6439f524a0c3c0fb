//! End-to-end: failures, authentication, reconnection, expiry and shutdown.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tunnel_client::{ClientError, Status};
use tunnel_e2e::backend::Backend;
use tunnel_e2e::http::{get, request, send, send_streaming};
use tunnel_e2e::{
    eventually, raw_tunnel_client, workspace_bin, RawWs, TestClient, TestServer, API_KEY, DEADLINE,
};
use tunnel_protocol::{ControlMessage, GoodbyeReason};

fn err_code(resp: &http::Response<bytes::Bytes>) -> String {
    resp.headers()
        .get("x-tunnel-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn api(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, server.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn local_service_down_is_a_502_that_says_so() {
    let server = TestServer::start(&[]).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there
    let client = TestClient::start(&server, port, &[]).await;
    let resp = get(server.addr, &format!("{}/x", client.prefix())).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(err_code(&resp), "local_service_unreachable");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn hanging_local_service_is_a_504_after_the_request_timeout() {
    let server = TestServer::start(&["--request-timeout-secs", "1"]).await;
    let mut backend = Backend::start("b").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let started = Instant::now();
    let resp = get(server.addr, &format!("{}/hang", client.prefix())).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(err_code(&resp), "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(backend.arrivals.recv().await.unwrap(), "/hang");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_and_offline_tunnels() {
    let server = TestServer::start(&[]).await;
    let resp = get(server.addr, "/nosuchtunnel/x").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(err_code(&resp), "tunnel_not_found");
    let created = server
        .create_tunnel(serde_json::json!({ "name": "offline" }))
        .await;
    assert_eq!(created["tunnel_id"], "offline");
    let mut req = request("GET", "/offline/x", "");
    req.headers_mut()
        .insert("accept", "application/json".parse().unwrap());
    let resp = send(server.addr, req).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(err_code(&resp), "tunnel_offline");
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body["error"]["code"], "tunnel_offline");
    // HTML for browsers.
    let mut req = request("GET", "/offline/x", "");
    req.headers_mut()
        .insert("accept", "text/html".parse().unwrap());
    let resp = send(server.addr, req).await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn control_api_round_trip() {
    let server = TestServer::start(&["--max-tunnels-per-key", "3"]).await;
    for path in ["/health", "/ready", "/api"] {
        let resp = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(server.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({ "name": "my-app", "ttl_secs": 600 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["tunnel_id"], "my-app");
    assert_eq!(
        created["public_url"],
        server.url("/my-app/").replace("127.0.0.1", "localhost")
    );
    assert!(created["websocket_url"]
        .as_str()
        .unwrap()
        .ends_with("/api/tunnel/connect/my-app"));
    assert!(created["token"].as_str().unwrap().len() >= 32);
    assert!(created["created_at"].is_string() && created["expires_at"].is_string());
    // Generated ids are DNS-label safe.
    let gen = server.create_tunnel(serde_json::json!({})).await;
    let id = gen["tunnel_id"].as_str().unwrap();
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );
    // Conflicts, bad names, quotas.
    for (body, status) in [
        (serde_json::json!({ "name": "my-app" }), 409),
        (serde_json::json!({ "name": "Bad_Name" }), 400),
        (serde_json::json!({ "name": "api" }), 400),
        (serde_json::json!({ "ttl_secs": 0 }), 400),
        (serde_json::json!({ "unknown": 1 }), 400),
    ] {
        let resp = http
            .post(server.url("/api/tunnels/create"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
    }
    server.create_tunnel(serde_json::json!({})).await;
    let resp = http
        .post(server.url("/api/tunnels/create"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // List, status, delete.
    let list: serde_json::Value = api(&server, reqwest::Method::GET, "/api/tunnels/list", API_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 3);
    let status: serde_json::Value = api(
        &server,
        reqwest::Method::GET,
        "/api/tunnels/my-app/status",
        API_KEY,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(status["connected"], false);
    assert_eq!(status["requests_served"], 0);
    let resp = api(
        &server,
        reqwest::Method::DELETE,
        "/api/tunnels/my-app",
        API_KEY,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = api(
        &server,
        reqwest::Method::GET,
        "/api/tunnels/my-app/status",
        API_KEY,
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn wrong_key_and_wrong_token_are_401_without_revealing_tunnels() {
    let server = TestServer::start(&[]).await;
    let resp = api(
        &server,
        reqwest::Method::GET,
        "/api/tunnels",
        "wrong-key-0123456789",
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = reqwest::Client::new()
        .post(server.url("/api/tunnels"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let created = server
        .create_tunnel(serde_json::json!({ "name": "secret" }))
        .await;
    let connect = |id: &str, token: &str| {
        let mut req = format!("ws://{}/api/tunnel/connect/{id}", server.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let status_of = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body().clone().unwrap_or_default(),
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected with a bad token"),
    };
    let (s1, body1) = status_of(connect("secret", "wrong-token").await);
    let (s2, body2) = status_of(connect("nosuch", "wrong-token").await);
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        body1, body2,
        "responses must not reveal whether the tunnel exists"
    );
    // The right token works.
    let token = created["token"].as_str().unwrap();
    assert!(connect("secret", token).await.is_ok());

    // A client with a wrong key stops with a clear error.
    let backend = Backend::start("b").await;
    let cfg = tunnel_e2e::client_config(
        server.addr,
        "wrong-key-0123456789",
        backend.addr.port(),
        &[],
    )
    .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(Status::Starting);
    let err = tunnel_client::run(cfg, Default::default(), tx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Api(tunnel_client::control::ApiError::Unauthorized)
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 77);
}

async fn raw_client(server: &TestServer, id: &str, token: &str, version: u32) -> RawWs {
    raw_tunnel_client(server, id, token, version).await
}

async fn next_control(ws: &mut RawWs) -> ControlMessage {
    tunnel_e2e::next_control(ws)
        .await
        .expect("connection ended")
}

#[tokio::test]
async fn version_mismatch_is_refused_with_advice() {
    let server = TestServer::start(&[]).await;
    let created = server.create_tunnel(serde_json::json!({})).await;
    let id = created["tunnel_id"].as_str().unwrap();
    let mut ws = raw_client(&server, id, created["token"].as_str().unwrap(), 999).await;
    match next_control(&mut ws).await {
        ControlMessage::Goodbye { reason, message } => {
            assert_eq!(reason, GoodbyeReason::VersionMismatch);
            assert!(message.contains("tunnel-client"), "{message}");
        }
        other => panic!("expected goodbye, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_client_replaces_the_old_one() {
    let server = TestServer::start(&[]).await;
    let created = server.create_tunnel(serde_json::json!({})).await;
    let id = created["tunnel_id"].as_str().unwrap();
    let token = created["token"].as_str().unwrap();
    let mut first = raw_client(&server, id, token, tunnel_protocol::PROTOCOL_VERSION).await;
    assert!(matches!(
        next_control(&mut first).await,
        ControlMessage::Welcome(_)
    ));
    let mut second = raw_client(&server, id, token, tunnel_protocol::PROTOCOL_VERSION).await;
    assert!(matches!(
        next_control(&mut second).await,
        ControlMessage::Welcome(_)
    ));
    match next_control(&mut first).await {
        ControlMessage::Goodbye { reason, .. } => assert_eq!(reason, GoodbyeReason::Replaced),
        other => panic!("expected goodbye, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let server = TestServer::start(&["--ping-interval-secs", "1"]).await;
    let created = server
        .create_tunnel(serde_json::json!({ "name": "silent" }))
        .await;
    let mut ws = raw_client(&server, "silent", created["token"].as_str().unwrap(), 1).await;
    assert!(matches!(
        next_control(&mut ws).await,
        ControlMessage::Welcome(_)
    ));
    // Stop reading (so no pongs go out) and wait for the server to give up on us.
    let connected = || {
        server
            .state
            .registry
            .get("silent")
            .is_some_and(|t| t.connection().is_some())
    };
    assert!(connected());
    eventually("the silent client to be dropped", || async {
        (!connected()).then_some(())
    })
    .await;
    let resp = get(server.addr, "/silent/x").await;
    assert_eq!(err_code(&resp), "tunnel_offline");
    drop(ws);
}

#[tokio::test]
async fn client_comes_back_on_the_same_url_after_a_server_restart() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("b").await;
    let mut client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let (id, url) = (client.tunnel_id.clone(), client.public_url.clone());
    assert_eq!(get(server.addr, &format!("/{id}/x")).await.status(), 200);
    let addr = server.addr;
    server.stop().await;
    client.wait_offline().await;
    let server = TestServer::start_on(addr, &[]).await;
    client.wait_online().await;
    assert_eq!(
        (client.tunnel_id.as_str(), client.public_url.as_str()),
        (id.as_str(), url.as_str())
    );
    let resp = get(server.addr, &format!("/{id}/after-restart")).await;
    assert_eq!(resp.status(), 200);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn expired_tunnels_are_removed_and_their_client_told() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("b").await;
    let client = TestClient::start(&server, backend.addr.port(), &["--ttl-secs", "1"]).await;
    let id = client.tunnel_id.clone();
    let err = client.join().await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let resp = get(server.addr, &format!("/{id}/x")).await;
    assert_eq!(resp.status(), 404);
    assert!(server.state.registry.get(&id).is_none());
}

#[tokio::test]
async fn stopping_the_client_deletes_its_tunnel() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("b").await;
    let client = TestClient::start(&server, backend.addr.port(), &["--name", "bye"]).await;
    client.stop().await.unwrap();
    assert!(server.state.registry.get("bye").is_none());
    assert_eq!(get(server.addr, "/bye/").await.status(), 404);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let server = TestServer::start(&["--shutdown-grace-secs", "15"]).await;
    let mut backend = Backend::start("b").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let addr = server.addr;
    let target = format!("{}/wait", client.prefix());
    let in_flight = tokio::spawn(async move { get(addr, &target).await });
    assert_eq!(backend.arrivals.recv().await.unwrap(), "/wait");
    server.begin_shutdown();
    // Readiness fails at once while the request is still running.
    eventually("readiness to fail", || async {
        match reqwest::get(format!("http://{addr}/ready")).await {
            Ok(r) if r.status() == 503 => Some(()),
            Err(_) => Some(()), // listener already closed: also not ready
            _ => None,
        }
    })
    .await;
    backend.hooks.release.notify_one();
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"released");
    server.join().await;
    drop(client);
}

/// Ctrl-C on the client lets the requests in flight finish before the connection closes and
/// the tunnel is deleted: the tunnel stays while one is running, requests arriving meanwhile
/// are refused (503, retry), and the tunnel is gone once the last one has its answer.
#[tokio::test]
async fn client_shutdown_drains_in_flight_requests_then_deletes_the_tunnel() {
    let server = TestServer::start(&[]).await;
    let mut backend = Backend::start("b").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let (addr, id) = (server.addr, client.tunnel_id.clone());
    let target = format!("{}/wait", client.prefix());
    let in_flight = tokio::spawn(async move { get(addr, &target).await });
    assert_eq!(backend.arrivals.recv().await.unwrap(), "/wait");

    let stopping = tokio::spawn(client.stop());
    let refused = eventually("a request during the drain to be refused", || async {
        let resp = get(addr, &format!("/{id}/")).await;
        (resp.status() == 503).then_some(resp)
    })
    .await;
    assert_eq!(err_code(&refused), "tunnel_overloaded");
    assert!(
        !stopping.is_finished(),
        "the client left with a request in flight"
    );
    assert!(
        server.state.registry.get(&id).is_some(),
        "the tunnel was deleted with a request in flight"
    );

    backend.hooks.release.notify_one();
    let resp = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"released");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        server.state.registry.get(&id).is_none(),
        "tunnel not deleted"
    );
    assert_eq!(get(addr, &format!("/{id}/")).await.status(), 404);
}

#[tokio::test]
async fn killed_client_fails_in_flight_requests_at_once() {
    let server = TestServer::start(&[]).await;
    let mut backend = Backend::start("b").await;
    let mut child = tokio::process::Command::new(workspace_bin("tunnel-client"))
        .args([
            "--server",
            &server.addr.to_string(),
            "--api-key",
            API_KEY,
            "--port",
            &backend.addr.port().to_string(),
            "--local-host",
            "127.0.0.1",
            "--name",
            "killme",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the client to connect", || async {
        server
            .state
            .registry
            .get("killme")
            .and_then(|t| t.connection())
            .map(|_| ())
    })
    .await;
    // One request streaming a body, one waiting for its head.
    let resp = send_streaming(server.addr, request("GET", "/killme/first-then-wait", "")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();
    assert_eq!(
        body.next().await.unwrap().unwrap().as_ref(),
        b"first chunk\n"
    );
    let addr = server.addr;
    let waiting = tokio::spawn(async move { get(addr, "/killme/hang").await });
    assert_eq!(backend.arrivals.recv().await.unwrap(), "/hang");

    let killed = Instant::now();
    child.kill().await.unwrap();
    // The streaming response breaks off, the waiting one gets a 502, both promptly.
    let rest = tokio::time::timeout(DEADLINE, body.next()).await.unwrap();
    assert!(matches!(rest, Some(Err(_)) | None), "{rest:?}");
    let resp = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(err_code(&resp), "client_disconnected");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    // The tunnel stays registered for the client to come back.
    let resp = get(server.addr, "/killme/x").await;
    assert_eq!(err_code(&resp), "tunnel_offline");
}
