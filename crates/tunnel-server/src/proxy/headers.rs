//! Header rules of the reverse proxy: what is stripped, added and rewritten on the way to the
//! local service and back.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tunnel_protocol::head_json::HeaderList;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// `Proxy-*` family, which only concerns the hop to a proxy. Names are constants: a `&str`
/// name is parsed and validated again on every map operation.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const SERVICE_WORKER_ALLOWED: HeaderName = HeaderName::from_static("service-worker-allowed");

/// Whether a header name is hop-by-hop by itself (without `Connection` naming it).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers: the fixed list, and every header the `Connection` header names.
///
/// The names to remove are found in one pass over the map, and only those present removed:
/// removing each name of the list whether present or not, after building an owned name of
/// every `Connection` token, cost about 2,800 instructions per response from nginx, which
/// always says `Connection: keep-alive` (callgrind; every removal hashes its name).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        // Each name once: `keys` gives a name once however many values it has.
        if is_hop_by_hop(name) {
            doomed.push(name.clone());
        }
    }
    // `Connection` is one of them: without any there is no token to look at either.
    if doomed.is_empty() {
        return;
    }
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let Ok(token) = std::str::from_utf8(token.trim_ascii()) else {
                continue;
            };
            // Looked up as it is (no owned name unless the header is there to remove).
            if token.is_empty() || !headers.contains_key(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                if !doomed.contains(&name) {
                    doomed.push(name);
                }
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// What the proxy knows about the public request, for the forwarding headers.
pub struct ForwardInfo<'a> {
    /// The peer address of the public connection.
    pub client_ip: IpAddr,
    /// `http` or `https`, as the public reached us.
    pub proto: &'a str,
    /// The host the public asked for.
    pub host: Option<&'a str>,
    /// `/<tunnel_id>` when the tunnel was addressed by path prefix; `None` when by host.
    pub prefix: Option<&'a str>,
}

/// Prepares public request headers for the local service: strips hop-by-hop headers, then sets
/// `X-Forwarded-For` (appended to what earlier proxies set), `-Proto`, `-Host`, and `-Prefix`
/// for a path-prefix request (a client's own `X-Forwarded-Prefix` never passes: on a
/// subdomain it would make an app believe it lives under a prefix it does not).
///
/// Stripping runs first, so `Connection: x-forwarded-for` can remove what a client sent but
/// never what we add.
pub fn prepare_request_headers(headers: &mut HeaderMap, info: &ForwardInfo<'_>) {
    strip_hop_by_hop(headers);
    let prior: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let ip = info.client_ip.to_string();
    let xff = if prior.is_empty() {
        ip
    } else {
        format!("{}, {ip}", prior.join(", "))
    };
    // Each value below is made without copying its text where it can be: three allocations
    // fewer per request.
    match HeaderValue::try_from(xff) {
        Ok(v) => {
            headers.insert(X_FORWARDED_FOR, v);
        }
        Err(_) => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    match info.proto {
        "https" => insert(
            headers,
            X_FORWARDED_PROTO,
            HeaderValue::from_static("https"),
        ),
        "http" => insert(headers, X_FORWARDED_PROTO, HeaderValue::from_static("http")),
        other => set(headers, X_FORWARDED_PROTO, other),
    }
    if let Some(host) = info.host {
        // The public `Host` is usually still there: its value shares the request's bytes.
        match headers
            .get(header::HOST)
            .filter(|v| v.as_bytes() == host.as_bytes())
        {
            Some(same) => {
                let same = same.clone();
                insert(headers, X_FORWARDED_HOST, same);
            }
            None => set(headers, X_FORWARDED_HOST, host),
        }
    }
    match info.prefix {
        Some(prefix) => set(headers, X_FORWARDED_PREFIX, prefix),
        None => {
            headers.remove(X_FORWARDED_PREFIX);
        }
    }
}

/// The forwarding headers the proxy sets, in the order it adds the new ones.
static FORWARDING: [HeaderName; 4] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PREFIX,
];

