//! Issue 12's names and custom domains across pods: who holds a name, and where a verified
//! domain routes, is decided in Redis, so every pod answers the same.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::dns::TestDns;
use tunnel_e2e::http::send;
use tunnel_e2e::{eventually, TestClient, API_KEY};

use super::{http, setup, Pod};

/// A second API key, for another owner.
const OTHER_KEY: &str = "other-api-key-0123456789";

/// Creates a tunnel on `pod` with `key`; the status and the answer.
pub(super) async fn create(
    pod: &Pod,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = http()
        .post(pod.url("/api/tunnels"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

pub(super) async fn delete(pod: &Pod, key: &str, id: &str) -> u16 {
    http()
        .delete(pod.url(&format!("/api/tunnels/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The error message of a refusal.
fn message(body: &serde_json::Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_name_held_by_one_key_is_refused_to_another_on_every_pod() {
    // The two pods list the keys in different orders: owners are recorded by the key's
    // fingerprint, not its position.
    let Some(s) = setup("names_across_pods", 0, &[]).await else {
        return;
    };
    let keys_a = format!("{API_KEY},{OTHER_KEY}");
    let keys_b = format!("{OTHER_KEY},{API_KEY}");
    let public = format!("http://{}", s.lb.addr);
    let a = Pod::start(
        "na",
        &s.redis.url(),
        &public,
        &[("TUNNEL_API_KEYS", &keys_a)],
    )
    .await;
    let b = Pod::start(
        "nb",
        &s.redis.url(),
        &public,
        &[("TUNNEL_API_KEYS", &keys_b)],
    )
    .await;

    // A live tunnel's name: taken, on the other pod too.
    let (status, _) = create(&a, API_KEY, serde_json::json!({ "name": "keep" })).await;
    assert_eq!(status, 200);
    let (status, body) = create(&b, OTHER_KEY, serde_json::json!({ "name": "keep" })).await;
    assert_eq!(status, 409, "{body}");

    // Deleted on pod 1: the name stays its key's for the grace period, on pod 2 as well.
    assert_eq!(delete(&a, API_KEY, "keep").await, 200);
    let (status, body) = create(&b, OTHER_KEY, serde_json::json!({ "name": "keep" })).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("TUNNEL_NAME_GRACE_SECS"), "{body}");
    // Its own key takes it back, through the other pod.
    let (status, body) = create(&b, API_KEY, serde_json::json!({ "name": "keep" })).await;
    assert_eq!(status, 200, "{body}");

    // A random name is held the same way: nobody else gets it within the grace period.
    let (status, body) = create(&b, API_KEY, serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    let random = body["tunnel_id"].as_str().unwrap().to_string();
    assert_eq!(delete(&b, API_KEY, &random).await, 200);
    let (status, body) = create(&a, OTHER_KEY, serde_json::json!({ "name": random })).await;
    assert_eq!(status, 409, "{body}");

    // Two pods creating the same new name at once: exactly one wins.
    let (x, y) = tokio::join!(
        create(&a, API_KEY, serde_json::json!({ "name": "race" })),
        create(&b, OTHER_KEY, serde_json::json!({ "name": "race" })),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{x:?} {y:?}");
}

fn with_host(target: &str, host: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(target)
        .header("host", host)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn error_code(resp: &http::Response<Bytes>) -> &str {
    resp.headers()
        .get("x-tunnel-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_custom_domain_verified_on_one_pod_routes_on_another() {
    const CUSTOM: &str = "app.customer.test";
    let dns = TestDns::start().await;
    let resolver = dns.addr.to_string();
    let env = [
        ("TUNNEL_DOMAIN", "tunnels.test"),
        ("TUNNEL_DNS_RESOLVER", resolver.as_str()),
        ("TUNNEL_DOMAIN_RECHECK_SECS", "3600"),
        // Lookups believed far longer than any deadline here: pod 2 follows the binding's
        // changes through the hints alone (see `cache.rs`).
        ("TUNNEL_CACHE_SECS", "300"),
        ("TUNNEL_API_KEYS", &format!("{API_KEY},{OTHER_KEY}")),
    ];
    let Some(s) = setup("domains_across_pods", 2, &env).await else {
        return;
    };
    let (a, b) = (&s.pods[0], &s.pods[1]);
    let backend = Backend::start("custom").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &["--domain", CUSTOM]).await;
    let id = client.tunnel_id.clone();
    assert_eq!(super::node_of(b, &id).await.as_deref(), Some("a"));
    let status = super::status_json(b, &id).await;
    let value = status["custom_domain"]["txt_value"]
        .as_str()
        .unwrap()
        .to_string();
    let on = |pod: &Pod| send(pod.addr, with_host("/api/x", CUSTOM));
    assert_eq!(error_code(&on(b).await), "unknown_host");

    // Verified through pod 1's API.
    dns.set_txt(&format!("_tunnel.{CUSTOM}"), &[&value]);
    let verified: serde_json::Value = http()
        .post(a.url(&format!("/api/tunnels/{id}/domain/verify")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified["status"], "verified", "{verified}");

    // Pod 2 routes it (to the client on pod 1), and its status says so.
    let resp = eventually("pod b to route the verified domain", || async {
        let resp = on(b).await;
        (resp.status() == 200).then_some(resp)
    })
    .await;
    let echo: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(
        (echo["backend"].as_str(), echo["target"].as_str()),
        (Some("custom"), Some("/api/x"))
    );
    let status = super::status_json(b, &id).await;
    assert_eq!(status["custom_domain"]["verified"], true, "{status}");

    // Another key cannot take the domain while it routes, on either pod.
    let (code, body) = create(b, OTHER_KEY, serde_json::json!({ "domain": CUSTOM })).await;
    assert_eq!(code, 409, "{body}");

    // The client deletes its tunnel as it stops: neither pod routes the domain any more.
    client.stop().await.unwrap();
    for pod in [a, b] {
        eventually("the deleted tunnel's domain to stop routing", || async {
            (error_code(&on(pod).await) == "unknown_host").then_some(())
        })
        .await;
    }
}
