//! Graceful shutdown of the pod holding a client (a rolling update): the pod tells its
//! clients to reconnect (a GOAWAY), each client connects again through the ingress to
//! another pod while its old session finishes the requests in flight there, and the new
//! claim does not cut them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tunnel_e2e::backend::Backend;
use tunnel_e2e::{eventually, TestClient};

use super::{echo, get, http, node_of, setup};

#[tokio::test]
async fn a_graceful_shutdown_moves_the_client_to_another_pod() {
    let Some(mut s) = setup("graceful_shutdown", 3, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let mut client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let id = client.tunnel_id.clone();
    s.pods[0].terminate();
    client.wait_offline().await;
    client.wait_online().await;
    assert_eq!(client.tunnel_id, id);
    assert_eq!(s.pods[0].wait().await, Some(0), "{}", s.pods[0].logs());
    let c = &s.pods[2];
    let node = node_of(c, &id).await;
    assert!(matches!(node.as_deref(), Some("b") | Some("c")), "{node:?}");
    assert_eq!(echo(c, &client, "/moved").await.status(), 200);
    client.stop().await.unwrap();
}

/// GETs through B and POSTs through C, one after another, while A (holding the client) drains:
/// the client moves make-before-break, and no request is lost or sent twice.
#[tokio::test]
async fn a_rolling_update_of_the_pod_holding_the_client_loses_no_request() {
    let Some(mut s) = setup("rolling_update", 3, &[]).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let mut client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let id = client.tunnel_id.clone();
    // Requests one after another through B (GET) and C (POST with a body) while A, which holds
    // the client, shuts down gracefully: each must succeed, none may be lost or doubled.
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = |pod: usize, post: bool| {
        let url = s.pods[pod].url(&format!("{}/echo", client.prefix()));
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = http();
            let (mut done, mut failed) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let req = match post {
                    true => http
                        .post(format!("{url}?n={done}"))
                        .body(format!("body-{done}")),
                    false => http.get(format!("{url}?n={done}")),
                };
                let resp = req.send().await.unwrap();
                let (status, code) = (resp.status(), resp.headers().get("x-tunnel-error").cloned());
                match status == 200 {
                    true => {
                        let json: serde_json::Value = resp.json().await.unwrap();
                        assert_eq!(json["target"], format!("/echo?n={done}"));
                    }
                    false => {
                        failed.push(format!("request {done} via pod {pod}: {status} {code:?}"))
                    }
                }
                done += 1;
            }
            (done, failed)
        })
    };
    let (through_b, through_c) = (traffic(1, false), traffic(2, true));
    let served = || backend.requests();
    eventually("traffic flowing", || async {
        (served() >= 20).then_some(())
    })
    .await;
    s.pods[0].terminate();
    client.wait_offline().await;
    client.wait_online().await;
    assert_eq!(client.tunnel_id, id);
    assert_eq!(s.pods[0].wait().await, Some(0), "{}", s.pods[0].logs());
    let moved = served();
    eventually("traffic through the new pod", || async {
        (served() >= moved + 20).then_some(())
    })
    .await;
    stop.cancel();
    let (b, c) = (through_b.await.unwrap(), through_c.await.unwrap());
    let failed = [b.1, c.1].concat();
    assert!(
        failed.is_empty(),
        "{failed:#?}\npod a:\n{}",
        s.pods[0].logs()
    );
    // Every request sent reached the backend once (a request in flight when `stop` was
    // cancelled has finished: the tasks send one at a time).
    assert_eq!(backend.requests(), b.0 + c.0);
    let node = node_of(&s.pods[2], &id).await;
    assert!(matches!(node.as_deref(), Some("b") | Some("c")), "{node:?}");
    client.stop().await.unwrap();
}