/// The public request's headers under [`prepare_request_headers`]'s rules, read from the public
/// map as the head is written ([`HeaderList`]), without a prepared copy of the map.
///
/// Cloning the public map to strip and set headers in it was two allocations and a hash of
/// every name per request, for a map that was only written out and dropped. The list is the
/// prepared map's, entry for entry: hop-by-hop headers (and those `Connection` names) left out,
/// each forwarding header where the client had it (its value replaced, as `insert` does) or
/// after the others, and for a WebSocket `Upgrade` and `Connection` last.
pub struct ProxiedHeaders<'a> {
    public: &'a HeaderMap,
    /// Whether anything hop-by-hop is there to strip (most requests have nothing).
    strip: bool,
    /// `X-Forwarded-For`: earlier proxies' list and the client's address.
    forwarded_for: ForwardedFor,
    proto: Option<&'a [u8]>,
    /// `None`: no host known, the client's `X-Forwarded-Host` passes as it came.
    host: Option<Option<&'a [u8]>>,
    prefix: Option<&'a [u8]>,
    websocket: bool,
}

/// An `X-Forwarded-For` value: the client's address alone (kept inline, the usual case), or
/// appended to what earlier proxies set.
enum ForwardedFor {
    Inline(Inline),
    Joined(String),
}

impl ForwardedFor {
    fn as_bytes(&self) -> &[u8] {
        match self {
            ForwardedFor::Inline(buf) => &buf.0[..buf.1],
            ForwardedFor::Joined(s) => s.as_bytes(),
        }
    }
}

/// Whether `value` may be a header value ([`HeaderValue::from_str`]'s rule), so that what is
/// written is what the prepared map would hold.
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

impl<'a> ProxiedHeaders<'a> {
    /// `public` as the local service gets it, for a request [`ForwardInfo`] describes; a
    /// WebSocket upgrade gets its upgrade headers back after hop-by-hop removal.
    pub fn new(public: &'a HeaderMap, info: &ForwardInfo<'a>, websocket: bool) -> Self {
        let strip = public.keys().any(is_hop_by_hop);
        let mut this = Self {
            public,
            strip,
            forwarded_for: ForwardedFor::Joined(String::new()),
            proto: Some(info.proto.as_bytes()).filter(|v| valid_value(v)),
            host: info
                .host
                .map(|h| Some(h.as_bytes()).filter(|v| valid_value(v))),
            prefix: info.prefix.map(str::as_bytes).filter(|v| valid_value(v)),
            websocket,
        };
        this.forwarded_for = this.forwarded_for_value(info.client_ip);
        this
    }

    fn forwarded_for_value(&self, ip: IpAddr) -> ForwardedFor {
        let mut prior = String::new();
        if !self.drops(&X_FORWARDED_FOR) {
            let values = self.public.get_all(&X_FORWARDED_FOR).iter();
            for v in values.filter_map(|v| v.to_str().ok()).map(str::trim) {
                if !v.is_empty() {
                    prior.push_str(v);
                    prior.push_str(", ");
                }
            }
        }
        let mut buf = Inline([0; 48], 0);
        match write_ip(&mut buf, ip) {
            Ok(()) if prior.is_empty() => ForwardedFor::Inline(buf),
            Ok(()) => {
                prior.push_str(buf.as_str());
                ForwardedFor::Joined(prior)
            }
            Err(_) => {
                let _ = write!(prior, "{ip}"); // writing to a String cannot fail
                ForwardedFor::Joined(prior)
            }
        }
    }

    /// Whether the public header `name` stays out: hop-by-hop, or named by `Connection`.
    fn drops(&self, name: &HeaderName) -> bool {
        self.strip && (is_hop_by_hop(name) || connection_names(self.public, name))
    }

    /// Whether the proxy sets (or removes) the forwarding header `FORWARDING[i]`: all but
    /// `X-Forwarded-Host` when no host is known.
    fn sets(&self, i: usize) -> bool {
        i != 2 || self.host.is_some()
    }

    /// The value the proxy sets for the forwarding header `FORWARDING[i]`, `None` to leave
    /// it out.
    fn forwarding(&self, i: usize) -> Option<&[u8]> {
        match i {
            0 => Some(self.forwarded_for.as_bytes()),
            1 => self.proto,
            2 => self.host.flatten(),
            _ => self.prefix,
        }
    }
}

