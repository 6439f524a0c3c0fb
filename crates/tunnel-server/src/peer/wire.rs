//! What a pod-to-pod request carries besides the public request: the peer secret, the hop
//! header, the tunnel; and what the pod holding the client answers when it does not pass the
//! local service's response on (not here, or an error of its own).
//!
//! The request is the public one after the proxy's header rules, as the local service would
//! get it, plus the headers below; its target is the one the local service gets. Every header
//! of the `x-tunnel-peer-` family (and `x-tunnel-hop`) is the servers' own: stripped from what
//! reaches the local service and from the local service's response on the way back.

use axum::body::Body;
use axum::response::Response;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use crate::auth::SecretHash;
use crate::error::TunnelError;

/// The peer secret (`TUNNEL_PEER_SECRET`), compared by digest in constant time.
pub const AUTH: HeaderName = HeaderName::from_static("x-tunnel-peer-auth");

/// The pod that forwarded the request. A request carrying it is never forwarded again: the
/// pod receiving it serves it from its own client or answers "not here".
pub const HOP: HeaderName = HeaderName::from_static("x-tunnel-hop");

/// The tunnel the request is for.
pub const TUNNEL: HeaderName = HeaderName::from_static("x-tunnel-peer-tunnel");

/// On a TCP connection to the tunnel (its front door) forwarded to the pod holding the
/// client: the consumer's address (`IP:PORT`). A request carrying it is a TCP connection, not
/// a request for the local service (see `crate::tcp::relay`).
pub const TCP: HeaderName = HeaderName::from_static("x-tunnel-peer-tcp");

/// Present when the forwarding pod added `Expect: 100-continue` itself (to learn whether the
/// body is wanted before sending it): the local service must not see it.
pub const EXPECT_ADDED: HeaderName = HeaderName::from_static("x-tunnel-peer-expect");

/// On an answer of the pod holding the client rather than of the local service: the error
/// code ([`TunnelError::code`], or [`NOT_HERE`]).
pub const ERROR: HeaderName = HeaderName::from_static("x-tunnel-peer-error");

/// The client is not (or no longer) connected to this pod.
pub const NOT_HERE: &str = "not_here";

/// An answer of the pod holding the client instead of the local service's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client is not connected here: ask the registry again.
    NotHere,
    /// This error, as the public client should see it.
    Error(TunnelError),
}

impl Refusal {
    /// The answer on the wire: a status, [`ERROR`], and `Retry-After` for a rate limit.
    pub fn response(&self) -> Response {
        let (status, code) = match self {
            Refusal::NotHere => (StatusCode::MISDIRECTED_REQUEST, NOT_HERE),
            Refusal::Error(e) => (e.status(), e.code()),
        };
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(ERROR, HeaderValue::from_static(code));
        if let Refusal::Error(TunnelError::RateLimited { retry_after_secs }) = self {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        resp
    }

    /// The refusal an answer carries, if it is one.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let code = headers.get(ERROR)?.to_str().ok()?;
        if code == NOT_HERE {
            return Some(Refusal::NotHere);
        }
        let retry_after_secs = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // A code this pod does not know (a newer pod's): the client is unusable from here.
        Some(Refusal::Error(
            error_of(code, retry_after_secs).unwrap_or(TunnelError::BadResponse),
        ))
    }
}

/// The errors a pod holding a client may answer, by code.
fn error_of(code: &str, retry_after_secs: u64) -> Option<TunnelError> {
    use TunnelError::*;
    let known = [
        TunnelOffline,
        ClientDisconnected,
        LocalUnreachable,
        LocalError,
        BadResponse,
        Timeout,
        Overloaded,
        ShuttingDown,
        BodyTooLarge,
        Unauthorized,
        RegistryUnavailable,
        IpForbidden,
    ];
    if code == "rate_limited" {
        return Some(RateLimited { retry_after_secs });
    }
    known.into_iter().find(|e| e.code() == code)
}

/// Removes the servers' own headers (the `x-tunnel-peer-` family and [`HOP`]).
pub fn strip_own(headers: &mut HeaderMap) {
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-tunnel-peer-") || *k == HOP)
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
}

/// Checks the peer secret a request presents.
#[derive(Debug, Clone)]
pub struct PeerAuth {
    secret: SecretHash,
}

impl PeerAuth {
    /// Accepts requests presenting `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            secret: SecretHash::of(secret),
        }
    }

    /// Whether `headers` carry the secret (constant time; a missing header costs the same).
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(AUTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.secret.matches(presented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip() {
        for r in [
            Refusal::NotHere,
            Refusal::Error(TunnelError::Timeout),
            Refusal::Error(TunnelError::LocalUnreachable),
            Refusal::Error(TunnelError::RateLimited {
                retry_after_secs: 7,
            }),
        ] {
            let resp = r.response();
            assert_eq!(Refusal::of(resp.headers()), Some(r.clone()), "{r:?}");
        }
        assert_eq!(Refusal::of(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        h.insert(ERROR, HeaderValue::from_static("from_the_future"));
        assert_eq!(
            Refusal::of(&h),
            Some(Refusal::Error(TunnelError::BadResponse))
        );
    }

    #[test]
    fn own_headers_go_and_the_secret_is_checked() {
        let mut h = HeaderMap::new();
        h.insert(AUTH, HeaderValue::from_static("s3cret"));
        h.insert(HOP, HeaderValue::from_static("pod-b"));
        h.insert("x-tunnel-peer-other", HeaderValue::from_static("1"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let auth = PeerAuth::new("s3cret");
        assert!(auth.accepts(&h));
        assert!(!PeerAuth::new("other").accepts(&h));
        strip_own(&mut h);
        assert_eq!(h.len(), 1);
        assert!(!auth.accepts(&h));
    }
}
