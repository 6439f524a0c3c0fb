//! Which host a public request is for, and where that host sits relative to `TUNNEL_DOMAIN`.
//!
//! The host comes from `Host`, or from `X-Forwarded-Host` only when the peer is a trusted
//! proxy (believing it from anyone would let a client pick its tunnel around the ingress's
//! rules, the same class of bug as a spoofed `X-Forwarded-For`). It is compared without its
//! port, without a trailing dot and in lower case: `MyApp.Tunnels.Example.COM.:443` is
//! `myapp.tunnels.example.com`.
//!
//! [`HostRules::classify`] is a pure function of the host: the route table in
//! [`crate::app`] turns its answer, with the path, into the one routing decision a request
//! gets.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;

const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// A host name that cannot be `TUNNEL_DOMAIN` (or a custom domain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDomain {
    /// Not a dotted name of DNS labels.
    #[error("{0:?} is not a host name (labels of a-z, 0-9 and '-', separated by dots)")]
    Syntax(String),
    /// An IP address: subdomains need a name.
    #[error("{0:?} is an IP address; a name is needed")]
    Address(String),
}

/// `host[:port]` as sent → the bare host, lower case, without a trailing dot. IPv6 literals
/// keep their brackets (`[::1]:8989` → `[::1]`). Borrows when nothing changes.
pub fn normalize(authority: &str) -> Cow<'_, str> {
    let authority = authority.trim();
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Whether `host` (normalized) is an IP literal: `127.0.0.1`, `[::1]`.
pub fn is_ip_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok()
}

/// Checks a domain setting or a custom domain, and returns it normalized (lower case, no
/// trailing dot). Single-label names (`localhost`) are accepted: dev mode uses one.
pub fn parse_domain(value: &str) -> Result<String, BadDomain> {
    if value.contains([':', '/']) && !value.trim().starts_with('[') {
        return Err(BadDomain::Syntax(value.to_string()));
    }
    let host = normalize(value).into_owned();
    if is_ip_literal(&host) {
        return Err(BadDomain::Address(value.to_string()));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if host.len() > 253 || host.contains(':') || !host.split('.').all(label_ok) {
        return Err(BadDomain::Syntax(value.to_string()));
    }
    Ok(host)
}

/// The host a request is for: `X-Forwarded-Host` (its last entry, the one the nearest proxy
/// set) when the peer is a trusted proxy and sent one, `Host` otherwise; normalized.
pub fn request_host(headers: &HeaderMap, peer_trusted: bool) -> Option<Cow<'_, str>> {
    let forwarded = peer_trusted
        .then(|| headers.get(X_FORWARDED_HOST))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let raw = match forwarded {
        Some(h) => h,
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(normalize(raw))
}

/// Where a host sits relative to the server's own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostClass<'h> {
    /// The server's own name (`TUNNEL_DOMAIN`, the public URL's host, an IP address, no
    /// host at all, or any host when `TUNNEL_DOMAIN` is unset): path prefixes and the
    /// server's own paths.
    Apex,
    /// `<label>.<TUNNEL_DOMAIN>`: the tunnel named `label`.
    Subdomain(&'h str),
    /// `a.b.<TUNNEL_DOMAIN>` and deeper: refused.
    Nested,
    /// Anything else: a custom domain if one is verified for it, otherwise nobody's.
    Foreign(&'h str),
}

/// The names the server answers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    /// `TUNNEL_DOMAIN`, normalized; `None`: no subdomains, every host is the apex.
    pub domain: Option<String>,
    /// Other names of the apex (the host of `TUNNEL_PUBLIC_URL` when it is not the domain).
    pub aliases: Vec<String>,
}

impl HostRules {
    /// Where `host` (normalized, see [`request_host`]) sits. IP literals are the apex: no
    /// tunnel can be meant by an address, and probes (Kubernetes sends the pod's address as
    /// the host) must reach `/health` and `/ready`.
    pub fn classify<'h>(&self, host: Option<&'h str>) -> HostClass<'h> {
        let (Some(domain), Some(host)) = (self.domain.as_deref(), host) else {
            return HostClass::Apex;
        };
        if host == domain || self.aliases.iter().any(|a| a == host) || is_ip_literal(host) {
            return HostClass::Apex;
        }
        match host
            .strip_suffix(domain)
            .and_then(|rest| rest.strip_suffix('.'))
        {
            Some("") => HostClass::Foreign(host),
            Some(label) if label.contains('.') => HostClass::Nested,
            Some(label) => HostClass::Subdomain(label),
            None => HostClass::Foreign(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules() -> HostRules {
        HostRules {
            domain: Some("tunnels.example.com".into()),
            aliases: vec!["tunnel.corp.internal".into()],
        }
    }

    #[test]
    fn hosts_are_compared_without_port_case_or_trailing_dot() {
        assert_eq!(normalize("MyApp.Example.COM.:8443"), "myapp.example.com");
        assert_eq!(normalize("example.com"), "example.com");
        assert_eq!(normalize("[::1]:8989"), "[::1]");
        assert_eq!(normalize("127.0.0.1:80"), "127.0.0.1");
        assert!(matches!(normalize("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn classification_follows_the_domain() {
        let r = rules();
        let c = |h: &'static str| r.classify(Some(h));
        assert_eq!(c("tunnels.example.com"), HostClass::Apex);
        assert_eq!(c("tunnel.corp.internal"), HostClass::Apex);
        assert_eq!(c("10.1.2.3"), HostClass::Apex);
        assert_eq!(c("[::1]"), HostClass::Apex);
        assert_eq!(r.classify(None), HostClass::Apex);
        assert_eq!(
            c("myapp.tunnels.example.com"),
            HostClass::Subdomain("myapp")
        );
        assert_eq!(c("a.b.tunnels.example.com"), HostClass::Nested);
        assert_eq!(
            c("eviltunnels.example.com"),
            HostClass::Foreign("eviltunnels.example.com")
        );
        assert_eq!(
            c("app.mycompany.com"),
            HostClass::Foreign("app.mycompany.com")
        );
        // Without a domain, every host is the apex (the path-prefix deployment).
        assert_eq!(
            HostRules::default().classify(Some("x.y.z")),
            HostClass::Apex
        );
    }

    #[test]
    fn forwarded_host_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("Inner.Example.com:8989"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("spoof.example, Outer.Example.com"),
        );
        assert_eq!(
            request_host(&h, false).as_deref(),
            Some("inner.example.com")
        );
        assert_eq!(request_host(&h, true).as_deref(), Some("outer.example.com"));
        h.remove("x-forwarded-host");
        assert_eq!(request_host(&h, true).as_deref(), Some("inner.example.com"));
        h.remove("host");
        assert_eq!(request_host(&h, true), None);
    }

    #[test]
    fn domains_are_names() {
        assert_eq!(
            parse_domain("Tunnels.Example.com.").as_deref(),
            Ok("tunnels.example.com")
        );
        assert_eq!(parse_domain("localhost").as_deref(), Ok("localhost"));
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a_b.com",
            "https://x.com",
            "x.com:443",
            "1.2.3.4",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
    }
}
