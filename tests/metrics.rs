//! End-to-end: `GET /metrics` on the metrics listener shows every family with the values that
//! real traffic through a real server, client and local service produced, and a deleted
//! tunnel's labelled series go away with it.
//!
//! Counters are bumped when a response *ends*, which the public client can observe a moment
//! before the server has dropped the response body; so values are awaited with `eventually`
//! (a poll of the endpoint, not a sleep standing in for an event).

#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::http::{get, request, send};
use tunnel_e2e::{eventually, TestClient, TestServer, API_KEY, DEADLINE};

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until `series` has a value for which `ok` holds; returns the whole text then.
async fn wait_metric(server: &TestServer, series: &str, ok: impl Fn(f64) -> bool) -> String {
    eventually(&format!("{series} to reach the expected value"), || async {
        let text = server.metrics().await;
        value(&text, series).filter(|v| ok(*v)).map(|_| text)
    })
    .await
}

#[tokio::test]
async fn every_family_shows_the_traffic() {
    let server = TestServer::start(&["--request-timeout-secs", "1"]).await;
    let backend = Backend::start("m").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let id = client.tunnel_id.clone();
    let p = client.prefix();

    // Before any traffic: the registry gauges and a zero for every rejection reason.
    let text = server.metrics().await;
    assert_eq!(
        value(&text, "tunnel_tunnels_registered"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "tunnel_tunnels_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "tunnel_client_connects_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"tunnel_rejections_total{reason="gateway_timeout"}"#
        ),
        Some(0.0)
    );

    // 2xx with a 1000-byte download and a 5000-byte upload, a 4xx from the service.
    assert_eq!(
        get(server.addr, &format!("{p}/bytes/1000")).await.status(),
        200
    );
    let upload = send(
        server.addr,
        request("POST", &format!("{p}/upload"), vec![7u8; 5000]),
    )
    .await;
    assert_eq!(upload.status(), 200);
    assert_eq!(
        get(server.addr, &format!("{p}/status/404")).await.status(),
        404
    );
    // Rejections: an unknown tunnel, a missing API key, a service that does not answer in
    // time, a tunnel without client.
    assert_eq!(get(server.addr, "/nosuchtunnel/x").await.status(), 404);
    let unauthorized = reqwest::get(server.url("/api/tunnels/list")).await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(get(server.addr, &format!("{p}/hang")).await.status(), 504);
    let offline = server.create_tunnel(serde_json::json!({})).await;
    let offline_id = offline["tunnel_id"].as_str().unwrap();
    let resp = get(server.addr, &format!("/{offline_id}/")).await;
    assert_eq!(resp.status(), 502);

    wait_metric(
        &server,
        &format!(r#"tunnel_requests_total{{tunnel="{id}",status_class="2xx"}}"#),
        |v| v == 2.0,
    )
    .await;
    // The 504: its log (and count) is written when the server gives up on the response head.
    let text = wait_metric(
        &server,
        &format!(r#"tunnel_requests_total{{tunnel="{id}",status_class="5xx"}}"#),
        |v| v == 1.0,
    )
    .await;
    let series = |s: &str| value(&text, s);
    assert_eq!(
        series(&format!(
            r#"tunnel_requests_total{{tunnel="{id}",status_class="4xx"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&format!(
            r#"tunnel_requests_total{{tunnel="{offline_id}",status_class="5xx"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    assert!(
        series("tunnel_request_duration_seconds_count").unwrap() >= 5.0,
        "{text}"
    );
    assert!(series(r#"tunnel_request_duration_seconds_bucket{le="+Inf"}"#).unwrap() >= 5.0);
    // The timed-out request took at least the request timeout.
    assert!(
        series("tunnel_request_duration_seconds_sum").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        series(r#"tunnel_body_bytes_total{direction="in"}"#).unwrap() >= 5000.0,
        "{text}"
    );
    assert!(
        series(r#"tunnel_body_bytes_total{direction="out"}"#).unwrap() >= 1000.0,
        "{text}"
    );
    for (reason, n) in [
        ("tunnel_not_found", 1.0),
        ("unauthorized", 1.0),
        ("gateway_timeout", 1.0),
        ("tunnel_offline", 1.0),
        ("overloaded", 0.0),
        ("idle_timeout", 0.0),
        ("shutting_down", 0.0),
    ] {
        assert_eq!(
            series(&format!(r#"tunnel_rejections_total{{reason="{reason}"}}"#)),
            Some(n),
            "{reason}: {text}"
        );
    }
    assert_eq!(series("tunnel_tunnels_registered"), Some(2.0));
    assert_eq!(series("tunnel_tunnels_connected"), Some(1.0));
    assert!(text.contains("# TYPE tunnel_request_duration_seconds histogram"));
    assert!(text.contains(r#"tunnel_build_info{version=""#));

    // A WebSocket session: one open session and its stream while it lives, none after.
    let url = format!("ws://{}{p}/ws", server.addr);
    let (mut ws, resp) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    let first = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(first.is_some(), "the service's greeting");
    let text = wait_metric(&server, "tunnel_websocket_sessions", |v| v == 1.0).await;
    assert!(
        value(&text, "tunnel_open_streams").unwrap() >= 1.0,
        "{text}"
    );
    ws.send(Message::text("hello")).await.unwrap();
    let echo = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(echo.unwrap().unwrap(), Message::text("hello"));
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, ws.next()).await {}
    // The session ends when both directions have: close our TCP side too.
    drop(ws);
    wait_metric(&server, "tunnel_websocket_sessions", |v| v == 0.0).await;
    let text = wait_metric(
        &server,
        &format!(r#"tunnel_requests_total{{tunnel="{id}",status_class="1xx"}}"#),
        |v| v == 1.0,
    )
    .await;
    assert!(value(&text, r#"tunnel_body_bytes_total{direction="in"}"#).unwrap() > 5000.0);
    let text = wait_metric(&server, "tunnel_open_streams", |v| v == 0.0).await;
    assert_eq!(value(&text, "tunnel_client_disconnects_total"), Some(0.0));

    // The metrics are not on the public listener.
    let public = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404);

    client.stop().await.unwrap();
    wait_metric(&server, "tunnel_client_disconnects_total", |v| v == 1.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_tunnel_takes_its_series_with_it() {
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("m").await;
    let gone = TestClient::start(&server, backend.addr.port(), &["--name", "gone"]).await;
    let kept = TestClient::start(&server, backend.addr.port(), &["--name", "kept"]).await;
    for client in [&gone, &kept] {
        let resp = get(server.addr, &format!("{}/x", client.prefix())).await;
        assert_eq!(resp.status(), 200);
    }
    let mut text = String::new();
    for id in ["gone", "kept"] {
        text = wait_metric(
            &server,
            &format!(r#"tunnel_requests_total{{tunnel="{id}",status_class="2xx"}}"#),
            |v| v == 1.0,
        )
        .await;
    }
    assert_eq!(value(&text, "tunnel_tunnels_registered"), Some(2.0));

    let deleted = reqwest::Client::new()
        .delete(server.url("/api/tunnels/gone"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    // The deleted tunnel's client is told and ends.
    assert!(gone.join().await.is_err());

    let text = wait_metric(&server, "tunnel_tunnels_registered", |v| v == 1.0).await;
    assert!(!text.contains(r#"tunnel="gone""#), "{text}");
    assert_eq!(
        value(
            &text,
            r#"tunnel_requests_total{tunnel="kept",status_class="2xx"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // Requests to the deleted tunnel are now rejections, not per-tunnel series.
    assert_eq!(get(server.addr, "/gone/x").await.status(), 404);
    let text = wait_metric(
        &server,
        r#"tunnel_rejections_total{reason="tunnel_not_found"}"#,
        |v| v == 1.0,
    )
    .await;
    assert!(!text.contains(r#"tunnel="gone""#), "{text}");
    kept.stop().await.unwrap();
    server.stop().await;
}
