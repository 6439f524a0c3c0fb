//! The "local service" of the tests: an axum app on an ephemeral port with routes that
//! exercise every behaviour the tunnel must preserve, and hooks that let tests observe it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// Deterministic test data: byte `i` of an endless pattern, chunk by chunk.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| {
            let x = offset + i;
            (x.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (x as u8)
        })
        .collect::<Vec<u8>>()
        .into()
}

/// SHA-256 of `n` bytes of [`pattern`], hex.
pub fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(1 << 20) as usize;
        h.update(pattern(off, len));
        off += len as u64;
    }
    hex(&h.finalize())
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Shared between the backend's handlers and the test.
#[derive(Default)]
pub struct Hooks {
    /// Label of this backend (to detect responses crossing tunnels).
    pub label: String,
    /// Bytes produced by streaming routes so far.
    pub produced: AtomicU64,
    /// Signalled when a streaming response body is dropped (the tunnel went away).
    pub stream_dropped: Notify,
    /// Released by the test to let `/wait` answer.
    pub release: Notify,
    /// Paths of requests as they arrive at `/wait` or `/hang`.
    pub arrived: tokio::sync::Mutex<Option<mpsc::Sender<String>>>,
    /// Every request that reached the service.
    pub requests: AtomicU64,
}

/// A running backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hooks.
    pub hooks: Arc<Hooks>,
    /// Arrivals at `/wait` and `/hang`.
    pub arrivals: mpsc::Receiver<String>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Backend {
    /// Starts a backend labelled `label`.
    pub async fn start(label: &str) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let hooks = Arc::new(Hooks {
            label: label.to_string(),
            arrived: tokio::sync::Mutex::new(Some(tx)),
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(hooks.clone(), addr);
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            hooks,
            arrivals: rx,
            handle,
        }
    }

    /// Requests that reached the service.
    pub fn requests(&self) -> u64 {
        self.hooks.requests.load(Ordering::SeqCst)
    }

    /// Bytes produced by streaming routes.
    pub fn produced(&self) -> u64 {
        self.hooks.produced.load(Ordering::SeqCst)
    }
}

fn router(hooks: Arc<Hooks>, addr: SocketAddr) -> Router {
    let counter = hooks.clone();
    let count = axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
        let counter = counter.clone();
        async move {
            counter.requests.fetch_add(1, Ordering::SeqCst);
            next.run(req).await
        }
    });
    Router::new()
        .route("/bytes/{n}", get(bytes_route))
        .route("/upload", post(upload))
        .route("/mirror", any(mirror))
        .route("/status/{code}", any(status))
        .route("/cookies", get(cookies))
        .route(
            "/sw.js",
            get(|| async {
                (
                    [
                        ("content-type", "text/javascript"),
                        ("service-worker-allowed", "/"),
                    ],
                    "self.addEventListener('fetch', () => {});",
                )
            }),
        )
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [("location", "/target?a=1")]) }),
        )
        .route(
            "/redirect-abs",
            get(move || async move {
                (
                    StatusCode::FOUND,
                    [(
                        "location",
                        format!("http://127.0.0.1:{}/target", addr.port()),
                    )],
                )
            }),
        )
        .route("/hang", any(hang))
        .route("/wait", any(wait))
        .route("/stream", get(stream_forever))
        .route("/first-then-wait", get(first_then_wait))
        .route(
            "/reject-upload",
            post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "too big for me") }),
        )
        .route("/ws", get(ws_echo))
        .route("/ws-close", get(ws_close_after_first))
        .route("/ws-flood", get(ws_flood))
        .route(
            "/ws-refuse",
            get(|| async { (StatusCode::FORBIDDEN, "nope") }),
        )
        .route("/sse", get(sse_two_events))
        .route("/sse-forever", get(sse_forever))
        .fallback(echo)
        .layer(count)
        .with_state(hooks)
}

/// Echoes what arrived, as JSON: method, raw target, headers (in order), body length and hash.
async fn echo(State(hooks): State<Arc<Hooks>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "backend": hooks.label,
        "method": parts.method.as_str(),
        "target": parts.uri.to_string(),
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": hex(&Sha256::digest(&body)),
    });
    ([("content-type", "application/json")], json.to_string()).into_response()
}

async fn mirror(headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".parse().unwrap());
    ([("content-type", ct)], body).into_response()
}