/// A slow request on the draining pod's session outlives the client's move: the client's new
/// session on B replaces the old one on A while the request is still in flight there, and it
/// still gets its 200 (before this, the claim closed the old session at once, cutting it).
#[tokio::test]
async fn a_request_in_flight_on_the_draining_pod_finishes_after_its_client_moved() {
    let grace = [("TUNNEL_SHUTDOWN_GRACE_SECS", "30")];
    let Some(mut s) = setup("drain_in_flight", 2, &grace).await else {
        return;
    };
    let mut backend = Backend::start("svc").await;
    let mut client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let b = &s.pods[1];
    assert_eq!(node_of(b, &client.tunnel_id).await.as_deref(), Some("a"));
    // Through B, so into A's session by the peer listener.
    let url = b.url(&format!("{}/wait", client.prefix()));
    let slow = tokio::spawn(async move { http().get(url).send().await.unwrap() });
    assert_eq!(backend.arrivals.recv().await.unwrap(), "/wait");
    s.pods[0].terminate();
    client.wait_offline().await;
    client.wait_online().await;
    let id = client.tunnel_id.clone();
    eventually("the tunnel claimed on b", || async {
        (node_of(b, &id).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    // New requests go to the new session while the old one still holds the slow one.
    assert_eq!(echo(b, &client, "/after-the-move").await.status(), 200);
    assert!(!slow.is_finished());
    backend.hooks.release.notify_one();
    let resp = slow.await.unwrap();
    let code = resp.headers().get("x-tunnel-error").cloned();
    assert_eq!(resp.status(), 200, "{code:?}");
    assert_eq!(resp.text().await.unwrap(), "released");
    // A's drain ends once the moved session has finished: well before its grace period.
    assert_eq!(s.pods[0].wait().await, Some(0), "{}", s.pods[0].logs());
    let after = get(&s.pods[1], &format!("{}/x", client.prefix())).await;
    assert_eq!(after.status(), 200);
    client.stop().await.unwrap();
}

/// Requests that enter the draining pod itself, for the tunnel whose client it holds: A
/// serves what it accepted, each request going where the client is (into its old session
/// until the client moved, then on to B; the registry asked again when the session here was
/// gone or closing before anything was sent). GETs and POSTs in a loop straight to A, each on
/// a new connection, get 200 until A's listener closes, then a transport error (connection
/// refused, which an ingress retries), never an error status (a request A read just before
/// its SIGTERM was answered 503 `server_shutting_down` before).
#[tokio::test]
async fn requests_entering_the_draining_pod_follow_their_client() {
    let grace = [("TUNNEL_SHUTDOWN_GRACE_SECS", "20")];
    let Some(mut s) = setup("drain_entering", 2, &grace).await else {
        return;
    };
    let backend = Backend::start("svc").await;
    let mut client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let id = client.tunnel_id.clone();
    let b = &s.pods[1];
    assert_eq!(node_of(b, &id).await.as_deref(), Some("a"));
    let terminated = Arc::new(AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = |task: usize, post: bool| {
        let url = s.pods[0].url(&format!("{}/echo", client.prefix()));
        let (stop, terminated) = (stop.clone(), terminated.clone());
        tokio::spawn(async move {
            // A new connection for every request: A accepts until its listener closes.
            let http = reqwest::Client::builder()
                .timeout(tunnel_e2e::DEADLINE)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let n = format!("{task}-{ok}");
                let req = match post {
                    true => http.post(format!("{url}?n={n}")).body(format!("body-{n}")),
                    false => http.get(format!("{url}?n={n}")),
                };
                let resp = match req.send().await {
                    Ok(resp) => resp,
                    // A's listener is closed: done here (an ingress sends it elsewhere).
                    Err(_) if terminated.load(Ordering::SeqCst) => break,
                    Err(e) => {
                        failed.push(format!("request {n} before the drain: {e}"));
                        break;
                    }
                };
                let (status, code) = (resp.status(), resp.headers().get("x-tunnel-error").cloned());
                if status != 200 {
                    failed.push(format!("request {n}: {status} {code:?}"));
                    continue;
                }
                let json: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(json["target"], format!("/echo?n={n}"));
                ok += 1;
            }
            (ok, failed)
        })
    };
    let tasks: Vec<_> = (0..4).map(|task| traffic(task, task % 2 == 1)).collect();
    eventually("traffic flowing", || async {
        (backend.requests() >= 20).then_some(())
    })
    .await;
    terminated.store(true, Ordering::SeqCst);
    s.pods[0].terminate();
    client.wait_offline().await;
    client.wait_online().await;
    assert_eq!(client.tunnel_id, id);
    eventually("the tunnel claimed on b", || async {
        (node_of(b, &id).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    let mut ok = 0u64;
    stop.cancel();
    let mut failed = Vec::new();
    for task in tasks {
        let (n, f) = task.await.unwrap();
        ok += n;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{failed:#?}\npod a:\n{}",
        s.pods[0].logs()
    );
    assert_eq!(s.pods[0].wait().await, Some(0), "{}", s.pods[0].logs());
    // Every request that reached the backend had its 200, and none reached it twice.
    assert_eq!(backend.requests(), ok);
    client.stop().await.unwrap();
}
