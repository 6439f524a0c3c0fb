//! The traffic inspector's page in a real browser (headless Chromium through Playwright, the
//! harness of `tests/browser.rs`): a request through the tunnel appears in the list without a
//! reload, opening it shows its JSON pretty-printed, Replay makes the local service receive
//! it again, the keyboard moves the selection, a WebSocket session's messages appear as they
//! flow, and a phone's width does not overflow. Screenshots' paths are printed in the log.
//!
//! Skipped (with a loud line) without Chromium or Playwright, unless TUNNEL_REQUIRE_BROWSER=1.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;

use tunnel_e2e::backend::Backend;
use tunnel_e2e::browser::Browser;
use tunnel_e2e::{TestClient, TestServer};

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(format!("{name}.png"))
}

#[tokio::test]
async fn the_inspector_page_follows_traffic_and_replays_it() {
    let Some(browser) = Browser::find("the_inspector_page_follows_traffic_and_replays_it") else {
        return;
    };
    let server = TestServer::start(&[]).await;
    let backend = Backend::start("inspect-browser").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    let (shot, ws, phone) = (
        screenshot("inspector"),
        screenshot("inspector-websocket"),
        screenshot("inspector-phone"),
    );
    let spec = serde_json::json!({
        "inspector": client.inspector.as_deref().unwrap(),
        "public_url": client.public_url,
        "screenshot": shot,
        "websocket_screenshot": ws,
        "phone_screenshot": phone,
        "timeout_ms": 40_000,
    });
    let report = browser.run_script("inspect_page.py", &spec).await;
    // Uncaptured, so that the paths are in the log of a passing run too.
    let _ = writeln!(
        std::io::stderr(),
        "screenshots of the inspector: {} {} {}",
        shot.display(),
        ws.display(),
        phone.display()
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "live",
            "appeared",
            "pretty",
            "replayed",
            "keyboard",
            "websocket",
            "phone"
        ],
        "the page failed: {report:#}"
    );
    assert!(
        report["console_errors"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    // The original and its replay reached the local service, then the other tab's page and
    // its WebSocket session.
    assert_eq!(backend.requests(), 4);
    client.stop().await.unwrap();
    server.stop().await;
}