async fn bytes_route(State(hooks): State<Arc<Hooks>>, Path(n): Path<u64>) -> Response {
    let stream = futures_util::stream::unfold(0u64, move |off| {
        let hooks = hooks.clone();
        async move {
            if off >= n {
                return None;
            }
            let len = (n - off).min(64 * 1024) as usize;
            hooks.produced.fetch_add(len as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(pattern(off, len)), off + len as u64))
        }
    });
    (
        [
            ("content-length", n.to_string()),
            ("content-type", "application/octet-stream".into()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn upload(body: Body) -> Response {
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len() as u64;
        h.update(&chunk);
    }
    let json = serde_json::json!({ "len": len, "sha256": hex(&h.finalize()) });
    ([("content-type", "application/json")], json.to_string()).into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    let mut resp = StatusCode::from_u16(code).unwrap().into_response();
    resp.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
    resp
}

async fn cookies() -> Response {
    Response::builder()
        .header("set-cookie", "a=1; Path=/")
        .header("set-cookie", "b=2; Path=/; HttpOnly")
        .body(Body::from("cookies"))
        .unwrap()
}

async fn announce(hooks: &Hooks, what: &str) {
    if let Some(tx) = hooks.arrived.lock().await.as_ref() {
        let _ = tx.send(what.to_string()).await;
    }
}

async fn hang(State(hooks): State<Arc<Hooks>>) -> Response {
    announce(&hooks, "/hang").await;
    std::future::pending::<()>().await;
    unreachable!()
}

async fn wait(State(hooks): State<Arc<Hooks>>) -> Response {
    let released = hooks.release.notified();
    announce(&hooks, "/wait").await;
    released.await;
    "released".into_response()
}

/// Signals `stream_dropped` when dropped, i.e. when the server stopped reading the body.
struct DropSignal(Arc<Hooks>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.stream_dropped.notify_one();
    }
}

async fn stream_forever(State(hooks): State<Arc<Hooks>>) -> Response {
    let guard = DropSignal(hooks.clone());
    let stream = futures_util::stream::unfold((0u64, guard), |(off, guard)| async move {
        let len = 16 * 1024;
        guard.0.produced.fetch_add(len as u64, Ordering::SeqCst);
        Some((
            Ok::<_, std::io::Error>(pattern(off, len)),
            (off + len as u64, guard),
        ))
    });
    Body::from_stream(stream).into_response()
}

async fn first_then_wait(State(hooks): State<Arc<Hooks>>) -> Response {
    let guard = DropSignal(hooks.clone());
    let stream = futures_util::stream::unfold((0u32, guard), |(n, guard)| async move {
        if n == 0 {
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(b"first chunk\n")),
                (1, guard),
            ))
        } else {
            std::future::pending::<()>().await;
            None
        }
    });
    Body::from_stream(stream).into_response()
}

/// WebSocket echo. The first message it sends describes the upgrade request it saw (origin,
/// subprotocols, extensions) as JSON; then it echoes every message until the peer closes.
async fn ws_echo(ws: WebSocketUpgrade, headers: HeaderMap) -> Response {
    let seen = serde_json::json!({
        "origin": headers.get("origin").and_then(|v| v.to_str().ok()),
        "protocol": headers.get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
        "extensions": headers.get("sec-websocket-extensions").and_then(|v| v.to_str().ok()),
    });
    ws.protocols(["chat"]).max_message_size(4 << 20).on_upgrade(
        move |mut socket: WebSocket| async move {
            if socket
                .send(WsMessage::text(seen.to_string()))
                .await
                .is_err()
            {
                return;
            }
            while let Some(Ok(msg)) = socket.recv().await {
                match msg {
                    WsMessage::Text(_) | WsMessage::Binary(_) => {
                        if socket.send(msg).await.is_err() {
                            return;
                        }
                    }
                    // Keep reading: the close answer goes out with the next read, then the
                    // stream ends.
                    WsMessage::Close(_) => {}
                    WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                }
            }
        },
    )
}

/// Echoes one message, then closes with code 1000 and reason "bye".
async fn ws_close_after_first(ws: WebSocketUpgrade) -> Response {
    ws.protocols(["chat"])
        .on_upgrade(|mut socket: WebSocket| async move {
            if let Some(Ok(msg)) = socket.recv().await {
                let _ = socket.send(msg).await;
                let _ = socket
                    .send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1000,
                        reason: "bye".into(),
                    })))
                    .await;
                // Wait for the peer's close answer.
                while let Some(Ok(_)) = socket.recv().await {}
            }
        })
}

/// Sends 64 KiB binary messages as fast as the connection takes them, counting `produced`.
async fn ws_flood(State(hooks): State<Arc<Hooks>>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["chat"])
        .on_upgrade(move |mut socket: WebSocket| async move {
            let chunk = pattern(0, 64 * 1024);
            for _ in 0..1024 {
                if socket.send(WsMessage::Binary(chunk.clone())).await.is_err() {
                    return;
                }
                hooks
                    .produced
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            let _ = socket.send(WsMessage::Close(None)).await;
        })
}

fn sse_response(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Server-sent events: the first event at once, the second only once the test releases it.
async fn sse_two_events(State(hooks): State<Arc<Hooks>>) -> Response {
    let stream = futures_util::stream::unfold(0u32, move |n| {
        let hooks = hooks.clone();
        async move {
            match n {
                0 => Some((Ok(Bytes::from_static(b"data: first\n\n")), 1)),
                1 => {
                    hooks.release.notified().await;
                    Some((Ok(Bytes::from_static(b"data: second\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    sse_response(stream)
}

/// Server-sent events: one event, then silence forever; signals when the body is dropped.
async fn sse_forever(State(hooks): State<Arc<Hooks>>) -> Response {
    let guard = DropSignal(hooks);
    let stream = futures_util::stream::unfold((0u32, guard), |(n, guard)| async move {
        if n == 0 {
            Some((Ok(Bytes::from_static(b"data: hello\n\n")), (1, guard)))
        } else {
            std::future::pending::<()>().await;
            None
        }
    });
    sse_response(stream)
}
