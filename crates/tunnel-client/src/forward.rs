//! Forwards one stream to the local service and streams the answer back.
//!
//! The HTTP client follows no redirects and decodes nothing: status, headers and body bytes
//! pass exactly as the local service produced them. The answer goes back through the stream's
//! [`Responder`], which sends the response head exactly once; the body follows through the
//! protocol crate's [`pump`] (the same one the server streams request bodies with).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use http::header::{HeaderValue, LOCATION};
use http::Method;
use http_body_util::{BodyExt, Either, Empty, StreamBody};
use hyper::body::Frame;
use tracing::Instrument;
use tunnel_protocol::mux::{
    pump, splice, BodyReceiver, IncomingRequest, PumpError, Responder, ResponseParts,
};
use tunnel_protocol::{ProtocolError, RequestHead, ResetCode};

use crate::config::{ClientConfig, HostHeader};
use crate::display::{format_bytes, Printer, RequestLine};
use crate::inspect::{Capture, Inspector};

mod local;
mod outgoing;

pub use local::LocalBody;
use local::{LocalClient, LocalError, Prepared, ResponseBody};
use outgoing::Outgoing;

/// What every forwarding task needs.
#[derive(Debug, Clone)]
pub struct Forwarder {
    local: Arc<LocalClient>,
    authority: String,
    host_header: HostHeader,
    /// The `Host` every request gets (`HostHeader::Rewrite` or `Fixed`), built once: a clone
    /// shares its bytes, where building it per request was an allocation.
    host: Option<HeaderValue>,
    /// The `Host` of a request that has none: the local address.
    local_host: Option<HeaderValue>,
    /// The `Origin` a same-origin request gets with the Host rewritten: `http://<local>`.
    local_origin: Option<HeaderValue>,
    printer: Printer,
    inspector: Option<Inspector>,
}

/// Why a request head from the server cannot be sent to the local service.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("invalid method")]
    Method,
    #[error("request target is not a path")]
    NotAPath,
    #[error("invalid request target")]
    Target,
    #[error(transparent)]
    Headers(#[from] ProtocolError),
}

impl Forwarder {
    /// A forwarder with a pool of HTTP/1.1 connections to the configured local service.
    pub fn new(cfg: &ClientConfig, printer: Printer) -> Self {
        let authority = cfg.local_authority();
        let local_host = HeaderValue::from_str(&authority).ok();
        let host = match &cfg.host_header {
            HostHeader::Rewrite => local_host.clone(),
            HostHeader::Preserve => None,
            HostHeader::Fixed(h) => HeaderValue::from_str(h).ok(),
        };
        let local_origin = HeaderValue::from_str(&format!("http://{authority}")).ok();
        Self {
            local: Arc::new(LocalClient::new(authority.clone())),
            authority,
            host_header: cfg.host_header.clone(),
            host,
            local_host,
            local_origin,
            printer,
            inspector: None,
        }
    }

    /// Captures every exchange into `inspector` (the traffic inspector's store).
    pub fn with_inspector(mut self, inspector: Option<Inspector>) -> Self {
        self.inspector = inspector;
        self
    }