/// Whether a `Connection` header of `headers` names `name` (which hop-by-hop removal then
/// takes out).
fn connection_names(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// A small text buffer on the stack, for an address.
struct Inline([u8; 48], usize);

impl Inline {
    fn push(&mut self, bytes: &[u8]) -> std::fmt::Result {
        let end = self.1 + bytes.len();
        let room = self.0.get_mut(self.1..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(bytes);
        self.1 = end;
        Ok(())
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s and ASCII digits are pushed.
        std::str::from_utf8(&self.0[..self.1]).unwrap_or_default()
    }
}

/// `ip` as its `Display` writes it; an IPv4 address (the usual one) digit by digit, without
/// the formatting machinery, which was about 1,300 instructions per request (callgrind).
fn write_ip(buf: &mut Inline, ip: IpAddr) -> std::fmt::Result {
    let IpAddr::V4(v4) = ip else {
        return write!(buf, "{ip}");
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf.push(b".")?;
        }
        let digits = [
            b'0' + octet / 100,
            b'0' + octet / 10 % 10,
            b'0' + octet % 10,
        ];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        buf.push(&digits[skip..])?;
    }
    Ok(())
}

impl std::fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes())
    }
}

impl HeaderList for ProxiedHeaders<'_> {
    fn entries(&self) -> usize {
        self.public.len() + FORWARDING.len() + 2
    }

    fn each(&self, mut f: impl FnMut(&str, &[u8])) {
        let mut set = [false; 4];
        for (name, value) in self.public {
            if self.drops(name) {
                continue;
            }
            match FORWARDING
                .iter()
                .position(|n| n == name)
                .filter(|&i| self.sets(i))
            {
                Some(i) if set[i] => {}
                Some(i) => {
                    set[i] = true;
                    if let Some(v) = self.forwarding(i) {
                        f(name.as_str(), v);
                    }
                }
                None => f(name.as_str(), value.as_bytes()),
            }
        }
        for (i, name) in FORWARDING.iter().enumerate() {
            if let (false, Some(v)) = (set[i], self.forwarding(i)) {
                f(name.as_str(), v);
            }
        }
        if self.websocket {
            f(header::UPGRADE.as_str(), b"websocket");
            f(header::CONNECTION.as_str(), b"upgrade");
        }
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    headers.insert(name, value);
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Prepares the local service's response headers for the public client: strips hop-by-hop
/// headers, and for a path-prefix request (`prefix` is `Some`) roots redirects and cookies
/// under the tunnel prefix and removes `Service-Worker-Allowed` (all those tunnels share one
/// origin, so a service worker scoped to `/` could intercept other tunnels' pages). A tunnel
/// addressed by host is its own origin: nothing else changes.
pub fn prepare_response_headers(headers: &mut HeaderMap, prefix: Option<&str>) {
    strip_hop_by_hop(headers);
    let Some(prefix) = prefix else {
        return;
    };
    headers.remove(SERVICE_WORKER_ALLOWED);
    if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if let Some(new) = rewrite_location(loc, prefix) {
            if let Ok(v) = HeaderValue::from_str(&new) {
                headers.insert(header::LOCATION, v);
            }
        }
    }
    if headers.contains_key(header::SET_COOKIE) {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| match v.to_str() {
                Ok(s) => HeaderValue::from_str(&rewrite_cookie_path(s, prefix))
                    .unwrap_or_else(|_| v.clone()),
                Err(_) => v.clone(),
            })
            .collect();
        headers.remove(header::SET_COOKIE);
        for c in cookies {
            headers.append(header::SET_COOKIE, c);
        }
    }
}

/// `/x` → `/<id>/x`. Absolute URLs and scheme-relative `//host/x` are left alone (the client
/// already turned absolute URLs to the local service into root-relative ones).
pub fn rewrite_location(loc: &str, prefix: &str) -> Option<String> {
    if loc.starts_with('/') && !loc.starts_with("//") && !loc.starts_with("/\\") {
        if loc == prefix || loc.starts_with(&format!("{prefix}/")) {
            return None;
        }
        Some(format!("{prefix}{loc}"))
    } else {
        None
    }
}

