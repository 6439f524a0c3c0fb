//! The forwarding side: sends a public request to the pod holding its tunnel's client, over
//! pooled HTTP/1.1 connections to that pod's peer listener, streaming both bodies (hyper's
//! flow control on the connection, the tunnel's on the other pod: end to end).
//!
//! A request with a body goes out with `Expect: 100-continue`, and its body stays here
//! ([`Outgoing::body`]) until the other pod asks for it (`100 Continue`, sent by hyper when
//! the relay starts reading it). So when that pod answers "not here", or cannot be reached,
//! the body was never started and the caller gets it back to send elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{HeaderValue, EXPECT};
use http::{HeaderMap, Method, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

use super::wire::{Refusal, AUTH, EXPECT_ADDED, HOP, TCP, TUNNEL};

/// How long a connection to another pod may take: it is on the same network, so a pod that
/// does not answer in this time is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle pooled connections kept per pod.
const POOL_PER_POD: usize = 256;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A public request on its way to another pod.
#[derive(Debug)]
pub struct Outgoing {
    /// `HOST:PORT` of that pod's peer listener.
    pub peer: String,
    /// The tunnel.
    pub tunnel: String,
    /// The method.
    pub method: Method,
    /// The target the local service gets (`/path?query`).
    pub target: String,
    /// The headers the local service gets.
    pub headers: HeaderMap,
    /// The body; `None` for none (or a WebSocket upgrade, whose bytes follow the `101`).
    pub body: Option<Body>,
}

/// What the other pod answered.
#[derive(Debug)]
pub enum Answer {
    /// The local service's response (or a protocol switch), body unread.
    Response(Response<Incoming>),
    /// The other pod's own answer. `body` is the request body if it was never started.
    Refused {
        /// Why.
        refusal: Refusal,
        /// The body, back, if the other pod never asked for it.
        body: Option<Body>,
    },
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The pod could not be reached; `body` is the request body, never started.
    #[error("cannot reach the pod: {error}")]
    Unreachable {
        /// What failed.
        error: BoxError,
        /// The body, back.
        body: Option<Body>,
    },
    /// The exchange failed after the request went out.
    #[error("the exchange with the pod failed: {0}")]
    Failed(BoxError),
    /// The request could not be built (a target that is no URI).
    #[error("cannot build the request: {0}")]
    Invalid(http::Error),
}

/// The pooled client of one pod, for all other pods.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, GatedBody>,
    secret: HeaderValue,
    node: HeaderValue,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A header value that is not one (a node id or secret with control characters, which the
/// settings refuse).
#[derive(Debug, thiserror::Error)]
#[error("the node id and the peer secret must be printable text")]
pub struct BadIdentity;

impl PeerClient {
    /// A client presenting `secret`, as pod `node`.
    pub fn new(node: &str, secret: &str) -> Result<Self, BadIdentity> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_POD)
            .build(connector);
        let mut secret = HeaderValue::from_str(secret).map_err(|_| BadIdentity)?;
        secret.set_sensitive(true);
        Ok(Self {
            http,
            secret,
            node: HeaderValue::from_str(node).map_err(|_| BadIdentity)?,
        })
    }

    /// Sends `req` and waits for the response head (or the other pod's refusal).
    pub async fn send(&self, req: Outgoing) -> Result<Answer, SendError> {
        let Outgoing {
            peer,
            tunnel,
            method,
            target,
            mut headers,
            body,
        } = req;
        super::wire::strip_own(&mut headers);
        headers.insert(AUTH, self.secret.clone());
        headers.insert(HOP, self.node.clone());
        let tunnel = HeaderValue::from_str(&tunnel).map_err(|e| SendError::Invalid(e.into()))?;
        headers.insert(TUNNEL, tunnel);
        let slot = Arc::new(Slot::default());
        let gated = match body {
            Some(body) => {
                if !headers.contains_key(EXPECT) {
                    headers.insert(EXPECT, HeaderValue::from_static("100-continue"));
                    headers.insert(EXPECT_ADDED, HeaderValue::from_static("1"));
                }
                slot.fill(body)
            }
            None => GatedBody::empty(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{peer}{target}"))
            .body(gated)
            .map_err(SendError::Invalid)?;
        *request.headers_mut() = headers;
        let opener = slot.clone();
        hyper::ext::on_informational(&mut request, move |res| {
            if res.status() == http::StatusCode::CONTINUE {
                opener.open();
            }
        });
        match self.http.request(request).await {
            Ok(resp) => match Refusal::of(resp.headers()) {
                Some(refusal) => Ok(Answer::Refused {
                    refusal,
                    body: slot.take_back(),
                }),
                None => Ok(Answer::Response(resp)),
            },
            Err(e) if e.is_connect() => Err(SendError::Unreachable {
                error: Box::new(e),
                body: slot.take_back(),
            }),
            Err(e) => Err(SendError::Failed(Box::new(e))),
        }
    }
}

impl PeerClient {
    /// Opens a TCP connection from `consumer` to `tunnel`, whose client is on the pod whose
    /// peer listener is `peer`: a WebSocket upgrade whose bytes, after the `101`, are the
    /// consumer's WebSocket (see `crate::tcp::relay`). Waits for the answer's head.
    pub async fn open_tcp(
        &self,
        peer: &str,
        tunnel: &str,
        consumer: std::net::SocketAddr,
    ) -> Result<Answer, SendError> {
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| SendError::Invalid(e.into()));
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{peer}/api/tunnels/{tunnel}/tcp"))
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::CONNECTION, "upgrade")
            .body(GatedBody::empty())
            .map_err(SendError::Invalid)?;
        let headers = request.headers_mut();
        headers.insert(AUTH, self.secret.clone());
        headers.insert(HOP, self.node.clone());
        headers.insert(TUNNEL, value(tunnel)?);
        headers.insert(TCP, value(&consumer.to_string())?);
        match self.http.request(request).await {
            Ok(resp) => match Refusal::of(resp.headers()) {
                Some(refusal) => Ok(Answer::Refused {
                    refusal,
                    body: None,
                }),
                None => Ok(Answer::Response(resp)),
            },
            Err(e) if e.is_connect() => Err(SendError::Unreachable {
                error: Box::new(e),
                body: None,
            }),
            Err(e) => Err(SendError::Failed(Box::new(e))),
        }
    }
}

