//! Several pods behind one ingress sharing a registry in Redis: real `redis-server`, real
//! `tunnel-server` processes on loopback, a real client behind a small TCP load balancer (the
//! "ingress"), and the backend of the other end-to-end tests.
//!
//! Without `redis-server` every test here prints a SKIPPED line and passes (unless
//! `TUNNEL_REQUIRE_REDIS=1`, as in CI).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message;
use tunnel_e2e::backend::{hex, pattern, pattern_sha256, Backend};
use tunnel_e2e::cluster::{Balancer, Pod, Redis, PEER_SECRET};
use tunnel_e2e::{eventually, TestClient, API_KEY, DEADLINE};
use tunnel_protocol::mux::{ClientEvent, ClientMux, Goodbye, ServerMux};

#[path = "cluster/cache.rs"]
mod cache;
#[path = "cluster/drain.rs"]
mod drain;
#[path = "cluster/names.rs"]
mod names;
#[path = "cluster/rate.rs"]
mod rate;
#[path = "cluster/redis_url.rs"]
mod redis_url;
#[path = "cluster/takeover.rs"]
mod takeover;
#[path = "cluster/tcp.rs"]
mod tcp;

/// Redis, pods `a`, `b`, `c`… and the balancer in front of them (trying them in that order).
struct Setup {
    redis: Redis,
    lb: Balancer,
    pods: Vec<Pod>,
}

