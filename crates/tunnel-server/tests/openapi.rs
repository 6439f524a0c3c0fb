//! The OpenAPI document and the real router agree, both ways:
//! - every route the router mounts (read from `app.rs`'s `router` function, as the deploy test
//!   reads config.rs) is in the document with the same methods;
//! - every operation in the document is answered by the real router with something other than
//!   404/405, with a status the document lists, and its security matches: an operation that
//!   declares an API key answers 401 without one and works with one, an open one never asks;
//! - `GET /api/openapi.json` serves that document, without credentials.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tunnel_server::config::DEFAULT_PORT;
use tunnel_server::{AppState, Settings};
use utoipa::openapi::path::Operation;

const KEY: &str = "0123456789abcdef0123";

fn state() -> Arc<AppState> {
    let settings = Settings::parse_from(["tunnel-server", "--api-keys", KEY]).expect("settings");
    let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
    Arc::new(AppState::new(settings, addr))
}

async fn call(
    state: &Arc<AppState>,
    method: Method,
    path: &str,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let resp = tunnel_server::app::router(state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    // An event stream never ends by itself: its status and type are the answer.
    if resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "text/event-stream")
    {
        return (status, serde_json::Value::Null);
    }
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `(path, METHOD)` of every `.route(...)` in `app::router`, read from the source.
fn router_routes() -> BTreeSet<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app.rs");
    let source = std::fs::read_to_string(&path).expect("app.rs");
    let body = source
        .split("pub fn router(")
        .nth(1)
        .and_then(|s| s.split("\n}\n").next())
        .expect("app.rs has `pub fn router(`");
    let mut routes = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let route_path = chunk.split('"').nth(1).expect("a literal path").to_string();
        // The arguments of `.route(`: up to its closing parenthesis.
        let mut depth = 1;
        let args: String = chunk
            .chars()
            .take_while(|c| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth > 0
            })
            .collect();
        assert!(
            !args.contains("any("),
            "{route_path}: `any` routes cannot be documented method by method"
        );
        let mut found = false;
        for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
            let call = format!("{method}(");
            let mentioned = args.match_indices(&call).any(|(i, _)| {
                i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if mentioned {
                routes.insert((route_path.clone(), method.to_ascii_uppercase()));
                found = true;
            }
        }
        assert!(found, "no method found for {route_path}");
    }
    assert!(routes.len() >= 10, "too few routes read: {routes:?}");
    routes
}

fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<(String, Method, Operation)> {
    let mut ops = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
        ] {
            if let Some(op) = op {
                ops.push((path.clone(), method, op.clone()));
            }
        }
    }
    ops
}

/// Names of the security schemes an operation accepts.
fn schemes(op: &Operation) -> BTreeSet<String> {
    let json = serde_json::to_value(&op.security).expect("serializable");
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|req| req.as_object())
        .flat_map(|req| req.keys().cloned())
        .collect()
}

/// Public traffic bypasses the router (see `app::dispatch`): every routed path must be recognised
/// as the server's own, and a tunnel's path must not.
#[test]
fn the_router_bypass_knows_every_route() {
    for (path, _) in router_routes() {
        let concrete = path.replace("{id}", "abc123");
        assert!(
            tunnel_server::app::is_server_path(&concrete),
            "{concrete} is routed but would be sent to the proxy"
        );
    }
    for public in [
        "/",
        "/abc123/",
        "/abc123/api/x",
        "/healthz",
        "/apix",
        "/ready/x",
    ] {
        assert!(!tunnel_server::app::is_server_path(public), "{public}");
    }
}

#[test]
fn every_route_of_the_router_is_documented() {
    let doc = tunnel_server::control::openapi::document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(path, method, _)| (path, method.to_string()))
        .collect();
    let routes = router_routes();
    for route in &routes {
        assert!(
            documented.contains(route),
            "{} {} is routed but not in the OpenAPI document",
            route.1,
            route.0
        );
    }
    for op in &documented {
        assert!(
            routes.contains(op),
            "{} {} is documented but not routed",
            op.1,
            op.0
        );
    }
    let ids: Vec<_> = operations(&doc)
        .into_iter()
        .filter_map(|(_, _, op)| op.operation_id)
        .collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "operationIds must be unique: {ids:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_answered_as_documented() {
    let doc = tunnel_server::control::openapi::document();
    let ops = operations(&doc);
    assert!(ops.len() >= 12, "{} operations", ops.len());
    for (path, method, op) in ops {
        // A fresh server and tunnel per operation: DELETE must not disturb the others.
        let state = state();
        let (status, created) = call(&state, Method::POST, "/api/tunnels/create", Some(KEY)).await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let id = created["tunnel_id"].as_str().expect("tunnel_id");
        let token = created["token"].as_str().expect("token");
        let concrete = path.replace("{id}", id);
        let schemes = schemes(&op);
        let documented: BTreeSet<String> = op.responses.responses.keys().cloned().collect();
        let what = format!("{method} {path}");

        let credential = if schemes.contains("tunnel_token") {
            Some(token)
        } else if schemes.contains("bearer") {
            assert!(schemes.contains("api_key"), "{what}: X-API-Key works too");
            Some(KEY)
        } else {
            assert!(schemes.is_empty(), "{what}: unknown schemes {schemes:?}");
            None
        };
        let (status, body) = call(&state, method.clone(), &concrete, credential).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{what}: the real router answers {status} {body}"
        );
        assert!(
            documented.contains(status.as_str()),
            "{what}: answered {status}, documented {documented:?}"
        );
        if credential.is_some() {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            let (status, _) = call(&state, method.clone(), &concrete, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} without credentials"
            );
            assert!(documented.contains("401"), "{what}: 401 is not documented");
        } else {
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} is documented as open"
            );
        }
    }
}

#[tokio::test]
async fn the_document_is_served_without_credentials() {
    let state = state();
    let (status, served) = call(&state, Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let expected =
        serde_json::to_value(tunnel_server::control::openapi::document()).expect("serializable");
    assert_eq!(served, expected);
    assert!(served["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    for schema in ["CreateRequest", "CreateResponse", "TunnelInfo", "ErrorBody"] {
        assert!(
            served["components"]["schemas"][schema].is_object(),
            "{schema} is not in the document"
        );
    }
    // Fields that several pods added, optional so that nothing a client relied on changes.
    let info = &served["components"]["schemas"]["TunnelInfo"];
    assert!(info["properties"]["node"].is_object(), "{info}");
    let required = info["required"].as_array().cloned().unwrap_or_default();
    assert!(!required.contains(&"node".into()), "{info}");
    // What TCP tunnels added: what a tunnel carries, and its public port (optional).
    assert!(info["properties"]["proto"].is_object(), "{info}");
    assert!(info["properties"]["port"].is_object(), "{info}");
    assert!(!required.contains(&"port".into()), "{info}");
    let health = &served["components"]["schemas"]["HealthResponse"];
    assert!(health["properties"]["registry"].is_object(), "{health}");
}
