//! Replay: a captured request sent again to the tunnel's own local service, as it was or
//! changed, and captured like any other (its entry says what it replays).
//!
//! Only the local service's address is ever connected to: an edited path must be a path
//! (`/…`), so no request can be aimed elsewhere through the inspector.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::capture::{Capture, TeeBody};
use super::store::{EntryId, Kind, Store};

/// How long a replayed request may take, body included.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// What may be changed before replaying; `None` keeps the captured value.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Method.
    pub method: Option<String>,
    /// Path and query (must start with `/`).
    pub path: Option<String>,
    /// All headers, replacing the captured ones: `[["Name", "value"], …]`.
    pub headers: Option<Vec<(String, String)>>,
    /// A new body, as text.
    pub body: Option<String>,
    /// A new body, base64 (for binary bodies).
    pub body_base64: Option<String>,
}

/// Why a replay was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No such entry.
    #[error("no captured request with that id")]
    NotFound,
    /// WebSocket sessions cannot be replayed.
    #[error("a WebSocket session cannot be replayed")]
    WebSocket,
    /// The captured body is incomplete, so the request cannot be sent as it was.
    #[error("the captured body was truncated at {0} bytes (or is still arriving): replay it with an edited body")]
    Truncated(usize),
    /// An edit is unusable.
    #[error("invalid {0}")]
    BadEdit(&'static str),
    /// The local service could not be reached or failed.
    #[error("local service: {0}")]
    Local(String),
    /// No complete answer in time.
    #[error("the local service did not answer within {}s", REPLAY_TIMEOUT.as_secs())]
    Timeout,
}

/// What a replay produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The new entry.
    pub id: EntryId,
    /// The local service's status.
    pub status: u16,
}

/// Sends replays to the local service.
#[derive(Debug, Clone)]
pub struct Replayer {
    http: Client<HttpConnector, TeeBody<Full<Bytes>>>,
    authority: String,
}

impl Replayer {
    /// A replayer for the local service at `authority` (`host:port`).
    pub fn new(authority: String) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            authority,
        }
    }

    /// Replays entry `id` with `edits`; waits for the whole response.
    pub async fn replay(
        &self,
        store: &Arc<Store>,
        id: EntryId,
        edits: Edits,
    ) -> Result<Replayed, ReplayError> {
        let entry = store.get(id).ok_or(ReplayError::NotFound)?;
        if entry.kind == Kind::WebSocket {
            return Err(ReplayError::WebSocket);
        }
        let req = &entry.request;
        let method = match &edits.method {
            Some(m) => Method::from_bytes(m.trim().as_bytes())
                .map_err(|_| ReplayError::BadEdit("method"))?,
            // Packed from a valid method: the same bytes parse again.
            None => req.head.method().ok_or(ReplayError::BadEdit("method"))?,
        };
        let target = edits
            .path
            .clone()
            .unwrap_or_else(|| req.head.target().to_string());
        if !target.starts_with('/') {
            return Err(ReplayError::BadEdit("path: it must start with /"));
        }
        let uri: http::Uri = format!("http://{}{target}", self.authority)
            .parse()
            .map_err(|_| ReplayError::BadEdit("path"))?;
        let mut headers = match &edits.headers {
            Some(list) => header_map(list)?,
            None => req.head.header_map(),
        };
        let body = match new_body(&edits)? {
            Some(body) => {
                headers.remove(TRANSFER_ENCODING);
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                body
            }
            None if req.body.is_whole() => req.body.bytes(),
            None => return Err(ReplayError::Truncated(req.body.kept)),
        };
        let mut new = Capture::new_entry(&method, &target, &headers, body.is_empty());
        new.replay_of = Some(id);
        let capture = Capture::begin(store.clone(), new);
        let mut request = Request::new(capture.tee_request(Full::new(body)));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match tokio::time::timeout(REPLAY_TIMEOUT, self.exchange(&capture, request)).await {
            Ok(Ok(status)) => Ok(Replayed {
                id: capture.id(),
                status,
            }),
            Ok(Err(e)) => {
                let mut capture = capture;
                capture.fail(e.to_string());
                Err(e)
            }
            Err(_) => {
                let mut capture = capture;
                capture.fail("replay timed out");
                Err(ReplayError::Timeout)
            }
        }
    }

    async fn exchange(
        &self,
        capture: &Capture,
        request: Request<TeeBody<Full<Bytes>>>,
    ) -> Result<u16, ReplayError> {
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ReplayError::Local(crate_error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        capture.response(parts.status, &parts.headers);
        let mut body = capture.tee_response(body, &parts.headers);
        // Read to the end so that the entry has the whole response; the bytes are in the
        // capture (up to its limit), not kept here.
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| ReplayError::Local(e.to_string()))?;
        }
        Ok(parts.status.as_u16())
    }
}

fn crate_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn header_map(list: &[(String, String)]) -> Result<HeaderMap, ReplayError> {
    let mut map = HeaderMap::with_capacity(list.len());
    for (name, value) in list {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ReplayError::BadEdit("header name"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| ReplayError::BadEdit("header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn new_body(edits: &Edits) -> Result<Option<Bytes>, ReplayError> {
    use base64::Engine;
    match (&edits.body, &edits.body_base64) {
        (Some(_), Some(_)) => Err(ReplayError::BadEdit(
            "body: give body or body_base64, not both",
        )),
        (Some(text), None) => Ok(Some(Bytes::from(text.clone()))),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(|b| Some(Bytes::from(b)))
            .map_err(|_| ReplayError::BadEdit("body_base64")),
        (None, None) => Ok(None),
    }
}