async fn setup(test: &str, n: usize, env: &[(&str, &str)]) -> Option<Setup> {
    let redis = Redis::start(test).await?;
    let lb = Balancer::start(Vec::new()).await;
    let public = format!("http://{}", lb.addr);
    let mut pods = Vec::new();
    for name in ["a", "b", "c"].into_iter().take(n) {
        pods.push(Pod::start(name, &redis.url(), &public, env).await);
    }
    lb.set(pods.iter().map(|p| p.addr).collect());
    Some(Setup { redis, lb, pods })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

async fn status_json(pod: &Pod, id: &str) -> serde_json::Value {
    let resp = http()
        .get(pod.url(&format!("/api/tunnels/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "status of {id} on {}", pod.name);
    resp.json().await.unwrap()
}

/// The pod the tunnel's client is on, as `pod` reports it.
async fn node_of(pod: &Pod, id: &str) -> Option<String> {
    status_json(pod, id).await["node"]
        .as_str()
        .map(str::to_string)
}

async fn echo(pod: &Pod, client: &TestClient, path: &str) -> reqwest::Response {
    get(pod, &format!("{}{path}", client.prefix())).await
}

async fn get(pod: &Pod, path: &str) -> reqwest::Response {
    http().get(pod.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn any_pod_serves_a_tunnel_whose_client_is_on_another() {
    let env = [("TUNNEL_MAX_TUNNELS_PER_KEY", "3")];
    let Some(s) = setup("any_pod_serves", 3, &env).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let (a, b, c) = (&s.pods[0], &s.pods[1], &s.pods[2]);
    assert_eq!(node_of(c, &client.tunnel_id).await.as_deref(), Some("a"));
    assert_eq!(
        client.public_url,
        format!("http://{}/{}/", s.lb.addr, client.tunnel_id)
    );

    let mut sent = 0u64;
    for (pod, method) in [
        (b, "GET"),
        (c, "POST"),
        (b, "PUT"),
        (c, "PATCH"),
        (b, "DELETE"),
        (c, "OPTIONS"),
    ] {
        let resp = http()
            .request(
                method.parse().unwrap(),
                pod.url(&format!("{}/echo?q=1", client.prefix())),
            )
            .header("x-app", "through")
            .body("payload")
            .send()
            .await
            .unwrap();
        sent += 1;
        assert_eq!(resp.status(), 200, "{method} via {}", pod.name);
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["method"], method);
        assert_eq!(json["target"], "/echo?q=1");
        let headers = json["headers"].to_string();
        assert!(
            headers.contains("x-app") && headers.contains("x-forwarded-for"),
            "{headers}"
        );
        assert!(
            !headers.contains("x-tunnel-peer") && !headers.contains(PEER_SECRET),
            "{headers}"
        );
    }
    let head = http()
        .head(b.url(&format!("{}/echo", client.prefix())))
        .send()
        .await
        .unwrap();
    sent += 1;
    assert_eq!(head.status(), 200);

    // 64 MiB each way, hash-equal.
    let size = 64u64 << 20;
    // Streamed (chunked, no Content-Length), with no overall timeout: a debug build on a busy
    // machine takes its time.
    let chunks = futures_util::stream::iter(
        (0..size >> 20).map(|i| Ok::<_, std::io::Error>(pattern(i << 20, 1 << 20))),
    );
    let up = reqwest::Client::new()
        .post(b.url(&format!("{}/upload", client.prefix())))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    sent += 1;
    let up: serde_json::Value = up.json().await.unwrap();
    assert_eq!(up["len"], size);
    assert_eq!(up["sha256"], pattern_sha256(size));
    let mut down = reqwest::Client::new()
        .get(c.url(&format!("{}/bytes/{size}", client.prefix())))
        .send()
        .await
        .unwrap();
    sent += 1;
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = down.chunk().await.unwrap() {
        got += chunk.len() as u64;
        hash.update(&chunk);
    }
    assert_eq!((got, hex(&hash.finalize())), (size, pattern_sha256(size)));

    // A WebSocket through B, an event stream through C whose first event arrives before the
    // second exists.
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}{}/ws", b.addr, client.prefix()))
            .await
            .unwrap();
    sent += 1;
    assert_eq!(resp.status(), 101);
    let _headers_report = ws.next().await.unwrap().unwrap();
    for text in ["hello", &"x".repeat(300_000)] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(text));
    }
    ws.send(Message::Binary(Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();
    let back = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::Binary(Bytes::from_static(b"\x00\x01")));
    ws.close(None).await.unwrap();
    drop(ws);
    let mut sse = http()
        .get(c.url(&format!("{}/sse", client.prefix())))
        .send()
        .await
        .unwrap();
    sent += 1;
    let first = tokio::time::timeout(DEADLINE, sse.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    backend.hooks.release.notify_one();
    let second = tokio::time::timeout(DEADLINE, sse.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
    drop(sse);

    // Each request counted once: by the pod it entered, never by the pod holding the client.
    let id = client.tunnel_id.clone();
    let counted = eventually("every request counted once", || {
        let id = id.clone();
        async move {
            let mut total = 0;
            for pod in [a, b, c] {
                total += pod.requests_counted(&id).await;
            }
            (total == sent).then_some(total)
        }
    })
    .await;
    assert_eq!(counted, sent);
    assert_eq!(
        a.requests_counted(&id).await,
        0,
        "the holding pod counts nothing"
    );
    // Any pod's status shows them, and the node.
    let served = eventually("counters flushed to redis", || async {
        let info = status_json(a, &id).await;
        (info["requests_served"].as_u64() == Some(sent)).then_some(info)
    })
    .await;
    assert_eq!(served["node"], "a");
    assert_eq!(served["connected"], true);
    let list: serde_json::Value = http()
        .get(b.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1);
    assert_eq!(list["tunnels"][0]["node"], "a");

    // Tunnels per key count across pods: the client holds one, B and C create one each.
    for pod in [b, c] {
        let resp = http()
            .post(pod.url("/api/tunnels"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "create on {}", pod.name);
    }
    let resp = http()
        .post(a.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-tunnel-error"], "quota_exceeded");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn delete_through_c_closes_the_client_on_a() {
    let Some(s) = setup("delete_through_c", 3, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let (b, c) = (&s.pods[1], &s.pods[2]);
    let prefix = client.prefix();
    assert_eq!(echo(b, &client, "/x").await.status(), 200);
    let resp = http()
        .delete(c.url(&format!("/api/tunnels/{}", client.tunnel_id)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The client, connected to A, is told by A (commanded through Redis) and gives up.
    let ended = client.join().await.unwrap_err().to_string();
    assert!(ended.contains("deleted"), "{ended}");
    let path = format!("{prefix}/x");
    let gone = eventually("the tunnel gone from every pod", || async {
        let s = get(b, &path).await.status();
        (s == 404).then_some(s)
    })
    .await;
    assert_eq!(gone, 404);
}

#[tokio::test]
async fn kill_9_a_and_the_client_comes_back_on_b_with_the_same_url() {
    let Some(mut s) = setup("kill_9", 3, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let mut client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let (id, url) = (client.tunnel_id.clone(), client.public_url.clone());
    assert_eq!(echo(&s.pods[2], &client, "/before").await.status(), 200);
    let killed = Instant::now();
    s.pods[0].kill9().await;
    // Requests through C until one succeeds again: the client reconnects through the
    // balancer (A refuses, B accepts) and claims the tunnel at once.
    let path = format!("{}/after", client.prefix());
    let c = &s.pods[2];
    let recovered = eventually("a request through C after kill -9 of A", || async {
        let resp = http().get(c.url(&path)).send().await.ok()?;
        (resp.status() == 200).then(|| killed.elapsed())
    })
    .await;
    println!(
        "recovery after kill -9 of the pod holding the client: {} ms (first successful request through another pod)",
        recovered.as_millis()
    );
    client.wait_online().await;
    assert_eq!(
        (client.tunnel_id.clone(), client.public_url.clone()),
        (id.clone(), url)
    );
    assert_eq!(node_of(c, &id).await.as_deref(), Some("b"));
    assert_eq!(echo(&s.pods[1], &client, "/on-b").await.status(), 200);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_requests_over_three_pods_and_three_tunnels_never_cross() {
    let Some(s) = setup("two_hundred", 3, &[]).await else {
        return;
    };
    let mut backends = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        // Client i lands on pod i.
        let mut order: Vec<_> = s.pods.iter().map(|p| p.addr).collect();
        order.rotate_left(i);
        s.lb.set(order);
        let backend = Backend::start(&format!("svc{i}")).await;
        clients.push(TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await);
        backends.push(backend);
    }
    for (i, client) in clients.iter().enumerate() {
        let node = node_of(&s.pods[0], &client.tunnel_id).await;
        assert_eq!(node.as_deref(), Some(["a", "b", "c"][i]));
    }
    let http = http();
    let requests = (0..200).map(|k| {
        let pod = &s.pods[k % 3];
        let t = (k / 3) % 3;
        let url = pod.url(&format!("{}/echo?k={k}", clients[t].prefix()));
        let http = http.clone();
        async move {
            let resp = http
                .post(url)
                .body(format!("body-{k}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "request {k}");
            let json: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(json["backend"], format!("svc{t}"), "request {k}");
            assert_eq!(json["target"], format!("/echo?k={k}"), "request {k}");
            let want = hex(&Sha256::digest(format!("body-{k}").as_bytes()));
            assert_eq!(json["body_sha256"], want, "request {k}");
        }
    });
    tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .unwrap();
    let served: u64 = backends.iter().map(Backend::requests).sum();
    assert_eq!(served, 200);
    for c in clients {
        c.stop().await.unwrap();
    }
}

/// `GET /ready` on `pod`: the status and the body.
async fn readiness(pod: &Pod) -> (u16, serde_json::Value) {
    let resp = get(pod, "/ready").await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// Requests through `pod` while Redis is away: each answer either a success or, fast, 503
/// `registry_unavailable`. Returns how many of each.
async fn probe(pod: &Pod, path: &str) -> (bool, Duration) {
    let start = Instant::now();
    let resp = http().get(pod.url(path)).send().await.unwrap();
    let took = start.elapsed();
    let ok = resp.status() == 200;
    if !ok {
        assert_eq!(resp.status(), 503, "{path} via {}", pod.name);
        assert_eq!(resp.headers()["x-tunnel-error"], "registry_unavailable");
    }
    (ok, took)
}

#[tokio::test]
async fn redis_down_local_tunnels_keep_serving_and_the_rest_fails_fast() {
    let Some(mut s) = setup("redis_down", 2, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let path = format!("{}/x", client.prefix());
    let (a, b) = (&s.pods[0], &s.pods[1]);
    assert_eq!(get(b, &path).await.status(), 200);
    s.redis.kill().await;
    // B's cached lookup may serve a moment longer; then it needs Redis, and says so at once.
    let b_down = eventually("B answering registry_unavailable", || async {
        let (ok, took) = probe(b, &path).await;
        (!ok).then_some(took)
    })
    .await;
    assert!(b_down < Duration::from_secs(2), "took {b_down:?}");
    for _ in 0..5 {
        let (ok, took) = probe(b, "/unknowntunnel/x").await;
        assert!(!ok && took < Duration::from_secs(2), "{took:?}");
        // The tunnel whose client is on A keeps serving there.
        assert_eq!(get(a, &path).await.status(), 200);
    }
    let start = Instant::now();
    let create = http()
        .post(a.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 503);
    assert_eq!(create.headers()["x-tunnel-error"], "registry_unavailable");
    assert!(start.elapsed() < Duration::from_secs(2));
    // Readiness: B, which holds no client, leaves the balancer; A, which serves its
    // client's tunnel still, stays in and says what it lacks.
    let (status, ready) = readiness(b).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(
        (&ready["status"], &ready["registry"]),
        (&"registry_unavailable".into(), &"unavailable".into())
    );
    let (status, ready) = readiness(a).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["registry"], "unavailable", "{ready}");
    // Back by itself once Redis is.
    s.redis.restart().await;
    eventually("B serving again", || async {
        (get(b, &path).await.status() == 200).then_some(())
    })
    .await;
    let (status, ready) = readiness(b).await;
    assert_eq!((status, &ready["registry"]), (200, &"ok".into()), "{ready}");
    let create = http()
        .post(b.url("/api/tunnels"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 200);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn redis_restarted_during_traffic() {
    let Some(mut s) = setup("redis_restart", 2, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let path = format!("{}/x", client.prefix());
    let pods = Arc::new(std::mem::take(&mut s.pods));
    let stop = Arc::new(tokio::sync::Notify::new());
    let traffic = {
        let (pods, path, stop) = (pods.clone(), path.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut unavailable) = (0u32, 0u32);
            loop {
                // A holds the client: never fails. B: success or a quick registry_unavailable.
                let local = get(&pods[0], &path).await;
                let code = local.headers().get("x-tunnel-error").cloned();
                assert_eq!(
                    local.status(),
                    200,
                    "local tunnel on A: {code:?}\n{}",
                    pods[0].logs()
                );
                let (good, took) = probe(&pods[1], &path).await;
                assert!(took < Duration::from_secs(3), "{took:?}");
                if good {
                    ok += 1
                } else {
                    unavailable += 1
                }
                if tokio::time::timeout(Duration::from_millis(5), stop.notified())
                    .await
                    .is_ok()
                {
                    return (ok, unavailable);
                }
            }
        })
    };
    s.redis.kill().await;
    s.redis.restart().await;
    let b = &pods[1];
    eventually("B serving after the restart", || async {
        (get(b, &path).await.status() == 200).then_some(())
    })
    .await;
    stop.notify_one();
    let (ok, unavailable) = traffic.await.unwrap();
    println!("through B during the Redis restart: {ok} served, {unavailable} registry_unavailable");
    assert!(ok > 0);
    // The lease is there again (renewed, or restored), and the tunnel still works everywhere.
    let id = client.tunnel_id.clone();
    let node = eventually("the lease back in Redis", || async {
        node_of(b, &id).await.filter(|n| n == "a")
    })
    .await;
    assert_eq!(node, "a");
    client.stop().await.unwrap();
}

#[tokio::test]
async fn the_peer_listener_wants_the_secret_and_a_hop_and_never_forwards() {
    let Some(s) = setup("peer_listener", 2, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let (a, b) = (&s.pods[0], &s.pods[1]);
    let peer = |pod: &Pod| format!("http://{}/x", pod.peer);
    let send = |url: String, headers: Vec<(&'static str, String)>| async move {
        let mut req = http().get(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let code = resp
            .headers()
            .get("x-tunnel-peer-error")
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status().as_u16(), code)
    };
    let id = client.tunnel_id.clone();
    let secret = ("x-tunnel-peer-auth", PEER_SECRET.to_string());
    let hop = ("x-tunnel-hop", "test".to_string());
    let tunnel = ("x-tunnel-peer-tunnel", id.clone());
    assert_eq!(
        send(peer(a), vec![tunnel.clone()]).await,
        (401, Some("unauthorized".into()))
    );
    let wrong = ("x-tunnel-peer-auth", "x".repeat(PEER_SECRET.len()));
    assert_eq!(
        send(peer(a), vec![wrong, hop.clone(), tunnel.clone()])
            .await
            .0,
        401
    );
    assert_eq!(
        send(peer(a), vec![secret.clone(), tunnel.clone()]).await.0,
        400
    );
    assert_eq!(
        send(peer(a), vec![secret.clone(), hop.clone(), tunnel.clone()]).await,
        (200, None)
    );
    // B does not hold the client: it says so instead of forwarding again.
    assert_eq!(
        send(peer(b), vec![secret.clone(), hop.clone(), tunnel.clone()]).await,
        (421, Some("not_here".into()))
    );
    // Peer headers a public client sends are not believed, nor passed on.
    let resp = http()
        .get(b.url(&format!("{}/echo", client.prefix())))
        .header("x-tunnel-peer-auth", "forged")
        .header("x-tunnel-hop", "forged")
        .header("x-tunnel-peer-tunnel", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    let headers = json["headers"].to_string();
    assert!(
        !headers.contains("forged") && !headers.contains("x-tunnel-peer"),
        "{headers}"
    );
    client.stop().await.unwrap();
}

/// A live session for a registry to claim: a multiplexer over an in-memory pipe, with the far
/// end kept alive by the returned peer.
fn session() -> (ServerMux, KeepAlive) {
    use tunnel_protocol::mux::{start_client, start_server, MuxConfig, Role};
    use tunnel_protocol::ws::WebSocket;
    let (near, far) = tokio::io::duplex(1 << 20);
    let server = start_server(
        WebSocket::new(near, Role::Server, 1 << 20),
        MuxConfig::default(),
    );
    let client = start_client(
        WebSocket::new(far, Role::Client, 1 << 20),
        MuxConfig::default(),
    );
    (
        server.0.clone(),
        KeepAlive {
            _server: server,
            _client: client,
        },
    )
}

/// Both ends of a session with their event channels: the session lives as long as this.
struct KeepAlive {
    _server: (ServerMux, Receiver<Goodbye>),
    _client: (ClientMux, Receiver<ClientEvent>),
}

#[tokio::test]
async fn a_stale_lease_of_an_old_generation_cannot_remove_the_new_one() {
    use tunnel_server::auth::{ApiKeys, SecretHash};
    use tunnel_server::tunnel::access::AccessPolicy;
    use tunnel_server::tunnel::redis::scripts;
    use tunnel_server::tunnel::registry::NewTunnel;
    use tunnel_server::tunnel::{RedisConfig, RedisRegistry, TcpRecord, TunnelRegistry};
    let Some(redis) = Redis::start("stale_lease").await else {
        return;
    };
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let pod = |node: &str| {
        let config = RedisConfig {
            url: redis.url(),
            node: node.to_string(),
            peer: format!("{node}.invalid:8990"),
            lease: Duration::from_secs(30),
            cache: Duration::from_secs(2),
            keys: ApiKeys::new(&[API_KEY.to_string()]),
            names: Default::default(),
        };
        let r = RedisRegistry::new(config, Arc::new(()), tasks.clone()).unwrap();
        r.spawn_upkeep(&tasks, stop.clone());
        r
    };
    let (ra, rb) = (pod("a"), pod("b"));
    assert!(ra.wait_connected(DEADLINE).await && rb.wait_connected(DEADLINE).await);
    let new = NewTunnel {
        owner: 0,
        name: Some("stale"),
        ttl: Duration::from_secs(60),
        max_per_key: 10,
        access: AccessPolicy::default(),
        domain: None,
        keep_prefix: true,
        tcp: Some(TcpRecord {
            access_token: SecretHash::of("door"),
            port: None,
        }),
    };
    ra.create(new).await.unwrap();
    let addr = "127.0.0.1:1".parse().unwrap();
    let ta = ra.lookup("stale").await.unwrap().unwrap();
    let (mux_a, _far_a) = session();
    let old = ra.claim(&ta, mux_a.clone(), addr).await.unwrap().generation;
    let tb = rb.lookup("stale").await.unwrap().unwrap();
    // How path-prefix requests are forwarded is the tunnel's, on every pod; so is a TCP
    // tunnel's access token.
    assert!(tb.keep_prefix);
    assert!(tb.tcp.is_some_and(|t| t.access_token_matches("door")));
    assert_eq!(
        tb.remote().map(|l| (l.node.clone(), l.generation)),
        Some(("a".into(), old))
    );
    let (mux_b, _far_b) = session();
    let new = rb.claim(&tb, mux_b.clone(), addr).await.unwrap().generation;
    assert!(new > old, "claims take ever greater generations");
    assert!(!mux_b.is_closed(), "at once: {:?}", mux_b.close_reason());

    // The old holder is told to close its session (through Redis)...
    eventually("the old session closed", || async {
        mux_a.is_closed().then_some(())
    })
    .await;
    // ...and whatever it still does with its old generation leaves the new lease alone.
    ra.release(&ta, old).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let lease = || async {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg("tunnel:l:stale")
            .query_async(&mut conn)
            .await
            .unwrap();
        (
            fields["node"].clone(),
            fields["gen"].parse::<u64>().unwrap(),
        )
    };
    assert_eq!(lease().await, ("b".to_string(), new));
    let renewed: Vec<String> = redis::Script::new(scripts::RENEW)
        .arg("a")
        .arg("a.invalid:8990")
        .arg(30_000)
        .arg("stale")
        .arg(old)
        .arg(0)
        .arg(0)
        .arg("")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    // The renewal that finds the newer claim names the newer client (from its lease), as the
    // pub/sub command does: the old client hears the same words whichever comes first.
    assert_eq!(
        renewed,
        ["replaced replaced by another client from 127.0.0.1"]
    );
    let released: i64 = redis::Script::new(scripts::RELEASE)
        .key("tunnel:l:stale")
        .arg(old)
        .arg("stale")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(released, 0);
    assert_eq!(lease().await, ("b".to_string(), new));
    assert!(!mux_b.is_closed(), "{:?}", mux_b.close_reason());
    // The holder itself renews and releases.
    assert_eq!(
        rb.relocate("stale", None, Duration::ZERO)
            .await
            .unwrap()
            .map(|t| t.connection().is_some()),
        Some(true)
    );
    rb.release(&tb, new).await.unwrap();
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("tunnel:l:stale")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(fields.is_empty(), "{fields:?}");

    // A remove (a forced take-over) leaves its words for the generation it ended, which a
    // renewal of that generation returns, even once the tunnel has been created again.
    let claimed = ra.claim(&ta, mux_a.clone(), addr).await.unwrap().generation;
    let removed: Vec<Option<String>> = redis::Script::new(scripts::REMOVE)
        .key("tunnel:t:stale")
        .key("tunnel:l:stale")
        .key("tunnel:d:stale")
        .key("tunnel:n:stale")
        .arg("stale")
        .arg(60_000)
        .arg("replaced replaced by another client from 192.0.2.9")
        .arg(0)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert!(!removed.is_empty());
    let renew = |generation: u64| {
        let mut conn = conn.clone();
        async move {
            redis::Script::new(scripts::RENEW)
                .arg("a")
                .arg("a.invalid:8990")
                .arg(30_000)
                .arg("stale")
                .arg(generation)
                .arg(0)
                .arg(0)
                .arg("")
                .invoke_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    let words = "replaced replaced by another client from 192.0.2.9";
    assert_eq!(renew(claimed).await, [words]);
    let old_words = renew(old).await;
    assert_eq!(
        old_words,
        ["deleted"],
        "an older generation is not told the newer words"
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
