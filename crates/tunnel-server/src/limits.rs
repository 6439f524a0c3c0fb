//! Rate limits and request framing checks.
//!
//! - The control API and client connects are limited per client address with `tower_governor`
//!   layers (keyed by [`ClientIp`], never by a header a client controls).
//! - Public traffic is limited per tunnel with a keyed `governor` limiter, so one noisy tunnel
//!   never slows another.
//! - [`check_framing`] refuses requests whose body length is ambiguous — the raw material of
//!   request smuggling — before anything is forwarded.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, Request, Response, Version};
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::edge::{ClientIp, PeerAddr};
use crate::error::TunnelError;

/// Keys `tower_governor` limiters by the client address the accept loop determined.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        // The accept loop always sets `ClientIp`; a router driven without it (tests, an
        // embedding) shares one bucket rather than failing.
        let ext = req.extensions();
        Ok(ext
            .get::<ClientIp>()
            .map(|c| c.0)
            .or_else(|| ext.get::<PeerAddr>().map(|p| p.0.ip()))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    }
}

type IpGovernor = Arc<GovernorConfig<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>>>;

/// A per-address limit of `per_min` requests a minute, with a burst of a quarter of that.
fn per_minute(per_min: u32) -> Option<IpGovernor> {
    if per_min == 0 {
        return None;
    }
    let burst = (per_min / 4).max(1);
    GovernorConfigBuilder::default()
        .period(Duration::from_secs(60) / per_min)
        .burst_size(burst)
        .key_extractor(ClientIpKey)
        .finish()
        .map(Arc::new)
}

/// All limiters of the server.
#[derive(Debug)]
pub struct RateLimits {
    api: Option<IpGovernor>,
    connect: Option<IpGovernor>,
    public: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    /// Limiters for the configured rates (0 turns one off).
    pub fn new(api_per_min: u32, connect_per_min: u32, public_per_sec: u32) -> Self {
        let public = NonZeroU32::new(public_per_sec)
            .map(|rate| RateLimiter::keyed(Quota::per_second(rate).allow_burst(rate)));
        Self {
            api: per_minute(api_per_min),
            connect: per_minute(connect_per_min),
            public,
        }
    }

    /// The layer for control API routes, if limited.
    pub fn api_layer(
        &self,
    ) -> Option<GovernorLayer<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>, Body>>
    {
        self.api
            .clone()
            .map(|c| GovernorLayer::new(c).error_handler(rate_limited))
    }

    /// The layer for the client connect route, if limited.
    pub fn connect_layer(
        &self,
    ) -> Option<GovernorLayer<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>, Body>>
    {
        self.connect
            .clone()
            .map(|c| GovernorLayer::new(c).error_handler(rate_limited))
    }

    /// Takes one public request from tunnel `id`'s budget.
    pub fn check_public(&self, id: &str) -> Result<(), TunnelError> {
        let Some(limiter) = &self.public else {
            return Ok(());
        };
        limiter.check_key(&id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            TunnelError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    /// Forgets addresses and tunnels whose budget is full again, so the limiters' memory
    /// follows current traffic rather than every address ever seen.
    pub fn retain_recent(&self) {
        for g in [&self.api, &self.connect].into_iter().flatten() {
            g.limiter().retain_recent();
        }
        if let Some(p) = &self.public {
            p.retain_recent();
        }
    }
}

fn rate_limited(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => TunnelError::RateLimited {
            retry_after_secs: wait_time.max(1),
        }
        .json_response(),
        _ => TunnelError::BadRequest("cannot tell who is asking").json_response(),
    }
}

/// Refuses a request whose body framing is ambiguous or not plain chunked, as hyper parsed it.
/// Behind the [`crate::edge::framing`] guard (which sees the raw bytes, before hyper normalises
/// them) this never fires; it stays as the check of a router served without the guard. Both
/// `Content-Length` and `Transfer-Encoding`, several or malformed `Content-Length`, a
/// `Transfer-Encoding` other than exactly `chunked` (so `chunked,`, `gzip, chunked`, tab
/// variants and duplicates), or `Transfer-Encoding` on HTTP/1.0. Front proxies disagree on such
/// requests; forwarding one is how smuggling starts.
pub fn check_framing(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    let cls: Vec<&[u8]> = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let tes: Vec<&[u8]> = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if cls.len() > 1 {
        return Err("several Content-Length headers");
    }
    if let Some(cl) = cls.first() {
        if crate::edge::framing::content_length(cl).is_none() {
            return Err("malformed Content-Length");
        }
    }
    if !tes.is_empty() {
        if !cls.is_empty() {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if version == Version::HTTP_10 {
            return Err("Transfer-Encoding on HTTP/1.0");
        }
        let plain_chunked = |v: &[u8]| {
            let trimmed = v.strip_prefix(b" ").unwrap_or(v);
            let trimmed = trimmed.strip_suffix(b" ").unwrap_or(trimmed);
            trimmed.eq_ignore_ascii_case(b"chunked")
        };
        if tes.len() > 1 || !plain_chunked(tes[0]) {
            return Err("Transfer-Encoding other than chunked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(v).expect("value"),
            );
        }
        m
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let v11 = Version::HTTP_11;
        assert!(check_framing(v11, &h(&[])).is_ok());
        assert!(check_framing(v11, &h(&[("content-length", b"10")])).is_ok());
        assert!(check_framing(v11, &h(&[("transfer-encoding", b"chunked")])).is_ok());
        assert!(check_framing(v11, &h(&[("transfer-encoding", b"Chunked")])).is_ok());
        for bad in [
            h(&[("content-length", b"1"), ("transfer-encoding", b"chunked")]),
            h(&[("content-length", b"1"), ("content-length", b"1")]),
            h(&[("content-length", b"+1")]),
            h(&[("content-length", b"1, 1")]),
            h(&[("transfer-encoding", b"chunked,")]),
            h(&[("transfer-encoding", b"\tchunked")]),
            h(&[("transfer-encoding", b"chunked\t")]),
            h(&[("transfer-encoding", b"gzip, chunked")]),
            h(&[
                ("transfer-encoding", b"chunked"),
                ("transfer-encoding", b"chunked"),
            ]),
            h(&[("transfer-encoding", b"xchunked")]),
        ] {
            assert!(check_framing(v11, &bad).is_err(), "{bad:?}");
        }
        assert!(check_framing(Version::HTTP_10, &h(&[("transfer-encoding", b"chunked")])).is_err());
    }

    #[test]
    fn each_tunnel_has_its_own_budget() {
        let limits = RateLimits::new(0, 0, 2);
        assert!(limits.check_public("a").is_ok());
        assert!(limits.check_public("a").is_ok());
        assert!(matches!(
            limits.check_public("a"),
            Err(TunnelError::RateLimited {
                retry_after_secs: 1
            })
        ));
        assert!(limits.check_public("b").is_ok());
        assert!(RateLimits::new(0, 0, 0).check_public("a").is_ok());
    }
}
