//! Every error a public client or API caller can see, mapped to a status in one place.
//!
//! Each carries a stable machine-readable code, sent in the `X-Tunnel-Error` header and in the
//! body (JSON when the caller accepts JSON, a small HTML page otherwise). Internal detail goes
//! to the logs, never to the public. [`ErrorBody`] is the JSON shape, for the OpenAPI document.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};

/// Header carrying the error code.
pub const ERROR_HEADER: &str = "x-tunnel-error";

/// An error answered by the server itself rather than by a local service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// No tunnel has that id.
    #[error("no tunnel with this id")]
    TunnelNotFound,
    /// No tunnel has that id, and the request came from a page of a tunnel under its path
    /// prefix: the path left the prefix (an app emitting root-absolute URLs). Same status and
    /// code as [`TunnelError::TunnelNotFound`], with a hint naming the URL probably meant.
    #[error("no tunnel with this id: this path left the prefix of tunnel {}", .0.tunnel)]
    LeftPrefix(Box<LeftPrefix>),
    /// The request's host is neither this server's domain, nor one label under it, nor a
    /// verified custom domain: no default tunnel, no open proxy.
    #[error("this server does not serve that host")]
    UnknownHost,
    /// A name two or more labels under the server's domain (`a.b.tunnels.example.com`).
    #[error("tunnels are one label under the server's domain")]
    NestedSubdomain,
    /// The tunnel exists but no client is connected to it.
    #[error("the tunnel exists but its client is not connected")]
    TunnelOffline,
    /// The client connection dropped while the request was in flight.
    #[error("the tunnel client disconnected during the request")]
    ClientDisconnected,
    /// The client could not reach the local service.
    #[error("the tunnel client could not connect to the local service")]
    LocalUnreachable,
    /// The local service failed or answered something unusable.
    #[error("the local service failed to answer")]
    LocalError,
    /// The client sent a response that breaks the protocol.
    #[error("the tunnel client sent an invalid response")]
    BadResponse,
    /// No response head within the request timeout.
    #[error("the local service did not answer in time")]
    Timeout,
    /// Too many requests in flight on the tunnel.
    #[error("too many concurrent requests on this tunnel")]
    Overloaded,
    /// The server is shutting down.
    #[error("the server is restarting")]
    ShuttingDown,
    /// A malformed request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Missing or wrong credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A name conflict.
    #[error("{0}")]
    Conflict(String),
    /// The name asked for is the caller's own tunnel, and a client serves it now: creating
    /// it again would cut that client off (unless `force`).
    #[error("tunnel {:?} is served by a running tunnel-client{}", .0.tunnel, .0.describe())]
    InUse(Box<InUse>),
    /// A per-key quota is exhausted.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Invalid input to the control API.
    #[error("{0}")]
    Invalid(String),
    /// Too many requests from this address (or to this tunnel).
    #[error("too many requests; retry in {retry_after_secs}s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// The client's address is not allowed on this tunnel.
    #[error("your address may not use this tunnel")]
    IpForbidden,
    /// The tunnel requires HTTP basic auth.
    #[error("this tunnel requires a user name and password")]
    BasicAuthRequired,
    /// The request body is larger than allowed.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request target is longer than allowed.
    #[error("request target too long")]
    UriTooLong,
    /// A request whose body framing is ambiguous (smuggling attempt or broken client). The
    /// connection is closed after the answer.
    #[error("ambiguous request framing: {0}")]
    BadFraming(&'static str),
    /// A request head (or chunk line) that breaks HTTP/1.1 syntax: a bare LF or CR, obs-fold,
    /// a control character, a bad request line. The connection is closed after the answer.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// A request head longer, or with more fields, than allowed.
    #[error("request head too large")]
    HeadTooLarge,
    /// Too many tunnel clients are handshaking at once.
    #[error("too many tunnel clients connecting at once")]
    HandshakesFull,
    /// The store of a shared tunnel registry failed. The in-memory registry never fails.
    #[error("the tunnel registry is unavailable")]
    RegistryUnavailable,
    /// Every public TCP port of `TUNNEL_TCP_PORTS` is held by a tunnel.
    #[error("{0}")]
    PortsExhausted(String),
}

/// The running client of a tunnel that a create did not replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// The tunnel.
    pub tunnel: String,
    /// Since when its client is connected.
    pub connected_since: Option<chrono::DateTime<chrono::Utc>>,
    /// The client's address.
    pub client_addr: Option<String>,
}

