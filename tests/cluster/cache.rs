//! The lookup cache across pods, isolated: every pod here believes a lookup 300 s
//! (`TUNNEL_CACHE_SECS`, a miss 150 s), far past each deadline, so whatever a pod sees of a
//! change made elsewhere within [`HINT`], it saw through the `tunnel:changed` hint, never
//! because its entry lapsed. (The custom domain's case is in `names.rs`, with the same
//! setting.)

use std::collections::HashMap;
use std::time::Duration;

use tunnel_e2e::backend::Backend;
use tunnel_e2e::{TestClient, API_KEY};

use super::names::{create, delete};
use super::{get, node_of, setup, Pod, Setup};

/// A cache lifetime no deadline here comes near.
const LONG_CACHE: [(&str, &str); 1] = [("TUNNEL_CACHE_SECS", "300")];

/// How long a hint may take to reach the other pods: a small fraction of the cache's life.
const HINT: Duration = Duration::from_secs(5);

/// The error code of an answer (`x-tunnel-error`), empty for none.
fn code(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-tunnel-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `GET path` on `pod` with `client`: the status and error code; `None` if no answer came
/// within the client's timeout.
async fn ask(client: &reqwest::Client, pod: &Pod, path: &str) -> Option<(u16, String)> {
    let resp = client.get(pod.url(path)).send().await.ok()?;
    Some((resp.status().as_u16(), code(&resp)))
}

/// `GET path` on `pod`: the status and error code.
async fn answer(pod: &Pod, path: &str) -> (u16, String) {
    let resp = get(pod, path).await;
    (resp.status().as_u16(), code(&resp))
}

/// Polls `pod` with `GET path` until it answers `want`, at most [`HINT`]. Each try waits a
/// second at most: a pod forwarding to a paused one would not answer.
async fn soon(pod: &Pod, path: &str, want: (u16, &str)) {
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let deadline = started + HINT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = ask(&quick, pod, path).await;
        if last.as_ref().is_some_and(|(s, c)| (*s, c.as_str()) == want) {
            let ms = started.elapsed().as_millis();
            println!(
                "{} answered {want:?} to {path} {ms} ms into polling",
                pod.name
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} did not answer {want:?} to {path} within {HINT:?} (a cache entry would live 300 s); \
         last: {last:?}",
        pod.name
    );
}

/// Writes tunnel `to` into Redis as a copy of tunnel `from`'s record, behind every pod's back
/// (no hint): what a pod then answers for `to` comes from its cache.
async fn copy_silently(s: &Setup, from: &str, to: &str) {
    let client = redis::Client::open(s.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("tunnel:t:{from}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!fields.is_empty(), "no record of {from}");
    let mut hset = redis::cmd("HSET");
    hset.arg(format!("tunnel:t:{to}"));
    for (k, v) in &fields {
        hset.arg(k).arg(v);
    }
    let () = hset.query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("EXPIRE")
        .arg(format!("tunnel:t:{to}"))
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_miss_cached_on_b_goes_when_the_tunnel_is_created_through_a() {
    let Some(s) = setup("cache_miss", 2, &LONG_CACHE).await else {
        return;
    };
    let (a, b) = (&s.pods[0], &s.pods[1]);
    let not_found = (404, "tunnel_not_found".to_string());
    let offline = (502, "tunnel_offline".to_string());
    let (status, body) = create(a, API_KEY, serde_json::json!({ "name": "model" })).await;
    assert_eq!(status, 200, "{body}");
    // A control miss that B is seen to believe: it is cached on B, then the control appears
    // in Redis without a hint: A, which never looked it up, finds it (a tunnel without a
    // client), B still answers from its cache. A pod keeps no answer fetched across a hint
    // or a reconnect of its subscriber (either empties the cache), so on a busy machine the
    // first control may not have been kept: then another id is tried.
    let mut control = None;
    for attempt in 0..5 {
        let id = format!("control{attempt}");
        assert_eq!(answer(b, &format!("/{id}/x")).await, not_found.clone());
        copy_silently(&s, "model", &id).await;
        assert_eq!(answer(a, &format!("/{id}/x")).await, offline);
        if answer(b, &format!("/{id}/x")).await == not_found {
            control = Some(id);
            break;
        }
        println!("{id}: B had not kept its miss (a hint or a reconnect in between); next");
    }
    let control = control.expect("B kept none of five misses (its cache is not used)");
    let control_path = format!("/{control}/x");
    // Then `later`'s miss, cached on B after the control's.
    assert_eq!(answer(b, "/later/x").await, not_found.clone());

    // A client creates `later` through A: B serves it at once.
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &["--name", "later"]).await;
    assert_eq!(node_of(a, "later").await.as_deref(), Some("a"));
    soon(b, "/later/x", (200, "")).await;
    // The control's miss, cached before `later`'s, is still believed: `later`'s went with
    // the hint, not with age.
    assert_eq!(answer(b, &control_path).await, not_found);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_delete_through_a_reaches_b_at_once_with_the_client_pod_paused() {
    let Some(s) = setup("cache_delete", 3, &LONG_CACHE).await else {
        return;
    };
    let (a, b, c) = (&s.pods[0], &s.pods[1], &s.pods[2]);
    s.lb.set(vec![c.addr, a.addr, b.addr]);
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    let id = client.tunnel_id.clone();
    assert_eq!(node_of(a, &id).await.as_deref(), Some("c"));
    // B caches the tunnel (and its lease, on C) by serving it.
    assert_eq!(answer(b, &format!("/{id}/x")).await, (200, String::new()));

    // C paused: B can learn of the delete only from the hint. Its cached entry would send
    // the request to C, which would not answer.
    c.pause();
    assert_eq!(delete(a, API_KEY, &id).await, 200);
    soon(b, &format!("/{id}/x"), (404, "tunnel_not_found")).await;
    c.resume();
    let ended = client.join().await.unwrap_err().to_string();
    assert!(ended.contains("deleted"), "{ended}");
}

#[tokio::test]
async fn new_access_rules_of_a_name_reach_b_at_once() {
    let Some(s) = setup("cache_access", 3, &LONG_CACHE).await else {
        return;
    };
    let (a, b, c) = (&s.pods[0], &s.pods[1], &s.pods[2]);
    s.lb.set(vec![c.addr, a.addr, b.addr]);
    let backend = Backend::start("svc").await;
    let open = TestClient::start_at(s.lb.addr, backend.addr.port(), &["--name", "guarded"]).await;
    assert_eq!(node_of(a, "guarded").await.as_deref(), Some("c"));
    assert_eq!(answer(b, "/guarded/x").await, (200, String::new()));

    // The API changes no access rules in place: the name is deleted and created again with
    // basic auth (by its own key, within its grace period), its client on C again. B checks
    // the rules itself; with its old entry it would let the request through, and C, which
    // relays for B, would serve it.
    open.stop().await.unwrap();
    let auth = ["--name", "guarded", "--basic-auth", "user:password123"];
    let guarded = TestClient::start_at(s.lb.addr, backend.addr.port(), &auth).await;
    assert_eq!(node_of(a, "guarded").await.as_deref(), Some("c"));
    soon(b, "/guarded/x", (401, "basic_auth_required")).await;
    let resp = super::http()
        .get(b.url("/guarded/x"))
        .basic_auth("user", Some("password123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    guarded.stop().await.unwrap();
}