    /// [`Forwarder::forward`], boxed, as the session spawns it. The forward's state is about
    /// 3 KiB (the request to the local service, the response, the body pump), and the runtime
    /// moves a spawned future several times (into the task, each change of stage): about ten
    /// copies of it per request, 4,500 instructions of a small request's 58,000 (callgrind).
    /// Boxed, it is copied once, for one allocation more.
    pub fn boxed(
        self: Arc<Self>,
        request: IncomingRequest,
    ) -> Pin<Box<impl Future<Output = ()> + Send + 'static>> {
        Box::pin(self.forward(request))
    }

    /// Serves one stream to completion, inside a `request` span carrying the request id the
    /// server assigned (its `X-Request-Id`), which the per-request line shows too: the same id
    /// is on the server's log lines of this request and reaches the local service.
    ///
    /// The head stays here while the exchange runs (its headers go to the local service), so
    /// that the log line borrows its method and path instead of copying them, and the request
    /// id is copied once, onto the stack: three allocations fewer per request than owned
    /// copies (alloc-count build).
    pub async fn forward(self: Arc<Self>, request: IncomingRequest) {
        let started = Instant::now();
        let IncomingRequest {
            mut head,
            body,
            responder,
        } = request;
        let websocket = head.headers.upgrades_to_websocket();
        let request_id = RequestId::of(&head);
        let request_id = request_id.as_ref().map(RequestId::as_str);
        let span = tracing::info_span!(
            "request",
            request_id = request_id.unwrap_or("-"),
            stream = head.stream_id,
        );
        let mut capture = None;
        let outcome = self
            .exchange(&mut head, body, responder, websocket, &mut capture)
            .instrument(span.clone())
            .await;
        if let (Some(capture), Err(failure)) = (capture.as_mut(), &outcome) {
            capture.fail(failure.note.clone());
        }
        let (status, bytes, note) = match outcome {
            Ok(Exchanged::Http { status, bytes }) => (Some(status), bytes, String::new()),
            Ok(Exchanged::WebSocket { sent, received }) => (
                Some(101),
                sent + received,
                format!(
                    "websocket closed (in {}, out {})",
                    format_bytes(received),
                    format_bytes(sent)
                ),
            ),
            Err(Failure { status, note }) => (status, 0, note),
        };
        let method = if websocket && status == Some(101) {
            "WS"
        } else {
            head.method.as_str()
        };
        let path = head.target.as_str();
        let took = started.elapsed();
        span.in_scope(|| {
            tracing::debug!(
                method,
                path = %path,
                status,
                bytes,
                ms = took.as_millis() as u64,
                note = %note,
                "request"
            )
        });
        self.printer.request(&RequestLine {
            method,
            path,
            status,
            took,
            bytes,
            request_id,
            note: &note,
        });
    }

    /// The request to the local service, and its answer back through the stream. Takes the
    /// head's headers.
    async fn exchange(
        &self,
        head: &mut RequestHead,
        body: BodyReceiver,
        responder: Responder,
        websocket: bool,
        capture: &mut Option<Capture>,
    ) -> Result<Exchanged, Failure> {
        // For an upgrade the request has no body; the stream's request direction carries the
        // public client's WebSocket bytes once the local service said 101.
        let (body, upgrade_body) = if websocket {
            (None, Some(body))
        } else {
            (Some(body), None)
        };
        // In a block: the request's headers (on the stack) are done with before the first
        // await, and stay out of the future's state.
        let started = {
            let local = match self.build_request(head, body) {
                Ok(r) => r,
                Err(why) => {
                    let why = why.to_string();
                    responder.reset(ResetCode::ProtocolError, &why);
                    return Err(Failure::new(
                        Some(502),
                        format!("bad request from server: {why}"),
                    ));
                }
            };
            self.prepare(local, capture)
        };
        let (prepared, body) = match started {
            Ok(p) => p,
            Err(e) => return Err(self.local_failed(responder, &e)),
        };
        let response = tokio::select! {
            r = self.local.send(prepared, body) => r,
            _ = responder.cancelled() => return Err(Failure::cancelled(None)),
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => return Err(self.local_failed(responder, &e)),
        };
        match upgrade_body {
            Some(receiver) if response.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                let capture = capture.as_ref();
                Box::pin(self.switch_protocols(
                    responder,
                    response,
                    receiver,
                    &head.target,
                    capture,
                ))
                .await
            }
            upgrade_body => {
                // A refused upgrade: an ordinary response; the request direction is let go.
                drop(upgrade_body);
                self.relay_response(responder, response, capture.as_ref())
                    .await
            }
        }
    }

    /// The local service could not be reached or failed: the stream is refused with a code
    /// the server maps to the public client's status.
    fn local_failed(&self, responder: Responder, e: &LocalError) -> Failure {
        let (code, note) = if e.is_connect() {
            (
                ResetCode::LocalConnectFailed,
                format!("cannot connect to http://{}", self.authority),
            )
        } else {
            (ResetCode::LocalError, "local service failed".to_string())
        };
        let detail = crate::control::error_chain(e);
        responder.reset(code, &detail);
        Failure::new(Some(502), format!("{note}: {detail}"))
    }

    /// Sends the local service's response head, then pumps its body into the stream.
    async fn relay_response(
        &self,
        responder: Responder,
        response: http::Response<ResponseBody>,
        capture: Option<&Capture>,
    ) -> Result<Exchanged, Failure> {
        let (mut parts, body) = response.into_parts();
        self.rewrite_location(&mut parts.headers);
        let body = match capture {
            Some(c) if http_body::Body::is_end_stream(&body) => {
                c.empty_response(parts.status, &parts.headers);
                Either::Right(body)
            }
            Some(c) => {
                c.response(parts.status, &parts.headers);
                Either::Left(c.tee_response(body, &parts.headers))
            }
            None => Either::Right(body),
        };
        let status = parts.status.as_u16();
        let head = ResponseParts {
            status,
            headers: parts.headers,
        };
        if http_body::Body::is_end_stream(&body) {
            return match responder.respond_empty(head).await {
                Ok(()) => Ok(Exchanged::Http { status, bytes: 0 }),
                Err(_) => Err(Failure::connection_lost(status)),
            };
        }
        let Ok(mut sender) = responder.respond(head).await else {
            return Err(Failure::connection_lost(status));
        };
        match pump(body, &mut sender, |_| Ok::<_, Infallible>(())).await {
            Ok(bytes) => Ok(Exchanged::Http { status, bytes }),
            Err(PumpError::Cancelled) => Err(Failure::cancelled(Some(status))),
            Err(PumpError::Finish(_)) => Err(Failure::connection_lost(status)),
            Err(PumpError::Send(e)) => {
                Err(Failure::new(Some(status), format!("stream ended: {e}")))
            }
            Err(PumpError::Body(e)) => {
                // After the head: the server must see the head, then the failure.
                sender.abort(ResetCode::LocalError, &e.to_string()).await;
                Err(Failure::new(
                    Some(status),
                    format!("local service broke off: {e}"),
                ))
            }
            Err(PumpError::Stopped(never)) => match never {},
        }
    }

    /// The local service accepted a WebSocket upgrade: pass its 101 on, then splice the
    /// upgraded connection to the stream until both sides are done.
    async fn switch_protocols(
        &self,
        responder: Responder,
        response: http::Response<ResponseBody>,
        receiver: BodyReceiver,
        target: &str,
        capture: Option<&Capture>,
    ) -> Result<Exchanged, Failure> {
        let (parts, body) = response.into_parts();
        let head = ResponseParts {
            status: 101,
            headers: &parts.headers,
        };
        let Ok(sender) = responder.respond(head).await else {
            return Err(Failure::connection_lost(101));
        };
        // A `101` body always holds its connection; the check keeps this path total.
        let Some(upgraded) = body.into_upgraded() else {
            let why = "the 101 response has no connection";
            sender.reset(ResetCode::LocalError, why);
            return Err(Failure::new(
                Some(502),
                format!("local upgrade failed: {why}"),
            ));
        };
        let path = target.split('?').next().unwrap_or("/");
        self.printer.websocket_opened(path);
        let io = match capture {
            Some(c) => {
                c.response(http::StatusCode::SWITCHING_PROTOCOLS, &parts.headers);
                tokio_util::either::Either::Left(c.tee_upgraded(upgraded))
            }
            None => tokio_util::either::Either::Right(upgraded),
        };
        match splice(io, sender, receiver, None).await {
            Ok(stats) => Ok(Exchanged::WebSocket {
                sent: stats.sent,
                received: stats.received,
            }),
            Err(e) => Err(Failure::new(Some(101), format!("websocket ended: {e}"))),
        }
    }

    /// The request for the local service: its method, target and body, and the head's
    /// headers as they go to it (Host and Origin rewritten, see [`Outgoing`]), borrowed from
    /// the head, so that no header map is built for a request (a map cost about 4,300
    /// instructions of a small request and its drop, callgrind).
    fn build_request<'h>(
        &'h self,
        head: &'h RequestHead,
        receiver: Option<BodyReceiver>,
    ) -> Result<LocalRequest<'h>, BadRequest> {
        let method = Method::from_bytes(head.method.as_bytes()).map_err(|_| BadRequest::Method)?;
        if !head.target.starts_with('/') {
            return Err(BadRequest::NotAPath);
        }
        // Origin-form, as sent on the connection to the local service.
        let uri = http::Uri::try_from(head.target.as_str()).map_err(|_| BadRequest::Target)?;
        let pairs = head.headers.valid_iter()?;
        let rewrite_origin = match self.host_header {
            HostHeader::Rewrite => self.local_origin.as_ref().map(HeaderValue::as_bytes),
            _ => None,
        };
        let headers = Outgoing::new(
            pairs,
            self.host.as_ref().map(HeaderValue::as_bytes),
            self.local_host.as_ref().map(HeaderValue::as_bytes),
            rewrite_origin,
        );
        let body: LocalBody = match receiver {
            Some(receiver) if !head.end_stream => BodyExt::boxed(StreamBody::new(
                receiver.map(|chunk| chunk.map(Frame::data)),
            )),
            _ => Empty::new().map_err(|never| match never {}).boxed(),
        };
        Ok(LocalRequest {
            method,
            uri,
            headers,
            body,
        })
    }

    /// The head for the local service written, its capture started (with the inspector on)
    /// and its body teed.
    fn prepare(
        &self,
        local: LocalRequest<'_>,
        capture: &mut Option<Capture>,
    ) -> Result<(Prepared, LocalBody), LocalError> {
        let LocalRequest {
            method,
            uri,
            headers,
            body,
        } = local;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let body = self.tap(&method, target, headers.iter(), body, capture);
        let has_body = !http_body::Body::is_end_stream(&body);
        let prepared = Prepared::new(&method, target, headers.iter(), has_body)?;
        Ok((prepared, body))
    }

    /// With the inspector on: starts the capture of the request as it goes to the local
    /// service and tees its body.
    fn tap<'h>(
        &self,
        method: &Method,
        target: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
        body: LocalBody,
        capture: &mut Option<Capture>,
    ) -> LocalBody {
        let Some(inspector) = &self.inspector else {
            return body;
        };
        let empty = http_body::Body::is_end_stream(&body);
        let c = inspector.capture(method, target, headers, empty);
        // A body known to be empty has nothing to tee (its entry already says so): no box
        // and no extra poll for most requests.
        let body = if empty {
            body
        } else {
            BodyExt::boxed(c.tee_request(body))
        };
        *capture = Some(c);
        body
    }

    /// `Location: http://localhost:3000/x` → `/x`, which the server then roots under the
    /// tunnel's prefix: a redirect to the local address would lead the browser nowhere.
    fn rewrite_location(&self, headers: &mut http::HeaderMap) {
        let Some(loc) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let local_prefixes = [
            format!("http://{}", self.authority),
            format!("https://{}", self.authority),
        ];
        for p in &local_prefixes {
            if let Some(rest) = loc.strip_prefix(p.as_str()) {
                if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                    let new = if rest.starts_with('/') {
                        rest.to_string()
                    } else {
                        format!("/{rest}")
                    };
                    if let Ok(v) = HeaderValue::from_str(&new) {
                        headers.insert(LOCATION, v);
                    }
                    return;
                }
            }
        }
    }
}

