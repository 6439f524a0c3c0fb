//! Apps configured for a base path behind a path-prefix URL (issue 13): `--keep-prefix`.
//!
//! The local service here acts as Vite does with `base: '/<id>/'` (a request outside the base
//! is redirected to it) and as Jupyter does with `base_url` (an API request whose `Origin` is
//! not its own `Host` is refused, "Blocking Cross Origin API request"). Without the flag the
//! prefix is stripped, the app redirects back to it and a browser loops; with it the app sees
//! `/<id>/x` unchanged. With `--host-header rewrite` (the default) a browser's same-origin
//! `Origin` follows the rewritten Host, and another site's stays as it is.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tunnel_e2e::{TestClient, TestServer};

/// A local service with base path `base` (`/vt/`).
async fn base_path_app(base: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |req: Request| async move { answer(base, &req) });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn answer(base: &str, req: &Request) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if !target.starts_with(base) {
        // Vite: "did you mean to visit /vt/?", as a redirect to the base.
        return (StatusCode::FOUND, [(header::LOCATION, base.to_string())]).into_response();
    }
    if target.starts_with(&format!("{base}api/")) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        let origin_host = origin.map(|o| o.split_once("://").map_or(o, |(_, h)| h));
        if origin.is_some() && origin_host != host {
            let msg =
                format!("Blocking Cross Origin API request. Origin: {origin:?}, Host: {host:?}");
            return (StatusCode::FORBIDDEN, msg).into_response();
        }
    }
    format!("path={target}").into_response()
}

#[tokio::test]
async fn keep_prefix_hands_the_app_its_base_path_and_no_redirect_loops() {
    let server = TestServer::start(&[]).await;
    let app = base_path_app("/vt/").await;
    let client = TestClient::start(&server, app.port(), &["--name", "vt", "--keep-prefix"]).await;
    let http = reqwest::Client::new();
    for (asked, seen) in [
        ("/vt/x?y=1", "path=/vt/x?y=1"),
        ("/vt/", "path=/vt/"),
        ("/vt", "path=/vt/"),
        ("/vt/src/main.ts", "path=/vt/src/main.ts"),
    ] {
        let resp = http.get(server.url(asked)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{asked}");
        assert_eq!(resp.text().await.unwrap(), seen, "{asked}");
    }
    client.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn without_keep_prefix_the_same_app_loops() {
    let server = TestServer::start(&[]).await;
    let app = base_path_app("/loop/").await;
    let client = TestClient::start(&server, app.port(), &["--name", "loop"]).await;
    // Stripped, `/loop/x` reaches the app as `/x`, which it sends back to `/loop/`: what a
    // browser reports as ERR_TOO_MANY_REDIRECTS.
    let err = reqwest::get(server.url("/loop/x")).await.unwrap_err();
    assert!(err.is_redirect(), "{err:?}");
    client.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_browsers_same_origin_request_passes_an_origin_check_and_another_sites_does_not() {
    let server = TestServer::start(&[]).await;
    let app = base_path_app("/nb/").await;
    // `--host-header rewrite` is the default: the app sees its own Host.
    let client = TestClient::start(&server, app.port(), &["--name", "nb", "--keep-prefix"]).await;
    let http = reqwest::Client::new();
    let public_origin = format!("http://{}", server.addr);
    let resp = http
        .post(server.url("/nb/api/kernels"))
        .header(header::ORIGIN, &public_origin)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "path=/nb/api/kernels");
    let resp = http
        .post(server.url("/nb/api/kernels"))
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "another site's Origin is left as it is");
    assert!(resp.text().await.unwrap().contains("evil.example"));
    client.stop().await.unwrap();
    server.stop().await;
}
