//! `--server`: where the server is, which scheme, and why that scheme (one line the client
//! prints, so that a newcomer sees what was chosen).
//!
//! Without a scheme: a loopback host is plain `http`, and a loopback host without a port is a
//! dev server on its default port ([`DEFAULT_PORT`]); any other host is `https`, private LAN
//! addresses included (plain http there only when written `http://`).

use std::fmt;
use std::net::IpAddr;

use tunnel_protocol::dev_key::DEFAULT_PORT;

/// Where the server is, for the API and for the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `http(s)://host[:port]` (no trailing slash).
    pub http_base: String,
    /// `ws(s)://host[:port]`.
    pub ws_base: String,
}

/// Why `--server` is not a usable server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    /// A scheme other than `http://` and `https://`.
    #[error("{0:?}: only http:// and https:// servers are supported")]
    Scheme(String),
    /// Nothing before the path.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// Not a valid URI authority.
    #[error("{0:?} is not a valid server address: {1}")]
    Invalid(String, String),
}

/// Why the scheme (and port) of a [`ServerUrl`] are what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeReason {
    /// The address had a scheme.
    AsWritten,
    /// No scheme, a loopback host: plain http; `default_port` when the port was the dev
    /// server's default, filled in.
    Loopback {
        /// The port was left out and [`DEFAULT_PORT`] assumed.
        default_port: bool,
    },
    /// No scheme, a private LAN address: https all the same.
    PrivateNetwork,
    /// No scheme, any other host: https.
    Remote,
}

/// A parsed server address and why its scheme is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedServer {
    /// The address.
    pub url: ServerUrl,
    /// Why its scheme.
    pub reason: SchemeReason,
}

impl fmt::Display for ExplainedServer {
    /// `server: http://localhost:8989 (plain http: localhost is this machine; …)`, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = &self.url.http_base;
        write!(f, "server: {base} (")?;
        match self.reason {
            SchemeReason::AsWritten => write!(f, "scheme as written")?,
            SchemeReason::Loopback { default_port } => {
                write!(f, "plain http: a loopback host is this machine")?;
                if default_port {
                    write!(f, "; no port given, so the dev server's {DEFAULT_PORT}")?;
                }
            }
            SchemeReason::PrivateNetwork => {
                let plain = base.replacen("https://", "http://", 1);
                write!(
                    f,
                    "https: no scheme given; for plain http on a LAN write {plain}"
                )?
            }
            SchemeReason::Remote => write!(f, "https: no scheme given, not a loopback host")?,
        }
        write!(f, ")")
    }
}