/// Longest request id shown.
const MAX_REQUEST_ID: usize = 128;

/// The request id the server put in the head (`X-Request-Id`), if it is printable as is, held
/// on the stack: the forward needs it after the head's headers went to the local service, and
/// a `String` was an allocation per request. The server only sends short ids of letters,
/// digits and `-_.:+/=@`; anything else (another server) is not echoed into the terminal or
/// the logs.
struct RequestId {
    bytes: [u8; MAX_REQUEST_ID],
    len: usize,
}

impl RequestId {
    fn of(head: &RequestHead) -> Option<Self> {
        let value = head.headers.get("x-request-id")?;
        let ok = !value.is_empty()
            && value.len() <= MAX_REQUEST_ID
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b));
        if !ok {
            return None;
        }
        let mut bytes = [0; MAX_REQUEST_ID];
        bytes[..value.len()].copy_from_slice(value);
        Some(Self {
            bytes,
            len: value.len(),
        })
    }

    fn as_str(&self) -> &str {
        // Only ASCII was copied in (checked in `of`), so this never falls back.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("-")
    }
}

/// A request for the local service, its headers borrowed from the tunnel head.
struct LocalRequest<'h> {
    method: Method,
    uri: http::Uri,
    headers: Outgoing<'h>,
    body: LocalBody,
}