/// `Path=/` → `Path=/<id>/`, `Path=/a` → `Path=/<id>/a`; other attributes unchanged.
pub fn rewrite_cookie_path(cookie: &str, prefix: &str) -> String {
    let mut out = Vec::new();
    for (i, part) in cookie.split(';').enumerate() {
        if i > 0 {
            let trimmed = part.trim_start();
            if let Some((k, v)) = trimmed.split_once('=') {
                if k.trim().eq_ignore_ascii_case("path") {
                    let v = v.trim();
                    if v.starts_with('/') && !v.starts_with(&format!("{prefix}/")) && v != prefix {
                        let new = if v == "/" {
                            format!("{prefix}/")
                        } else {
                            format!("{prefix}{v}")
                        };
                        out.push(format!(" {}={new}", k.trim()));
                        continue;
                    }
                }
            }
        }
        out.push(part.to_string());
    }
    out.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The removal as it was before it looked for the names present first: every name of
    /// the list, every `Connection` token and every `proxy-` name removed in turn.
    fn strip_each(headers: &mut HeaderMap) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }

    const NAMES: [&str; 10] = [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-x",
        "x-a",
        "x-b",
        "host",
        "transfer-encoding",
        "trailer",
    ];

    proptest! {
        /// The one-pass removal leaves exactly what removing name by name left.
        #[test]
        fn strips_what_removing_each_name_stripped(
            entries in prop::collection::vec((0..NAMES.len(), "[a-z]{0,3}"), 0..12),
            tokens in prop::collection::vec(0..NAMES.len(), 0..4),
            spaced: bool,
            upper: bool,
        ) {
            let mut h = HeaderMap::new();
            for (i, v) in &entries {
                let v = HeaderValue::from_str(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                h.append(NAMES[*i], v);
            }
            if !tokens.is_empty() {
                let sep = if spaced { " , " } else { "," };
                let list: Vec<String> = tokens
                    .iter()
                    .map(|&t| if upper { NAMES[t].to_ascii_uppercase() } else { NAMES[t].to_string() })
                    .collect();
                let v = HeaderValue::from_str(&list.join(sep))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                h.append(header::CONNECTION, v);
            }
            let mut expected = h.clone();
            strip_each(&mut expected);
            strip_hop_by_hop(&mut h);
            prop_assert_eq!(h, expected);
        }
    }

    #[test]
    fn connection_named_headers_go_but_ours_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-forwarded-for, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        let info = ForwardInfo {
            client_ip: "1.2.3.4".parse().expect("ip"),
            proto: "https",
            host: Some("t.example.com"),
            prefix: Some("/abc"),
        };
        prepare_request_headers(&mut h, &info);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "t.example.com");
        assert_eq!(h["x-forwarded-prefix"], "/abc");
        assert_eq!(h["x-keep"], "yes");
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    /// The entries [`ProxiedHeaders`] writes, in order.
    fn proxied(h: &HeaderMap, info: &ForwardInfo<'_>, websocket: bool) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        ProxiedHeaders::new(h, info, websocket)
            .each(|name, value| out.push((name.to_string(), value.to_vec())));
        out
    }

    /// What [`prepare_request_headers`] makes of `h` (and the upgrade headers put back).
    fn prepared(h: &HeaderMap, info: &ForwardInfo<'_>, websocket: bool) -> HeaderMap {
        let mut h = h.clone();
        prepare_request_headers(&mut h, info);
        if websocket {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        h
    }

    #[test]
    fn proxied_headers_are_the_prepared_map() {
        let plain = [
            ("host", "t.example.com"),
            ("user-agent", "x"),
            ("accept", "*/*"),
        ];
        let forwarded = [
            ("host", "t.example.com"),
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-for", " 10.0.0.1 "),
            ("cookie", "a=1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-prefix", "/spoofed"),
            ("cookie", "b=2"),
            ("x-forwarded-host", "evil"),
        ];
        let hop_by_hop = [
            ("connection", "keep-alive, X-Secret, x-forwarded-for , host"),
            ("host", "t.example.com"),
            ("x-secret", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-other", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ];
        let infos = [
            ("203.0.113.9", "https", Some("t.example.com"), Some("/abc")),
            ("::ffff:192.0.2.1", "http", Some("t.example.com"), None),
            ("2001:db8::1", "bad\nproto", None, Some("/x")),
        ];
        for (i, entries) in [&plain[..], &forwarded[..], &hop_by_hop[..]]
            .iter()
            .enumerate()
        {
            let mut h = HeaderMap::new();
            for (name, value) in *entries {
                h.append(*name, HeaderValue::from_static(value));
            }
            for (ip, proto, host, prefix) in infos {
                let info = ForwardInfo {
                    client_ip: ip.parse().expect("ip"),
                    proto,
                    host,
                    prefix,
                };
                for websocket in [false, true] {
                    let ours = proxied(&h, &info, websocket);
                    let expected = prepared(&h, &info, websocket);
                    let mut map = HeaderMap::new();
                    for (name, value) in &ours {
                        let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
                        map.append(name, HeaderValue::from_bytes(value).expect("value"));
                    }
                    assert_eq!(map, expected, "{entries:?} {ip} {websocket}");
                    // Nothing removed from the public map: the very order of the map.
                    if i == 0 && prefix.is_some() {
                        let order: Vec<_> = expected
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                            .collect();
                        assert_eq!(ours, order);
                    }
                }
            }
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = ["::1", "2001:db8::1", "::ffff:192.0.2.1"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect();
        for octet in [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255] {
            ips.push(IpAddr::from([octet, 255 - octet, octet / 2, 7]));
        }
        for ip in ips {
            let mut buf = Inline([0; 48], 0);
            write_ip(&mut buf, ip).expect("fits");
            assert_eq!(buf.as_str(), ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let info = ForwardInfo {
            client_ip: "::1".parse().expect("ip"),
            proto: "http",
            host: None,
            prefix: Some("/a"),
        };
        prepare_request_headers(&mut h, &info);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, ::1");
    }

    #[test]
    fn locations_and_cookies_are_rooted_under_the_prefix() {
        assert_eq!(
            rewrite_location("/login?x=1", "/t1").as_deref(),
            Some("/t1/login?x=1")
        );
        assert_eq!(rewrite_location("/", "/t1").as_deref(), Some("/t1/"));
        assert_eq!(rewrite_location("/t1/x", "/t1"), None);
        assert_eq!(rewrite_location("//evil.com/x", "/t1"), None);
        assert_eq!(rewrite_location("https://x.com/", "/t1"), None);
        assert_eq!(rewrite_location("rel/path", "/t1"), None);
        assert_eq!(
            rewrite_cookie_path("a=1; Path=/; HttpOnly", "/t1"),
            "a=1; Path=/t1/; HttpOnly"
        );
        assert_eq!(
            rewrite_cookie_path("a=1; path=/x", "/t1"),
            "a=1; path=/t1/x"
        );
        assert_eq!(rewrite_cookie_path("a=1", "/t1"), "a=1");
        assert_eq!(
            rewrite_cookie_path("a=1; Path=/t1/", "/t1"),
            "a=1; Path=/t1/"
        );
    }

    #[test]
    fn response_headers() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=1; Path=/"));
        h.append("set-cookie", HeaderValue::from_static("b=2; Path=/"));
        h.insert("location", HeaderValue::from_static("/next"));
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut by_host = h.clone();
        prepare_response_headers(&mut h, Some("/t"));
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/t/", "b=2; Path=/t/"]);
        assert_eq!(h["location"], "/t/next");
        assert!(!h.contains_key("service-worker-allowed"));
        assert!(!h.contains_key("transfer-encoding"));
        // Addressed by host: the tunnel is its own origin, only hop-by-hop headers go.
        prepare_response_headers(&mut by_host, None);
        let cookies: Vec<_> = by_host.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
        assert_eq!(by_host["location"], "/next");
        assert_eq!(by_host["service-worker-allowed"], "/");
        assert!(!by_host.contains_key("transfer-encoding"));
    }

    #[test]
    fn no_prefix_header_for_host_routed_requests() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/spoofed"));
        let info = ForwardInfo {
            client_ip: "1.2.3.4".parse().expect("ip"),
            proto: "https",
            host: Some("myapp.t.example.com"),
            prefix: None,
        };
        prepare_request_headers(&mut h, &info);
        assert!(!h.contains_key("x-forwarded-prefix"));
        assert_eq!(h["x-forwarded-host"], "myapp.t.example.com");
    }
}
