//! Issue 13's take-over across pods: a create that names a tunnel whose client is connected
//! to another pod is refused with that client's facts from its lease (what every pod sees),
//! and `force` closes that client on its pod with a goodbye naming the newcomer.

use tunnel_client::ClientError;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::{TestClient, API_KEY};

use super::{http, setup};

#[tokio::test]
async fn a_live_client_on_another_pod_is_refused_then_replaced_with_force() {
    let Some(s) = setup("takeover_across_pods", 2, &[]).await else {
        return;
    };
    let backend = Backend::start("takeover").await;
    let (a, b) = (&s.pods[0], &s.pods[1]);
    let mut first = TestClient::start_at(a.addr, backend.addr.port(), &["--name", "shared"]).await;
    first.wait_online().await;

    let create = |force: bool| async move {
        let resp = http()
            .post(b.url("/api/tunnels/create"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "name": "shared", "force": force }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = create(false).await;
    assert_eq!(status, 409, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], "tunnel_in_use", "{body}");
    assert_eq!(error["client_addr"], "127.0.0.1", "{body}");
    assert!(error["connected_since"].is_string(), "{body}");

    let (status, body) = create(true).await;
    assert_eq!(status, 200, "{body}");
    match first.join().await {
        Err(e @ ClientError::Replaced(_)) => {
            // The remove's close command names the newcomer, and so does pod a's own lease
            // renewal when it finds the change first (`tunnel:why:{id}`).
            let text = e.to_string();
            assert!(
                text.contains("replaced by another client from 127.0.0.1"),
                "{e}"
            );
            assert_eq!(e.exit_code(), 3);
        }
        other => panic!("the first client should be replaced: {other:?}"),
    }
}