impl InUse {
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(since) = self.connected_since {
            s.push_str(&format!(", connected since {}", since.to_rfc3339()));
        }
        if let Some(addr) = &self.client_addr {
            s.push_str(&format!(" from {addr}"));
        }
        s
    }
}

/// Where a path that left a tunnel's prefix was probably meant to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftPrefix {
    /// The tunnel of the page the request came from (its `Referer`).
    pub tunnel: String,
    /// The same path under that tunnel's prefix.
    pub intended_url: String,
    /// The same path on the tunnel's subdomain, when the server has a `TUNNEL_DOMAIN`.
    pub subdomain_url: Option<String>,
}

impl LeftPrefix {
    fn hint(&self) -> String {
        let fix = match &self.subdomain_url {
            Some(sub) => format!("use the subdomain URL ({sub})"),
            None => "use a subdomain URL (TUNNEL_DOMAIN)".to_string(),
        };
        format!(
            "This path left the tunnel's prefix: the app probably uses absolute URLs. Probably \
             meant: {intended}. Fix: {fix}, or run tunnel-client with --keep-prefix and set the \
             app's base path to /{tunnel}/.",
            intended = self.intended_url,
            tunnel = self.tunnel,
        )
    }
}

impl TunnelError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        use TunnelError::*;
        match self {
            TunnelNotFound | LeftPrefix(_) | UnknownHost | NestedSubdomain => StatusCode::NOT_FOUND,
            TunnelOffline | ClientDisconnected | LocalUnreachable | LocalError | BadResponse => {
                StatusCode::BAD_GATEWAY
            }
            Timeout => StatusCode::GATEWAY_TIMEOUT,
            Overloaded | ShuttingDown | HandshakesFull | RegistryUnavailable
            | PortsExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            BadRequest(_) | Invalid(_) | BadFraming(_) | MalformedRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Unauthorized | BasicAuthRequired => StatusCode::UNAUTHORIZED,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IpForbidden => StatusCode::FORBIDDEN,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UriTooLong => StatusCode::URI_TOO_LONG,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict(_) | InUse(_) => StatusCode::CONFLICT,
            QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use TunnelError::*;
        match self {
            TunnelNotFound | LeftPrefix(_) => "tunnel_not_found",
            UnknownHost => "unknown_host",
            NestedSubdomain => "nested_subdomain",
            TunnelOffline => "tunnel_offline",
            ClientDisconnected => "client_disconnected",
            LocalUnreachable => "local_service_unreachable",
            LocalError => "local_service_error",
            BadResponse => "invalid_client_response",
            Timeout => "gateway_timeout",
            Overloaded => "tunnel_overloaded",
            ShuttingDown => "server_shutting_down",
            BadRequest(_) => "bad_request",
            Unauthorized => "unauthorized",
            MethodNotAllowed => "method_not_allowed",
            Conflict(_) => "conflict",
            InUse(_) => "tunnel_in_use",
            QuotaExceeded(_) => "quota_exceeded",
            Invalid(_) => "invalid_request",
            RateLimited { .. } => "rate_limited",
            IpForbidden => "ip_forbidden",
            BasicAuthRequired => "basic_auth_required",
            BodyTooLarge => "body_too_large",
            UriTooLong => "uri_too_long",
            BadFraming(_) => "bad_framing",
            MalformedRequest(_) => "malformed_request",
            HeadTooLarge => "headers_too_large",
            HandshakesFull => "too_many_handshakes",
            RegistryUnavailable => "registry_unavailable",
            PortsExhausted(_) => "tcp_ports_exhausted",
        }
    }

    /// What a user can do about it.
    fn hint(&self) -> Cow<'static, str> {
        match self {
            TunnelError::LeftPrefix(left) => Cow::Owned(left.hint()),
            other => Cow::Borrowed(other.static_hint()),
        }
    }

    fn static_hint(&self) -> &'static str {
        use TunnelError::*;
        match self {
            TunnelNotFound => "Check the URL; the tunnel may have expired or been deleted.",
            UnknownHost => {
                "Check the URL; a custom domain answers only once its TXT record is verified."
            }
            NestedSubdomain => "Use https://NAME.<domain>/: a tunnel name is a single label.",
            TunnelOffline => "Start tunnel-client for this tunnel, or wait for it to reconnect.",
            ClientDisconnected => "The tunnel client went away; retry once it reconnects.",
            LocalUnreachable => {
                "Is the local service running on the port tunnel-client forwards to?"
            }
            LocalError => "The local service closed the connection or failed; check its logs.",
            BadResponse => "Upgrade tunnel-client, or check its logs.",
            Timeout => "The local service took too long to start answering.",
            ShuttingDown => "Retry in a few seconds.",
            Unauthorized => "Send a valid key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
            RateLimited { .. } => "Slow down; the Retry-After header says when to try again.",
            IpForbidden => "The tunnel's owner limited which addresses may use it.",
            BasicAuthRequired => "Ask the tunnel's owner for the user name and password.",
            BodyTooLarge => "The server limits request bodies (TUNNEL_MAX_BODY_BYTES).",
            UriTooLong => "Shorten the URL (TUNNEL_MAX_URI_BYTES).",
            BadFraming(_) => "Send either Content-Length or Transfer-Encoding: chunked, once.",
            MalformedRequest(_) => "End every line of the request head with CRLF (RFC 9112).",
            HeadTooLarge => {
                "Send fewer or shorter headers (TUNNEL_MAX_HEADER_BYTES, TUNNEL_MAX_HEADERS)."
            }
            HandshakesFull | Overloaded | RegistryUnavailable => "Retry shortly.",
            InUse(_) => {
                "Stop that client, or create with \"force\": true (tunnel-client --force) to take \
                 the tunnel over; it is told who replaced it."
            }
            PortsExhausted(_) => {
                "Delete a TCP tunnel, or use the front door (tunnel-client connect) without a port."
            }
            _ => "",
        }
    }

    /// Renders for a caller that sent `headers`: JSON if it accepts JSON, HTML otherwise.
    pub fn render(&self, request_headers: &HeaderMap) -> Response {
        let wants_json = request_headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("json"))
            || !request_headers.contains_key(ACCEPT);
        if wants_json {
            self.json_response()
        } else {
            self.html_response()
        }
    }

    /// Renders as JSON: `{"error": {"code", "message", "hint"}}`.
    pub fn json_response(&self) -> Response {
        let mut body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string(), "hint": self.hint() }
        });
        if let TunnelError::InUse(in_use) = self {
            body["error"]["connected_since"] = serde_json::json!(in_use.connected_since);
            body["error"]["client_addr"] = serde_json::json!(in_use.client_addr);
        }
        self.with_headers(body.to_string(), "application/json")
    }

    fn html_response(&self) -> Response {
        let status = self.status();
        // The URL probably meant, as a link: the one thing the reader wants to click.
        let link = match self {
            TunnelError::LeftPrefix(left) => format!(
                "<p><a href=\"{url}\">{url}</a></p>",
                url = html_escape(&left.intended_url)
            ),
            _ => String::new(),
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
             <body><h1>{code} {reason}</h1><p>{msg}</p><p>{hint}</p>{link}<p><small>{tag}</small></p></body></html>\n",
            code = status.as_u16(),
            reason = status.canonical_reason().unwrap_or(""),
            msg = html_escape(&self.to_string()),
            hint = html_escape(&self.hint()),
            tag = self.code(),
        );
        self.with_headers(body, "text/html; charset=utf-8")
    }

    fn with_headers(&self, body: String, content_type: &'static str) -> Response {
        let mut resp = (self.status(), body).into_response();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            TunnelError::Unauthorized => {
                h.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tunnel\""),
                );
            }
            TunnelError::BasicAuthRequired => {
                h.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tunnel\", charset=\"UTF-8\""),
                );
            }
            TunnelError::RateLimited { retry_after_secs } => {
                h.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs),
                );
            }
            TunnelError::BadFraming(_)
            | TunnelError::MalformedRequest(_)
            | TunnelError::HeadTooLarge
            | TunnelError::BodyTooLarge
            | TunnelError::BadRequest(_) => {
                // The rest of the request cannot be trusted (or is not wanted): close.
                h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        // For the middleware that counts rejections (crate::app::count_rejections).
        resp.extensions_mut().insert(self.clone());
        resp
    }
}

/// Body of every error the server answers itself (`X-Tunnel-Error` carries the same code).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error, as rendered by [`TunnelError::json_response`].
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unauthorized`, `tunnel_not_found`, `conflict`.
    #[schema(example = "unauthorized")]
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it (may be empty).
    pub hint: String,
    /// `tunnel_in_use` only: since when the running client is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<chrono::DateTime<chrono::Utc>>,
    /// `tunnel_in_use` only: the running client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

impl IntoResponse for TunnelError {
    fn into_response(self) -> Response {
        self.json_response()
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let e = TunnelError::Timeout;
        let r = e.json_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[ERROR_HEADER], "gateway_timeout");
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("text/html"));
        let r = TunnelError::TunnelOffline.render(&h);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html"));
    }
}
