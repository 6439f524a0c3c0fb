//! The inspector's HTTP API and page, one router: [`router`].
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/tunnels` | the tunnel (ngrok's shape) |
//! | `GET /api/requests/http?limit=&tunnel_name=&q=` | entries, newest first; `q` searches |
//! | `GET /api/requests/http/{id}` | one entry with its kept bytes |
//! | `POST /api/requests/http` `{"id"}` | replay as captured (204) |
//! | `DELETE /api/requests/http` | delete every entry (204) |
//! | `POST /api/requests/http/{id}/replay` | replay with edits → `{"id","status"}` |
//! | `GET /api/requests/http/{id}/messages?after=` | WebSocket messages / SSE events |
//! | `GET /api/events` | SSE: `request`, `message`, `cleared`, `lagged` |

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::{json, Value};

use super::feed::{Batch, Change};
use super::guard::{self, Refusal};
use super::json::{entry_json, id_string, matches, message_json, parse_id, Detail};
use super::page;
use super::replay::{Edits, ReplayError, Replayer};
use super::store::Store;

/// Entries listed when no `limit` is given, and the most a `limit` may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// The tunnel, once online.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The tunnel's id, which is its name in the API.
    pub name: String,
    /// Its public URL.
    pub public_url: String,
}

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The captures.
    pub store: Arc<Store>,
    /// Replays go here.
    pub replayer: Replayer,
    /// `host:port` of the local service (shown in `/api/tunnels`).
    pub local: String,
    /// The tunnel, once online.
    pub tunnel: Mutex<Option<TunnelInfo>>,
    /// Whether the inspector listens beyond loopback (IP-literal hosts are then accepted).
    pub open: bool,
}

impl ApiState {
    fn tunnel(&self) -> TunnelInfo {
        // Poisoned only if a panic hit while a clone was made: the value is still whole.
        self.tunnel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// Every failure of the API, mapped to a status and a JSON body in one place.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no captured request with that id")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Refused(Refusal::Host) => (StatusCode::FORBIDDEN, "bad_host"),
            ApiError::Refused(Refusal::NotJson) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json_required")
            }
            ApiError::Refused(Refusal::Origin) => (StatusCode::FORBIDDEN, "cross_origin"),
            ApiError::NotFound | ApiError::Replay(ReplayError::NotFound) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::BadRequest(_) | ApiError::Replay(ReplayError::BadEdit(_)) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::Replay(ReplayError::WebSocket | ReplayError::Truncated(_)) => {
                (StatusCode::CONFLICT, "not_replayable")
            }
            ApiError::Replay(ReplayError::Local(_)) => (StatusCode::BAD_GATEWAY, "local_failed"),
            ApiError::Replay(ReplayError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        };
        let body = json!({
            "status_code": status.as_u16(),
            "error_code": code,
            "msg": self.to_string(),
        });
        (status, Json(body)).into_response()
    }
}

/// The inspector's app.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/tunnels", get(tunnels))
        .route(
            "/api/requests/http",
            get(list).post(replay_as_captured).delete(clear),
        )
        .route("/api/requests/http/{id}", get(detail))
        .route("/api/requests/http/{id}/replay", post(replay_edited))
        .route("/api/requests/http/{id}/messages", get(messages))
        .route("/api/events", get(events))
        .fallback(get(page::asset))
        .layer(middleware::from_fn_with_state(state.clone(), guarded))
        .with_state(state)
}

async fn guarded(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match guard::check(req.method(), req.headers(), state.open) {
        Ok(()) => next.run(req).await,
        Err(refusal) => ApiError::from(refusal).into_response(),
    }
}

async fn tunnels(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let t = state.tunnel();
    let tunnels: Vec<Value> = if t.name.is_empty() {
        Vec::new()
    } else {
        let proto = t.public_url.split("://").next().unwrap_or("https");
        vec![json!({
            "name": t.name,
            "uri": format!("/api/tunnels/{}", t.name),
            "public_url": t.public_url,
            "proto": proto,
            "config": { "addr": format!("http://{}", state.local), "inspect": true },
            "capture": state.store.stats(),
        })]
    };
    Json(json!({ "tunnels": tunnels, "uri": "/api/tunnels" }))
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    tunnel_name: Option<String>,
    /// Search: entries whose method, path, headers, bodies or messages contain this text
    /// (ASCII case ignored).
    q: Option<String>,
}

async fn list(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tunnel = state.tunnel().name;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let other_tunnel = query
        .tunnel_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != tunnel);
    let entries = if other_tunnel {
        Vec::new()
    } else if let Some(q) = query.q.filter(|q| !q.is_empty()) {
        // Searching copies nothing (bodies are shared) but may read the whole budget: off the
        // runtime thread, which also carries the tunnel.
        let store = state.store.clone();
        let needle = q.to_ascii_lowercase().into_bytes();
        tokio::task::spawn_blocking(move || store.newest(limit, |e| matches(e, &needle)))
            .await
            .map_err(|e| ApiError::BadRequest(format!("search failed: {e}")))?
    } else {
        state.store.newest(limit, |_| true)
    };
    let requests: Vec<Value> = entries
        .iter()
        .map(|e| entry_json(e, &tunnel, Detail::Summary))
        .collect();
    Ok(Json(
        json!({ "uri": "/api/requests/http", "requests": requests }),
    ))
}

fn entry_id(id: &str) -> Result<u64, ApiError> {
    parse_id(id).ok_or(ApiError::NotFound)
}

async fn detail(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.store.get(entry_id(&id)?).ok_or(ApiError::NotFound)?;
    Ok(Json(entry_json(&entry, &state.tunnel().name, Detail::Full)))
}

async fn clear(State(state): State<Arc<ApiState>>) -> StatusCode {
    state.store.clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, serde::Deserialize)]
struct ReplayBody {
    id: String,
    /// Accepted for ngrok compatibility; this client has one tunnel.
    #[allow(dead_code)]
    tunnel_name: Option<String>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

async fn replay_as_captured(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let ReplayBody { id, .. } = json_body(&body)?;
    state
        .replayer
        .replay(&state.store, entry_id(&id)?, Edits::default())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replay_edited(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let edits: Edits = if body.is_empty() {
        Edits::default()
    } else {
        json_body(&body)?
    };
    let done = state
        .replayer
        .replay(&state.store, entry_id(&id)?, edits)
        .await?;
    Ok(Json(
        json!({ "id": id_string(done.id), "status": done.status }),
    ))
}

#[derive(Debug, serde::Deserialize)]
struct MessagesQuery {
    /// Only messages with a greater index.
    after: Option<u64>,
}

async fn messages(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.store.get(entry_id(&id)?).ok_or(ApiError::NotFound)?;
    let list: Vec<Value> = entry
        .messages
        .iter()
        .filter(|m| query.after.is_none_or(|a| m.index > a))
        .map(message_json)
        .collect();
    Ok(Json(json!({
        "id": id,
        "kind": entry.kind,
        "dropped": entry.messages_dropped,
        "messages": list,
    })))
}

/// `GET /api/events`: each change as an SSE event. The page follows it for live updates; a
/// browser that stops reading only fills its own connection and then misses events (told by a
/// `lagged` event), it never holds the tunnel back.
///
/// Changes come in batches (all that happened since the stream last looked, one wake-up for
/// a burst). An event shows the entry as it is when sent, so an entry that changed several
/// times in one batch is sent once, at its first place.
async fn events(
    State(state): State<Arc<ApiState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let sub = state.store.subscribe();
    let pending: VecDeque<Change> = VecDeque::new();
    let stream = futures_util::stream::unfold(
        (sub, pending, state),
        |(mut sub, mut pending, state)| async move {
            loop {
                while let Some(change) = pending.pop_front() {
                    if let Some(event) = change_event(&state, change) {
                        return Some((Ok(event), (sub, pending, state)));
                    }
                }
                match sub.next().await {
                    Batch::Changes(changes) => pending = once_each(changes),
                    Batch::Lagged(missed) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(json!({ "missed": missed }).to_string());
                        return Some((Ok(event), (sub, pending, state)));
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A batch with each entry's later `Added`/`Updated` dropped (the first, sent after all of
/// them happened, already shows the entry as it is).
fn once_each(changes: Vec<Change>) -> VecDeque<Change> {
    let mut seen = HashSet::new();
    changes
        .into_iter()
        .filter(|c| match c {
            Change::Added(id) | Change::Updated(id) => seen.insert(*id),
            Change::Message(..) => true,
            Change::Cleared => {
                seen.clear();
                true
            }
        })
        .collect()
}

fn change_event(state: &ApiState, change: Change) -> Option<Event> {
    let tunnel = state.tunnel().name;
    match change {
        Change::Added(id) | Change::Updated(id) => {
            let entry = state.store.get(id)?;
            let data = entry_json(&entry, &tunnel, Detail::Summary);
            Some(Event::default().event("request").data(data.to_string()))
        }
        Change::Message(id, index) => {
            let message = state.store.message_of(id, index)?;
            let data = json!({ "id": id_string(id), "message": message_json(&message) });
            Some(Event::default().event("message").data(data.to_string()))
        }
        Change::Cleared => Some(Event::default().event("cleared").data("{}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::inspect::store::Limits;

    fn app(store: Arc<Store>) -> Router {
        router(Arc::new(ApiState {
            store,
            replayer: Replayer::new("127.0.0.1:9".into()),
            local: "127.0.0.1:9".into(),
            tunnel: Mutex::new(None),
            open: false,
        }))
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let store = Arc::new(Store::new(Limits {
            budget: 1 << 20,
            body_limit: 1 << 10,
        }));
        let request = axum::http::Request::get("/api/events")
            .header("host", "localhost:4040")
            .body(Body::empty())
            .unwrap();
        let resp = app(store.clone()).oneshot(request).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Subscribed, not reading: far more changes than the queue holds, and the store
        // never waited for the subscriber.
        for _ in 0..5000 {
            store.clear();
        }
        let mut body = resp.into_body();
        let mut text = String::new();
        while !text.contains("event: lagged") {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        let missed = text
            .split("\"missed\":")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap();
        assert!(missed >= 5000 - 1024, "missed {missed}");
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_strict_content_security_policy() {
        let store = Arc::new(Store::new(Limits {
            budget: 1 << 20,
            body_limit: 1 << 10,
        }));
        for path in ["/", "/app.js", "/style.css"] {
            let request = axum::http::Request::get(path)
                .header("host", "127.0.0.1:4040")
                .body(Body::empty())
                .unwrap();
            let resp = app(store.clone()).oneshot(request).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let csp = resp.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty());
        }
    }
}
