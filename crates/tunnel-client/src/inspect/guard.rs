//! Who may talk to the inspector. It has no password (as ngrok's), so the checks stop the
//! two ways a web page in the user's own browser could reach it:
//! - **DNS rebinding**: a page on `evil.example` whose name is made to resolve to 127.0.0.1
//!   sends requests with `Host: evil.example`. Only loopback names (`localhost`, `*.localhost`,
//!   `127.0.0.0/8`, `[::1]`) are accepted; when the inspector listens on another address (the
//!   user asked for it), IP literals too, which no rebinding can produce.
//! - **Cross-site requests**: a page may send a simple POST (form or `text/plain`) anywhere.
//!   A state-changing request must carry `Content-Type: application/json` (which a page can
//!   only send cross-origin after a CORS preflight, and the inspector answers none), and an
//!   `Origin`, when there is one, must be the inspector's own; `Sec-Fetch-Site: cross-site`
//!   is refused as well.

use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Method};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `Host` missing or not a loopback name.
    #[error("the Host header must name this machine (localhost or a loopback address)")]
    Host,
    /// A state-changing request without a JSON body.
    #[error("state-changing requests need Content-Type: application/json")]
    NotJson,
    /// A state-changing request from another origin.
    #[error("cross-origin requests may not change anything")]
    Origin,
}

/// Whether `host` (a `Host` header value, port allowed) names this machine.
pub fn is_loopback_name(host: &str) -> bool {
    let name = split_port(host).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn is_ip_literal(host: &str) -> bool {
    let name = split_port(host);
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`.
fn split_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Checks a request's head; `open` says the inspector listens beyond loopback.
pub fn check(method: &Method, headers: &HeaderMap, open: bool) -> Result<(), Refusal> {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Host)?;
    if !(is_loopback_name(host) || (open && is_ip_literal(host))) {
        return Err(Refusal::Host);
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::NotJson);
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host.trim()));
        if !own {
            return Err(Refusal::Origin);
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(Refusal::Origin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(HOST),
                v.parse().unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn hosts() {
        for ok in [
            "localhost:4040",
            "127.0.0.1:4040",
            "[::1]:4040",
            "app.localhost",
            "127.9.9.9",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in [
            "evil.example:4040",
            "localhost.evil.example",
            "10.0.0.1:4040",
            "[::2]",
            "",
        ] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
        let get = Method::GET;
        assert_eq!(check(&get, &head(&[]), false), Err(Refusal::Host));
        assert_eq!(
            check(&get, &head(&[("host", "192.168.1.2:4040")]), false),
            Err(Refusal::Host)
        );
        assert_eq!(
            check(&get, &head(&[("host", "192.168.1.2:4040")]), true),
            Ok(())
        );
        assert_eq!(
            check(&get, &head(&[("host", "rebind.example:4040")]), true),
            Err(Refusal::Host)
        );
    }

    #[test]
    fn state_changes_need_json_and_our_origin() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:4040");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(check(&post, &head(&[host]), false), Err(Refusal::NotJson));
        assert_eq!(
            check(&post, &head(&[host, ("content-type", "text/plain")]), false),
            Err(Refusal::NotJson)
        );
        assert_eq!(check(&post, &head(&[host, json]), false), Ok(()));
        let ours = ("origin", "http://127.0.0.1:4040");
        assert_eq!(check(&post, &head(&[host, json, ours]), false), Ok(()));
        let theirs = ("origin", "http://evil.example");
        assert_eq!(
            check(&post, &head(&[host, json, theirs]), false),
            Err(Refusal::Origin)
        );
        let cross = ("sec-fetch-site", "cross-site");
        assert_eq!(
            check(&Method::DELETE, &head(&[host, json, cross]), false),
            Err(Refusal::Origin)
        );
    }
}
