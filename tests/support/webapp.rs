//! A small single-page app as a tunnel's local service, for browser tests: its HTML references
//! `/assets/app.js` and `/assets/app.css` by root-absolute URLs, its script fetches `/api/data`
//! and opens a WebSocket to `/ws` (which echoes), and it shows what it got:
//!
//! - `#data`: `data: <message>` once `/api/data` answered;
//! - `#ws`: `echo: <text>` once the WebSocket echoed what the page sent;
//! - `#css`: `css: loaded` when the stylesheet applied.
//!
//! Root-absolute URLs are what most web apps emit; they work on a tunnel's subdomain and break
//! under a path prefix, which is what the browser test shows.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What `/api/data` answers, and `#data` then shows.
pub const DATA_MESSAGE: &str = "hello from the local service";

/// What the page sends on its WebSocket, and `#ws` shows once echoed.
pub const WS_TEXT: &str = "ping through the tunnel";

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tunnel page test</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/app.js" defer></script>
</head><body>
<h1>Through the tunnel</h1>
<p id="data">data: loading</p>
<p id="ws">ws: connecting</p>
<p id="css" class="styled">css: not applied</p>
</body></html>
"#;

const SCRIPT: &str = r#"
const show = (id, text) => { document.getElementById(id).textContent = text; };
fetch('/api/data')
  .then(r => r.json())
  .then(d => show('data', 'data: ' + d.message))
  .catch(e => show('data', 'data: failed ' + e));
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
ws.onopen = () => ws.send('__WS_TEXT__');
ws.onmessage = e => show('ws', 'echo: ' + e.data);
ws.onerror = () => show('ws', 'ws: failed');
window.addEventListener('load', () => {
  const color = getComputedStyle(document.getElementById('css')).color;
  show('css', color === 'rgb(0, 128, 0)' ? 'css: loaded' : 'css: missing (' + color + ')');
});
"#;

const STYLE: &str = ".styled { color: rgb(0, 128, 0); font-family: sans-serif; }\n";

/// The app, on an ephemeral port; dropping it stops it.
pub struct WebApp {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WebApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebApp {
    /// Starts the app on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/",
                get(|| async { typed("text/html; charset=utf-8", INDEX.to_string()) }),
            )
            .route(
                "/assets/app.js",
                get(|| async { typed("text/javascript", SCRIPT.replace("__WS_TEXT__", WS_TEXT)) }),
            )
            .route(
                "/assets/app.css",
                get(|| async { typed("text/css", STYLE.to_string()) }),
            )
            .route(
                "/api/data",
                get(|| async {
                    typed(
                        "application/json",
                        serde_json::json!({ "message": DATA_MESSAGE }).to_string(),
                    )
                }),
            )
            .route(
                "/ws",
                get(|ws: WebSocketUpgrade| async { ws.on_upgrade(echo) }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, task }
    }
}

fn typed(content_type: &'static str, body: String) -> Response {
    ([("content-type", content_type)], body).into_response()
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(_) = msg {
            if socket.send(msg).await.is_err() {
                return;
            }
        }
    }
}