/// How an exchange ended well.
enum Exchanged {
    /// An HTTP response of `bytes` body bytes.
    Http { status: u16, bytes: u64 },
    /// A WebSocket session.
    WebSocket { sent: u64, received: u64 },
}

struct Failure {
    status: Option<u16>,
    note: String,
}

impl Failure {
    fn new(status: Option<u16>, note: impl Into<String>) -> Self {
        Self {
            status,
            note: note.into(),
        }
    }

    fn cancelled(status: Option<u16>) -> Self {
        Self::new(status, "cancelled by the public client")
    }

    fn connection_lost(status: u16) -> Self {
        Self::new(Some(status), "tunnel connection lost")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_protocol::headers::{WireHeaders, WireValue};

    fn head(pairs: &[(&str, &str)]) -> RequestHead {
        let list = WireHeaders(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), WireValue::from(*v)))
                .collect(),
        );
        RequestHead {
            stream_id: 1,
            method: "GET".into(),
            target: "/".into(),
            headers: list.into(),
            end_stream: true,
            tcp: None,
        }
    }

    fn forwarder(host_header: HostHeader) -> Forwarder {
        let authority = "localhost:8888".to_string();
        let local_host = HeaderValue::from_str(&authority).ok();
        let host = match &host_header {
            HostHeader::Rewrite => local_host.clone(),
            HostHeader::Preserve => None,
            HostHeader::Fixed(h) => HeaderValue::from_str(h).ok(),
        };
        Forwarder {
            local: Arc::new(LocalClient::new(authority.clone())),
            local_origin: HeaderValue::from_str(&format!("http://{authority}")).ok(),
            authority,
            host_header,
            host,
            local_host,
            printer: Printer::new(false),
            inspector: None,
        }
    }

    fn sent(f: &Forwarder, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let head = head(pairs);
        let req = f.build_request(&head, None).expect("valid");
        req.headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_host_is_set_once_however_many_came() {
        let f = forwarder(HostHeader::Rewrite);
        assert_eq!(
            sent(
                &f,
                &[("accept", "*/*"), ("Host", "public.example"), ("x", "1")]
            ),
            owned(&[("accept", "*/*"), ("host", "localhost:8888"), ("x", "1")])
        );
        assert_eq!(
            sent(
                &f,
                &[
                    ("host", "a.example"),
                    ("accept", "*/*"),
                    ("host", "b.example")
                ]
            ),
            owned(&[("host", "localhost:8888"), ("accept", "*/*")])
        );
        assert_eq!(
            sent(&f, &[("accept", "*/*")]),
            owned(&[("accept", "*/*"), ("host", "localhost:8888")])
        );
        let f = forwarder(HostHeader::Preserve);
        assert_eq!(
            sent(&f, &[("host", "a.example"), ("host", "b.example")]),
            owned(&[("host", "a.example"), ("host", "b.example")])
        );
        assert_eq!(sent(&f, &[]), owned(&[("host", "localhost:8888")]));
        let f = forwarder(HostHeader::Fixed("fixed.example".into()));
        assert_eq!(
            sent(&f, &[("host", "a.example"), ("origin", "http://a.example")]),
            owned(&[("host", "fixed.example"), ("origin", "http://a.example")])
        );
    }

    #[test]
    fn only_a_same_origin_origin_follows_the_host() {
        let f = forwarder(HostHeader::Rewrite);
        assert_eq!(
            sent(
                &f,
                &[
                    ("host", "myapp.tunnels.example.com"),
                    ("x-forwarded-proto", "https"),
                    ("origin", "https://MyApp.tunnels.example.com"),
                    ("origin", "https://second.example"),
                ]
            ),
            owned(&[
                ("host", "localhost:8888"),
                ("x-forwarded-proto", "https"),
                ("origin", "http://localhost:8888"),
            ])
        );
        for other in [
            "https://evil.example",
            "http://myapp.tunnels.example.com",
            "null",
            "https:/myapp.tunnels.example.com",
        ] {
            let pairs = [
                ("host", "myapp.tunnels.example.com"),
                ("x-forwarded-proto", "https"),
                ("origin", other),
            ];
            let got = sent(&f, &pairs);
            assert_eq!(got[2], ("origin".to_string(), other.to_string()));
        }
    }
}