/// Whether a host name or address is on this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a host is an address of a private network (RFC 1918, link-local, unique local).
fn is_private_address(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_private() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            let first = ip.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

/// `host[:port][/...]` split into host and whether a port was written; a bare IPv6 address
/// (`::1`) is bracketed.
fn split_authority(rest: &str) -> (String, Option<&str>, &str) {
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.parse::<std::net::Ipv6Addr>().is_ok() {
        return (format!("[{authority}]"), None, path);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() && !h.ends_with(':') => {
            (h.to_string(), Some(port), path)
        }
        _ => (authority.to_string(), None, path),
    }
}

impl ServerUrl {
    /// Parses `--server`.
    pub fn parse(s: &str) -> Result<Self, ServerUrlError> {
        Self::parse_explained(s).map(|e| e.url)
    }

    /// Parses `--server`, saying why the scheme (and port) are what they are.
    pub fn parse_explained(s: &str) -> Result<ExplainedServer, ServerUrlError> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest, reason) = if let Some(r) = s.strip_prefix("https://") {
            ("https", r.to_string(), SchemeReason::AsWritten)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r.to_string(), SchemeReason::AsWritten)
        } else if s.contains("://") {
            return Err(ServerUrlError::Scheme(s.to_string()));
        } else if s.is_empty() || s.starts_with('/') {
            return Err(ServerUrlError::NoHost(s.to_string()));
        } else {
            let (host, port, path) = split_authority(s);
            if is_loopback_host(&host) {
                let default_port = port.is_none();
                let port = port.map_or(DEFAULT_PORT.to_string(), str::to_string);
                let rest = format!("{host}:{port}{path}");
                ("http", rest, SchemeReason::Loopback { default_port })
            } else if is_private_address(&host) {
                ("https", s.to_string(), SchemeReason::PrivateNetwork)
            } else {
                ("https", s.to_string(), SchemeReason::Remote)
            }
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ServerUrlError::NoHost(s.to_string()));
        }
        let http_base = format!("{scheme}://{rest}");
        http_base
            .parse::<http::Uri>()
            .map_err(|e| ServerUrlError::Invalid(s.to_string(), e.to_string()))?;
        let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
        let url = Self {
            ws_base: format!("{ws_scheme}://{rest}"),
            http_base,
        };
        Ok(ExplainedServer { url, reason })
    }

    /// Whether the server is on this machine (a loopback host).
    pub fn is_local(&self) -> bool {
        let rest = self
            .http_base
            .split_once("://")
            .map_or(self.http_base.as_str(), |(_, r)| r);
        is_loopback_host(&split_authority(rest).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_defaults() {
        let u = ServerUrl::parse("tunnels.example.com").expect("valid");
        assert_eq!(u.http_base, "https://tunnels.example.com");
        assert_eq!(u.ws_base, "wss://tunnels.example.com");
        let u = ServerUrl::parse("localhost:8989").expect("valid");
        assert_eq!(u.http_base, "http://localhost:8989");
        assert_eq!(u.ws_base, "ws://localhost:8989");
        let u = ServerUrl::parse("127.0.0.1:1").expect("valid");
        assert_eq!(u.http_base, "http://127.0.0.1:1");
        let u = ServerUrl::parse("[::1]:5").expect("valid");
        assert_eq!(u.ws_base, "ws://[::1]:5");
        let u = ServerUrl::parse("http://tunnels.example.com/").expect("valid");
        assert_eq!(u.http_base, "http://tunnels.example.com");
        let u = ServerUrl::parse("https://localhost:8443").expect("valid");
        assert_eq!(u.ws_base, "wss://localhost:8443");
        assert_eq!(
            ServerUrl::parse("ftp://x"),
            Err(ServerUrlError::Scheme("ftp://x".into()))
        );
        assert_eq!(
            ServerUrl::parse("ftp://x").map_err(|e| e.to_string()),
            Err(r#""ftp://x": only http:// and https:// servers are supported"#.into())
        );
        assert_eq!(ServerUrl::parse(""), Err(ServerUrlError::NoHost("".into())));
    }

    #[test]
    fn a_loopback_host_without_port_is_the_dev_server() {
        for (given, base) in [
            ("localhost", "http://localhost:8989"),
            ("127.0.0.1", "http://127.0.0.1:8989"),
            ("[::1]", "http://[::1]:8989"),
            ("::1", "http://[::1]:8989"),
            ("[::1]:8990", "http://[::1]:8990"),
            ("app.localhost", "http://app.localhost:8989"),
        ] {
            let e = ServerUrl::parse_explained(given).expect(given);
            assert_eq!(e.url.http_base, base, "{given}");
            assert!(e.url.is_local(), "{given}");
        }
        let e = ServerUrl::parse_explained("localhost").expect("valid");
        assert_eq!(
            e.to_string(),
            "server: http://localhost:8989 (plain http: a loopback host is this machine; \
             no port given, so the dev server's 8989)"
        );
        // Written with a scheme: as written, port included.
        let e = ServerUrl::parse_explained("http://localhost").expect("valid");
        assert_eq!(e.url.http_base, "http://localhost");
        assert_eq!(e.reason, SchemeReason::AsWritten);
    }

    #[test]
    fn a_lan_address_is_https_unless_written_http() {
        for host in [
            "192.168.1.20:8989",
            "10.0.0.5",
            "172.16.3.4:80",
            "[fd00::1]:8989",
        ] {
            let e = ServerUrl::parse_explained(host).expect(host);
            assert_eq!(e.reason, SchemeReason::PrivateNetwork, "{host}");
            assert!(e.url.http_base.starts_with("https://"), "{host}");
            assert!(!e.url.is_local(), "{host}");
        }
        let e = ServerUrl::parse_explained("192.168.1.20:8989").expect("valid");
        assert!(
            e.to_string()
                .ends_with("for plain http on a LAN write http://192.168.1.20:8989)"),
            "{e}"
        );
        let e = ServerUrl::parse_explained("http://192.168.1.20:8989").expect("valid");
        assert_eq!(e.url.http_base, "http://192.168.1.20:8989");
        let e = ServerUrl::parse_explained("tunnels.example.com").expect("valid");
        assert_eq!(e.reason, SchemeReason::Remote);
    }
}