/// Where a request body waits until the other pod asks for it.
#[derive(Default)]
struct Slot {
    /// Only ever held for a take or a put; no code under it can panic.
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    body: Option<Body>,
    /// Fired by `100 Continue`.
    open: Option<oneshot::Sender<()>>,
    /// The body left the slot: it cannot be sent elsewhere any more.
    started: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `body` here, and returns the body hyper sends, which takes it once opened.
    fn fill(self: &Arc<Self>, body: Body) -> GatedBody {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        s.body = Some(body);
        s.open = Some(tx);
        GatedBody {
            slot: Some(self.clone()),
            gate: Some(rx),
            inner: None,
        }
    }

    fn open(&self) {
        if let Some(tx) = self.lock().open.take() {
            // The request may be gone already: nothing to open then.
            let _ = tx.send(());
        }
    }

    /// The body, if it never left.
    fn take_back(&self) -> Option<Body> {
        let mut s = self.lock();
        if s.started {
            return None;
        }
        s.body.take()
    }

    fn start(&self) -> Option<Body> {
        let mut s = self.lock();
        s.started = true;
        s.body.take()
    }
}

/// The body hyper sends: nothing until the gate opens, then the request body.
pub struct GatedBody {
    slot: Option<Arc<Slot>>,
    gate: Option<oneshot::Receiver<()>>,
    inner: Option<Body>,
}

impl GatedBody {
    fn empty() -> Self {
        Self {
            slot: None,
            gate: None,
            inner: None,
        }
    }
}

/// The other pod answered without ever asking for the body.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not asked for")]
struct NotWanted;

impl http_body::Body for GatedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(gate) = &mut this.gate {
            match Pin::new(gate).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    this.gate = None;
                    this.inner = this.slot.as_ref().and_then(|s| s.start());
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(Box::new(NotWanted)))),
            }
        }
        match &mut this.inner {
            Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.slot, &self.inner) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Some(body)) => body.size_hint(),
            (Some(_), None) => SizeHint::default(),
        }
    }
}
