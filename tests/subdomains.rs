//! Subdomain routing beside path prefixes, names nobody can take over, and custom domains
//! verified through DNS: a real server, client and backend on loopback.
//!
//! Every request goes to 127.0.0.1 with the `Host` header of the name it is for; nothing
//! resolves `*.tunnels.test` or leaves loopback. The custom-domain tests start a DNS server of
//! their own on loopback ([`tunnel_e2e::dns::TestDns`]).

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::dns::TestDns;
use tunnel_e2e::http::{send, send_streaming};
use tunnel_e2e::{eventually, TestClient, TestServer, API_KEY, DEADLINE};

const DOMAIN: &str = "tunnels.test";

fn with_host(method: &str, target: &str, host: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", host)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn get_as(server: &TestServer, host: &str, target: &str) -> http::Response<Bytes> {
    send(server.addr, with_host("GET", target, host)).await
}

fn json(resp: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null)
}

fn error_code(resp: &http::Response<Bytes>) -> &str {
    resp.headers()
        .get("x-tunnel-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The header `name` as the backend's echo saw it.
fn echoed_header(echo: &serde_json::Value, name: &str) -> Option<String> {
    echo["headers"]
        .as_array()?
        .iter()
        .find_map(|h| (h[0].as_str()? == name).then(|| h[1].as_str().unwrap_or("").to_string()))
}

/// `POST /api/tunnels/create` with `key`; returns the status and the JSON answer.
async fn create_as(
    server: &TestServer,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(server.url("/api/tunnels/create"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn delete_as(server: &TestServer, key: &str, id: &str) -> u16 {
    reqwest::Client::new()
        .delete(server.url(&format!("/api/tunnels/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn start(extra: &[&str]) -> (TestServer, Backend, TestClient) {
    let mut args = vec!["--domain", DOMAIN];
    args.extend_from_slice(extra);
    let server = TestServer::start(&args).await;
    let backend = Backend::start("sub").await;
    let client = TestClient::start(&server, backend.addr.port(), &["--name", "myapp"]).await;
    (server, backend, client)
}

#[tokio::test]
async fn routing_by_host_beside_path_prefixes() {
    let (server, _backend, client) = start(&[]).await;
    let port = server.addr.port();
    assert_eq!(
        client.public_url,
        format!("http://myapp.{DOMAIN}:{port}/"),
        "the banner shows the subdomain URL by default once TUNNEL_DOMAIN is set"
    );

    // The subdomain, with port, any case, a trailing dot: every path is the tunnel's, as is.
    for host in [
        format!("myapp.{DOMAIN}:{port}"),
        format!("MyApp.Tunnels.TEST:{port}"),
        format!("myapp.{DOMAIN}."),
    ] {
        let resp = get_as(&server, &host, "/some/path?x=%2e%2e&y").await;
        assert_eq!(resp.status(), 200, "{host}");
        let echo = json(&resp);
        assert_eq!(echo["target"], "/some/path?x=%2e%2e&y", "{host}");
        assert_eq!(echoed_header(&echo, "x-forwarded-prefix"), None, "{host}");
    }
    // The server's own paths belong to the tunnel on its subdomain.
    for path in [
        "/api/tunnels",
        "/health",
        "/ready",
        "/api/openapi.json",
        "/myapp/x",
    ] {
        let resp = get_as(&server, &format!("myapp.{DOMAIN}"), path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            json(&resp)["target"],
            path,
            "{path} reaches the app unchanged"
        );
    }
    // The same tunnel under its path prefix on the apex, as before.
    let resp = get_as(&server, &format!("{DOMAIN}:{port}"), "/myapp/some/path").await;
    assert_eq!(resp.status(), 200);
    let echo = json(&resp);
    assert_eq!(echo["target"], "/some/path");
    assert_eq!(
        echoed_header(&echo, "x-forwarded-prefix").as_deref(),
        Some("/myapp")
    );
    // The apex keeps the server's own paths; so do IP addresses (probes) and no host at all.
    for host in [DOMAIN.to_string(), format!("127.0.0.1:{port}")] {
        let resp = get_as(&server, &host, "/health").await;
        assert_eq!(json(&resp)["status"], "ok", "{host}");
    }

    // Unknown, deeper and foreign names.
    let resp = get_as(&server, &format!("nosuch.{DOMAIN}"), "/").await;
    assert_eq!(
        (resp.status().as_u16(), error_code(&resp)),
        (404, "tunnel_not_found")
    );
    let html = send(
        server.addr,
        Request::builder()
            .uri("/")
            .header("host", format!("nosuch.{DOMAIN}"))
            .header("accept", "text/html")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert!(
        String::from_utf8_lossy(html.body()).contains("<h1>404"),
        "the 404 page"
    );
    let resp = get_as(&server, &format!("a.myapp.{DOMAIN}"), "/").await;
    assert_eq!(
        (resp.status().as_u16(), error_code(&resp)),
        (404, "nested_subdomain")
    );
    for host in [
        "example.org",
        "eviltunnels.test",
        "myapp.tunnels.test.evil.org",
    ] {
        let resp = get_as(&server, host, "/myapp/").await;
        assert_eq!(
            (resp.status().as_u16(), error_code(&resp)),
            (404, "unknown_host"),
            "{host}"
        );
        let resp = get_as(&server, host, "/health").await;
        assert_eq!(
            error_code(&resp),
            "unknown_host",
            "{host}: no server paths either"
        );
    }

    // Both URLs in the API.
    let status: serde_json::Value = reqwest::Client::new()
        .get(server.url("/api/tunnels/myapp/status"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["public_url"],
        format!("http://myapp.{DOMAIN}:{port}/")
    );
    assert_eq!(
        status["subdomain_url"],
        format!("http://myapp.{DOMAIN}:{port}/")
    );
    assert_eq!(status["path_url"], format!("http://{DOMAIN}:{port}/myapp/"));
    client.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn nothing_is_rewritten_on_a_subdomain() {
    let (server, _backend, client) = start(&["--url-style", "path"]).await;
    let port = server.addr.port();
    assert_eq!(
        client.public_url,
        format!("http://{DOMAIN}:{port}/myapp/"),
        "path style"
    );
    let sub = format!("myapp.{DOMAIN}:{port}");

    let resp = get_as(&server, &sub, "/redirect").await;
    assert_eq!(resp.headers()["location"], "/target?a=1");
    let resp = get_as(&server, DOMAIN, "/myapp/redirect").await;
    assert_eq!(resp.headers()["location"], "/myapp/target?a=1");

    let cookies = |r: &http::Response<Bytes>| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let resp = get_as(&server, &sub, "/cookies").await;
    assert_eq!(cookies(&resp), ["a=1; Path=/", "b=2; Path=/; HttpOnly"]);
    let resp = get_as(&server, DOMAIN, "/myapp/cookies").await;
    assert_eq!(
        cookies(&resp),
        ["a=1; Path=/myapp/", "b=2; Path=/myapp/; HttpOnly"]
    );

    let resp = get_as(&server, &sub, "/sw.js").await;
    assert_eq!(resp.headers()["service-worker-allowed"], "/");
    let resp = get_as(&server, DOMAIN, "/myapp/sw.js").await;
    assert!(!resp.headers().contains_key("service-worker-allowed"));

    // A client's own X-Forwarded-Prefix never reaches the app on a subdomain.
    let mut req = with_host("GET", "/", &sub);
    req.headers_mut()
        .insert("x-forwarded-prefix", "/spoofed".parse().unwrap());
    let echo = json(&send(server.addr, req).await);
    assert_eq!(echoed_header(&echo, "x-forwarded-prefix"), None);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host").as_deref(),
        Some(sub.as_str())
    );
    client.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn websockets_and_server_sent_events_on_a_subdomain() {
    let (server, backend, client) = start(&[]).await;
    let mut req = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", format!("myapp.{DOMAIN}").parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    // The backend first says what handshake it saw, then echoes.
    let seen = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(seen.into_text().unwrap().contains("\"origin\""));
    ws.send(Message::text("hello over a subdomain"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "hello over a subdomain"
    );
    ws.close(None).await.unwrap();
    // Read until the close handshake is done, so the session ends before the server stops.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, ws.next()).await {}
    drop(ws);

    let resp = send_streaming(
        server.addr,
        with_host("GET", "/sse", &format!("myapp.{DOMAIN}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        "data: first\n\n",
        "streamed before the end"
    );
    backend.hooks.release.notify_one();
    let second = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "data: second\n\n");
    drop(body);
    client.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn forwarded_host_is_believed_from_trusted_proxies_only() {
    for (trusted, expect_subdomain) in [(true, true), (false, false)] {
        let extra: &[&str] = if trusted {
            &["--trusted-proxies", "127.0.0.1/32"]
        } else {
            &["--trusted-proxies", "10.0.0.0/8"]
        };
        let (server, _backend, client) = start(extra).await;
        let mut req = with_host("GET", "/from-proxy/x", DOMAIN);
        req.headers_mut().insert(
            "x-forwarded-host",
            format!("myapp.{DOMAIN}").parse().unwrap(),
        );
        let resp = send(server.addr, req).await;
        if expect_subdomain {
            assert_eq!(resp.status(), 200);
            assert_eq!(json(&resp)["target"], "/from-proxy/x");
        } else {
            // Read as the apex: `/from-proxy/` is no tunnel.
            assert_eq!(error_code(&resp), "tunnel_not_found");
        }
        client.stop().await.unwrap();
        server.stop().await;
    }
}

#[tokio::test]
async fn names_stay_with_their_key_and_reservations_hold() {
    const ALICE: &str = "alice-key-0123456789";
    const BOB: &str = "bob-key-0123456789ab";
    let dir = std::env::temp_dir().join(format!("tunnel-reserved-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reserved-names");
    std::fs::write(&file, "# reserved for alice\nalices-app alice\nwww alice\n").unwrap();
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let server = TestServer::start(&[
        "--domain",
        DOMAIN,
        "--api-keys",
        &keys,
        "--reserved-names",
        file.to_str().unwrap(),
    ])
    .await;

    // A reservation: another key gets 409, its own key gets the name, even a blocked one.
    let (status, body) = create_as(&server, BOB, serde_json::json!({ "name": "alices-app" })).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("reserved"));
    assert_eq!(
        create_as(&server, ALICE, serde_json::json!({ "name": "alices-app" }))
            .await
            .0,
        200
    );
    assert_eq!(
        create_as(&server, BOB, serde_json::json!({ "name": "www" }))
            .await
            .0,
        409
    );
    assert_eq!(
        create_as(&server, ALICE, serde_json::json!({ "name": "www" }))
            .await
            .0,
        200
    );
    // Blocked names are nobody's.
    for key in [ALICE, BOB] {
        let (status, body) = create_as(&server, key, serde_json::json!({ "name": "mail" })).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked"));
    }
    // The labelled key also works written whole.
    assert_eq!(
        create_as(&server, &format!("alice:{ALICE}"), serde_json::json!({}))
            .await
            .0,
        200
    );

    // A name outlives its tunnel for the grace period: the same key may take it back, no
    // other may.
    assert_eq!(
        create_as(&server, ALICE, serde_json::json!({ "name": "shared" }))
            .await
            .0,
        200
    );
    assert_eq!(
        create_as(&server, BOB, serde_json::json!({ "name": "shared" }))
            .await
            .0,
        409
    );
    assert_eq!(delete_as(&server, ALICE, "shared").await, 200);
    let (status, body) = create_as(&server, BOB, serde_json::json!({ "name": "shared" })).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("TUNNEL_NAME_GRACE_SECS"));
    let resp = get_as(&server, &format!("shared.{DOMAIN}"), "/").await;
    assert_eq!(
        error_code(&resp),
        "tunnel_not_found",
        "a held name serves nothing"
    );
    assert_eq!(
        create_as(&server, ALICE, serde_json::json!({ "name": "shared" }))
            .await
            .0,
        200
    );
    server.stop().await;

    // Without a grace period the name is free at once.
    let server = TestServer::start(&["--api-keys", &keys, "--name-grace-secs", "0"]).await;
    assert_eq!(
        create_as(&server, ALICE, serde_json::json!({ "name": "shared" }))
            .await
            .0,
        200
    );
    assert_eq!(delete_as(&server, ALICE, "shared").await, 200);
    assert_eq!(
        create_as(&server, BOB, serde_json::json!({ "name": "shared" }))
            .await
            .0,
        200
    );
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn verify(server: &TestServer, id: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(server.url(&format!("/api/tunnels/{id}/domain/verify")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn custom_domains_route_only_while_their_txt_record_is_right() {
    const CUSTOM: &str = "app.customer.test";
    let dns = TestDns::start().await;
    let resolver = dns.addr.to_string();
    let server = TestServer::start(&[
        "--domain",
        DOMAIN,
        "--dns-resolver",
        &resolver,
        "--domain-recheck-secs",
        "1",
    ])
    .await;
    let backend = Backend::start("custom").await;
    let client = TestClient::start(
        &server,
        backend.addr.port(),
        &["--name", "mine", "--domain", CUSTOM],
    )
    .await;
    let routed =
        |resp: &http::Response<Bytes>| resp.status() == 200 && json(resp)["backend"] == "custom";

    // Absent.
    let d = verify(&server, "mine").await;
    assert_eq!(
        (d["status"].as_str(), d["verified"].as_bool()),
        (Some("missing"), Some(false))
    );
    assert_eq!(d["txt_name"], format!("_tunnel.{CUSTOM}"));
    let value = d["txt_value"].as_str().unwrap().to_string();
    let resp = get_as(&server, CUSTOM, "/").await;
    assert_eq!(error_code(&resp), "unknown_host");

    // Wrong.
    dns.set_txt(
        &format!("_tunnel.{CUSTOM}"),
        &["tunnel-verify=0000", "v=spf1 -all"],
    );
    let d = verify(&server, "mine").await;
    assert_eq!(
        (d["status"].as_str(), d["verified"].as_bool()),
        (Some("mismatch"), Some(false))
    );
    assert_eq!(
        error_code(&get_as(&server, CUSTOM, "/").await),
        "unknown_host"
    );

    // Right (beside other TXT records): every path routes, as is.
    dns.set_txt(&format!("_tunnel.{CUSTOM}"), &["v=spf1 -all", &value]);
    let d = verify(&server, "mine").await;
    assert_eq!(
        (d["status"].as_str(), d["verified"].as_bool()),
        (Some("verified"), Some(true))
    );
    let resp = get_as(
        &server,
        &format!("App.Customer.Test:{}", server.addr.port()),
        "/api/x",
    )
    .await;
    assert!(routed(&resp), "{resp:?}");
    assert_eq!(json(&resp)["target"], "/api/x");

    // Another key's value does not verify another tunnel for the same domain, and the domain
    // cannot be taken while verified.
    let (status, _) = create_as(&server, API_KEY, serde_json::json!({ "domain": CUSTOM })).await;
    assert_eq!(status, 409);

    // Removed later: the periodic check (every second here) stops the routing by itself.
    dns.set_txt(&format!("_tunnel.{CUSTOM}"), &[]);
    eventually("the removed record to stop the routing", || async {
        let resp = get_as(&server, CUSTOM, "/").await;
        (error_code(&resp) == "unknown_host").then_some(())
    })
    .await;
    let status: serde_json::Value = reqwest::Client::new()
        .get(server.url("/api/tunnels/mine/status"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["custom_domain"]["status"], "missing");
    assert_eq!(status["custom_domain"]["verified"], false);

    // Put back: the periodic check routes it again without anyone asking.
    dns.set_txt(&format!("_tunnel.{CUSTOM}"), &[&value]);
    eventually("the restored record to route again", || async {
        routed(&get_as(&server, CUSTOM, "/").await).then_some(())
    })
    .await;
    // Deleting the tunnel stops the domain at once.
    client.stop().await.unwrap();
    assert_eq!(
        error_code(&get_as(&server, CUSTOM, "/").await),
        "unknown_host"
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_domains_must_be_foreign_names() {
    let server = TestServer::start(&["--domain", DOMAIN]).await;
    for bad in [
        DOMAIN,
        "x.tunnels.test",
        "localhost",
        "127.0.0.1",
        "not a domain",
    ] {
        let (status, body) =
            create_as(&server, API_KEY, serde_json::json!({ "domain": bad })).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = create_as(
        &server,
        API_KEY,
        serde_json::json!({ "domain": "App.Example.org." }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["custom_domain"]["domain"], "app.example.org");
    assert_eq!(body["custom_domain"]["txt_name"], "_tunnel.app.example.org");
    assert!(body["custom_domain"]["txt_value"]
        .as_str()
        .unwrap()
        .starts_with("tunnel-verify="));
    server.stop().await;
}

#[tokio::test]
async fn the_host_header_choice_works_on_subdomains_as_before() {
    let server = TestServer::start(&["--domain", DOMAIN]).await;
    let backend = Backend::start("hosts").await;
    let sub = format!("myapp.{DOMAIN}:{}", server.addr.port());
    for (flag, want) in [
        ("rewrite", format!("127.0.0.1:{}", backend.addr.port())),
        ("preserve", sub.clone()),
        ("fixed.internal", "fixed.internal".to_string()),
    ] {
        let client = TestClient::start(
            &server,
            backend.addr.port(),
            &["--name", "myapp", "--host-header", flag],
        )
        .await;
        let mut req = with_host("GET", "/", &sub);
        req.headers_mut()
            .insert("origin", format!("http://{sub}").parse().unwrap());
        let echo = json(&send(server.addr, req).await);
        // A same-origin Origin follows the Host the app sees (Jupyter compares them).
        let origin = if flag == "rewrite" {
            format!("http://{want}")
        } else {
            format!("http://{sub}")
        };
        assert_eq!(
            echoed_header(&echo, "host"),
            Some(want),
            "--host-header {flag}"
        );
        assert_eq!(
            echoed_header(&echo, "origin"),
            Some(origin),
            "--host-header {flag}"
        );
        assert_eq!(
            echoed_header(&echo, "x-forwarded-host").as_deref(),
            Some(sub.as_str())
        );
        client.stop().await.unwrap();
    }
    server.stop().await;
}
