//! The one routing decision of a public request, without a network: the pure
//! [`tunnel_server::app::route`] over hosts and paths, and the whole application driven with
//! `oneshot`.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tunnel_server::app::{self, Route};
use tunnel_server::edge::host::{normalize, HostRules};
use tunnel_server::{AppState, Settings};

fn rules() -> HostRules {
    HostRules {
        domain: Some("tunnels.example.com".into()),
        aliases: vec![],
    }
}

#[test]
fn routes_by_host_then_path() {
    let r = rules();
    let route = |host: &str, path: &str| app::route(&r, Some(&normalize(host)), path);
    let sub = |l: &str| Route::Subdomain(l.to_string());
    for (host, path, want) in [
        ("tunnels.example.com", "/api/tunnels", Route::Server),
        ("tunnels.example.com:443", "/health", Route::Server),
        ("TUNNELS.example.com.", "/ready", Route::Server),
        ("tunnels.example.com", "/myapp/x", Route::Prefix),
        ("10.1.2.3:8989", "/ready", Route::Server),
        ("[::1]:8989", "/myapp/", Route::Prefix),
        ("myapp.tunnels.example.com", "/", sub("myapp")),
        (
            "MyApp.Tunnels.Example.Com.:8443",
            "/api/tunnels",
            sub("myapp"),
        ),
        ("myapp.tunnels.example.com", "/health", sub("myapp")),
        (
            "myapp.tunnels.example.com",
            "/api/tunnel/connect/myapp",
            sub("myapp"),
        ),
        ("a.b.tunnels.example.com", "/", Route::Nested),
        (
            "app.mycompany.com",
            "/",
            Route::Foreign("app.mycompany.com".into()),
        ),
        (
            "eviltunnels.example.com",
            "/",
            Route::Foreign("eviltunnels.example.com".into()),
        ),
    ] {
        assert_eq!(route(host, path), want, "{host} {path}");
    }
    assert_eq!(app::route(&r, None, "/health"), Route::Server);
    // Without TUNNEL_DOMAIN the host is not looked at.
    let none = HostRules::default();
    assert_eq!(
        app::route(&none, Some("myapp.tunnels.example.com"), "/x/"),
        Route::Prefix
    );
    assert_eq!(app::route(&none, Some("anything"), "/api"), Route::Server);
}

async fn call(state: &Arc<AppState>, host: Option<&str>, path: &str) -> (StatusCode, String) {
    let mut req = Request::builder()
        .uri(path)
        .header("accept", "application/json");
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = app::app(state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let code = resp
        .headers()
        .get("x-tunnel-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (resp.status(), code)
}

#[tokio::test]
async fn the_application_routes_by_host() {
    let settings = Settings::parse_from([
        "tunnel-server",
        "--api-keys",
        "0123456789abcdef0123",
        "--domain",
        "tunnels.example.com",
        "--public-url",
        "https://tunnels.example.com",
    ])
    .expect("valid");
    let state = Arc::new(AppState::new(
        settings,
        "127.0.0.1:0".parse().expect("addr"),
    ));
    let ok = (StatusCode::OK, String::new());
    assert_eq!(
        call(&state, Some("tunnels.example.com"), "/health").await,
        ok
    );
    assert_eq!(call(&state, None, "/health").await, ok);
    assert_eq!(call(&state, Some("10.0.0.7:8989"), "/ready").await, ok);
    assert_eq!(
        call(&state, Some("tunnels.example.com"), "/api/tunnels").await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let not_found = |code: &str| (StatusCode::NOT_FOUND, code.to_string());
    // On a subdomain, /api/... is the tunnel's: no tunnel, no control API.
    assert_eq!(
        call(&state, Some("myapp.tunnels.example.com"), "/api/tunnels").await,
        not_found("tunnel_not_found")
    );
    assert_eq!(
        call(&state, Some("a.b.tunnels.example.com"), "/").await,
        not_found("nested_subdomain")
    );
    assert_eq!(
        call(&state, Some("elsewhere.example.org"), "/health").await,
        not_found("unknown_host")
    );
}
