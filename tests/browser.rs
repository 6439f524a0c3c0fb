//! A real browser through the tunnel: headless Chromium loads a single-page app on its tunnel's
//! subdomain (`http://<name>.localhost:PORT/`, which Chromium resolves to loopback by itself),
//! and every request succeeds: HTML, the root-absolute `/assets/app.js` and `/assets/app.css`,
//! the script's `fetch('/api/data')` and its WebSocket to `/ws`. The same app under the path
//! prefix loses its assets, which shows both why subdomains matter and that the harness sees
//! failures.
//!
//! Skipped (with a loud line) without Chromium or Playwright, unless TUNNEL_REQUIRE_BROWSER=1.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tunnel_e2e::browser::{Browser, Expect};
use tunnel_e2e::webapp::{WebApp, DATA_MESSAGE, WS_TEXT};
use tunnel_e2e::{TestClient, TestServer};

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(format!("{name}.png"))
}

#[tokio::test]
async fn a_single_page_app_works_on_its_subdomain() {
    let Some(browser) = Browser::find("a_single_page_app_works_on_its_subdomain") else {
        return;
    };
    let server = TestServer::start(&["--domain", "localhost"]).await;
    let app = WebApp::start().await;
    let client = TestClient::start(&server, app.addr.port(), &["--name", "pageapp"]).await;
    let port = server.addr.port();
    let url = format!("http://pageapp.localhost:{port}/");
    assert_eq!(client.public_url, url);

    let report = browser
        .check(
            &url,
            &[
                Expect::text("#data", &format!("data: {DATA_MESSAGE}")),
                Expect::text("#ws", &format!("echo: {WS_TEXT}")),
                Expect::text("#css", "css: loaded"),
            ],
            &screenshot("subdomain"),
        )
        .await;
    assert!(report.is_clean(), "the page had failures: {:#}", report.raw);
    for path in ["/", "/assets/app.js", "/assets/app.css", "/api/data"] {
        let want = format!("http://pageapp.localhost:{port}{path}");
        assert!(
            report.requests.contains(&want),
            "{want} not requested: {:?}",
            report.requests
        );
    }
    assert_eq!(
        report.websocket_frames,
        [(
            format!("ws://pageapp.localhost:{port}/ws"),
            vec![WS_TEXT.to_string()]
        )],
    );
    assert_eq!(
        report.texts["#data"].as_deref(),
        Some(format!("data: {DATA_MESSAGE}").as_str())
    );

    // The same app under its path prefix: the HTML loads, its root-absolute assets do not.
    let report = browser
        .check(
            &format!("http://localhost:{port}/pageapp/"),
            &[],
            &screenshot("path-prefix"),
        )
        .await;
    assert!(!report.is_clean());
    assert!(
        report
            .bad_responses
            .contains(&format!("404 http://localhost:{port}/assets/app.js")),
        "{:?}",
        report.bad_responses
    );
    client.stop().await.unwrap();
    server.stop().await;
}
