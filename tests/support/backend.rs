//! The "local service" of the tests: an axum app on an ephemeral port with routes that
//! exercise every behaviour the tunnel must preserve, and hooks that let tests observe it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
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

    /// Bytes produced by streaming routes.
    pub fn produced(&self) -> u64 {
        self.hooks.produced.load(Ordering::SeqCst)
    }
}

fn router(hooks: Arc<Hooks>, addr: SocketAddr) -> Router {
    Router::new()
        .route("/bytes/{n}", get(bytes_route))
        .route("/upload", post(upload))
        .route("/mirror", any(mirror))
        .route("/status/{code}", any(status))
        .route("/cookies", get(cookies))
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
        .fallback(echo)
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
