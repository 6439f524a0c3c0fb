//! The per-tunnel public rate across pods: checked by the pod holding the client, which every
//! request of the tunnel passes whichever pod it entered, so one budget holds for the tunnel
//! however many pods the ingress spreads its requests over.

use std::time::Instant;

use tunnel_e2e::backend::Backend;
use tunnel_e2e::{TestClient, DEADLINE};

use super::{http, node_of, setup};

/// `TUNNEL_PUBLIC_RATE_PER_SEC` of every pod: requests per second, and the burst.
const RATE: u32 = 5;

/// Requests of the burst, through B and C in turn: enough to exhaust B's and C's own shares
/// too, so that a budget per entry pod would show as twice the one of the tunnel.
const BURST: usize = 40;

#[tokio::test]
async fn one_rate_budget_per_tunnel_whichever_pods_its_requests_enter() {
    let rate = RATE.to_string();
    let env = [("TUNNEL_PUBLIC_RATE_PER_SEC", rate.as_str())];
    let Some(s) = setup("rate_across_pods", 3, &env).await else {
        return;
    };
    let (b, c) = (&s.pods[1], &s.pods[2]);
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(s.lb.addr, backend.addr.port(), &[]).await;
    assert_eq!(node_of(b, &client.tunnel_id).await.as_deref(), Some("a"));

    let http = http();
    let started = Instant::now();
    let requests = (0..BURST).map(|k| {
        let pod = [b, c][k % 2];
        let url = pod.url(&format!("{}/echo?k={k}", client.prefix()));
        let http = http.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            let code = resp
                .headers()
                .get("x-tunnel-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let retry_after = resp.headers().contains_key("retry-after");
            (pod.name.clone(), resp.status().as_u16(), code, retry_after)
        }
    });
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .unwrap();
    let elapsed = started.elapsed();

    let mut admitted = [0u32; 2];
    for (pod, status, code, retry_after) in &answers {
        match status {
            200 => admitted[usize::from(pod == "c")] += 1,
            429 => {
                assert_eq!(code, "rate_limited", "through {pod}");
                assert!(retry_after, "a 429 through {pod} without Retry-After");
            }
            other => panic!("through {pod}: {other} {code}"),
        }
    }
    let total = admitted[0] + admitted[1];
    // The budget: the burst, and what refilled while the requests were sent. One budget per
    // entry pod would admit twice that (each of B and C its burst and its refill).
    let refill = (f64::from(RATE) * elapsed.as_secs_f64()).ceil() as u32;
    let budget = RATE + refill;
    println!(
        "per-tunnel rate {RATE}/s, {BURST} requests through B and C in {} ms: {total} admitted \
         ({} through B, {} through C), budget {budget}",
        elapsed.as_millis(),
        admitted[0],
        admitted[1]
    );
    assert!(
        total <= budget,
        "{total} admitted through B and C, more than the tunnel's budget of {budget} \
         ({RATE} + {refill} refilled in {elapsed:?})"
    );
    assert!(total >= RATE, "only {total} admitted: the burst is {RATE}");
    assert_eq!(backend.requests(), u64::from(total));
    client.stop().await.unwrap();
}
