//! Differential test of the framing guard: random request byte streams (CRLF/LF mixes,
//! duplicate, odd and folded framing headers, upgrades, long chunk sizes, pipelined
//! sequences, delivered in random pieces) are read three ways:
//! - by a strict RFC 9112 reading written here (the oracle, with the guard's policy of refusing
//!   bare LF, tabs around `chunked`, and anything where front proxies are known to disagree);
//! - by hyper alone;
//! - by hyper behind the guard, with a service that follows the same protocol as the server's
//!   (a refused request is answered 400; a `101` is reported to the guard).
//!
//! The properties: behind the guard the service only ever sees what the oracle reads, message
//! for message; where the oracle and hyper frame a sequence the same way the guard passes all
//! of it; where they could differ the guard refuses, with its own answer, and never hangs.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_server::edge::framing::{FramingGuard, FramingLink, HeadLimits, RequestSlot};

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 8 * 1024,
    max_fields: 32,
};

/// How a body ended, as a service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyEnd {
    Complete(Vec<u8>),
    /// The input ended inside the body.
    Incomplete,
    /// Not valid chunked syntax (the guard cuts it off).
    Invalid,
}

/// One request as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: BodyEnd,
}

/// How reading the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Every byte was read as requests.
    Clean,
    /// The input ended inside a head.
    Truncated,
    /// Something the oracle refuses (head or body).
    Invalid,
    /// After this request the connection was no longer HTTP; these bytes followed.
    Switched(Vec<u8>),
    /// An HTTP/1.0 request without keep-alive: the server closes after answering.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    msgs: Vec<Msg>,
    end: End,
}

// ---------------------------------------------------------------- the oracle

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// A strict line: `Ok(Some((content, next)))`, `Ok(None)` if incomplete, `Err` if invalid.
fn strict_line(b: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = &b[pos..];
    let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
        // Incomplete, unless what is there is already wrong.
        let bad_cr = rest
            .iter()
            .position(|&c| c == b'\r')
            .is_some_and(|p| p + 1 < rest.len());
        return if bad_cr { Err(()) } else { Ok(None) };
    };
    if nl == 0 || rest[nl - 1] != b'\r' {
        return Err(());
    }
    let line = &rest[..nl - 1];
    if line
        .iter()
        .any(|&c| c == b'\r' || ((c < 0x20 || c == 0x7f) && c != b'\t'))
    {
        return Err(());
    }
    Ok(Some((line, pos + nl + 1)))
}

enum Head {
    Incomplete,
    Invalid,
    Complete {
        msg: Msg,
        http10: bool,
        chunked: bool,
        len: u64,
        next: usize,
    },
}

fn oracle_head(b: &[u8], mut pos: usize) -> Head {
    let mut request_line = None;
    let mut headers = Vec::new();
    let (mut cl, mut te, mut fields) = (None, false, 0);
    loop {
        let (line, next) = match strict_line(b, pos) {
            Err(()) => return Head::Invalid,
            Ok(None) => return Head::Incomplete,
            Ok(Some(l)) => l,
        };
        pos = next;
        if request_line.is_none() {
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
            let [m, t, v] = parts[..] else {
                return Head::Invalid;
            };
            let valid = !m.is_empty()
                && m.iter().all(|&c| is_tchar(c))
                && !t.is_empty()
                && t.iter().all(|&c| (0x21..0x7f).contains(&c))
                && (v == b"HTTP/1.1" || v == b"HTTP/1.0");
            if !valid {
                return Head::Invalid;
            }
            request_line = Some((m.to_vec(), t.to_vec(), v == b"HTTP/1.0"));
            continue;
        }
        if line.is_empty() {
            break;
        }
        fields += 1;
        if fields > LIMITS.max_fields || pos > LIMITS.max_bytes {
            return Head::Invalid;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Head::Invalid;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Head::Invalid;
        };
        let (name, raw) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Head::Invalid;
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = trim_ows(raw);
        match name.as_str() {
            "content-length" => {
                let ok =
                    !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
                if cl.is_some() || !ok {
                    return Head::Invalid;
                }
                cl = std::str::from_utf8(value).unwrap().parse::<u64>().ok();
            }
            "transfer-encoding" => {
                let spaces = raw.iter().position(|&c| c != b' ').unwrap_or(raw.len());
                let end = raw
                    .iter()
                    .rposition(|&c| c != b' ')
                    .map_or(spaces, |e| e + 1);
                if te || !raw[spaces..end.max(spaces)].eq_ignore_ascii_case(b"chunked") {
                    return Head::Invalid;
                }
                te = true;
            }
            _ => {}
        }
        headers.push((name, String::from_utf8_lossy(value).into_owned()));
        // Known wrong as soon as the line arrives, whatever follows.
        if te && (cl.is_some() || request_line.as_ref().is_some_and(|r| r.2)) {
            return Head::Invalid;
        }
    }
    if pos > LIMITS.max_bytes {
        return Head::Invalid;
    }
    let (method, target, http10) = request_line.unwrap();
    headers.sort();
    Head::Complete {
        msg: Msg {
            method: String::from_utf8_lossy(&method).into_owned(),
            target: String::from_utf8_lossy(&target).into_owned(),
            headers,
            body: BodyEnd::Incomplete,
        },
        http10,
        chunked: te,
        len: cl.unwrap_or(0),
        next: pos,
    }
}

/// The significant hex digits of a chunk-size line (without CRLF): `1*HEXDIG` (at most 16
/// after leading zeros), then optional spaces or tabs, then nothing or `;` and an extension.
fn size_line(line: &[u8]) -> Option<Vec<u8>> {
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let significant: Vec<u8> = line[..digits]
        .iter()
        .copied()
        .skip_while(|&c| c == b'0')
        .collect();
    if significant.len() > 16 || digits == 0 {
        return None;
    }
    let rest = &line[digits..];
    let ws = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    let ext_ok = match rest.get(ws) {
        None => true,
        Some(b';') => true,
        Some(_) => false,
    };
    ext_ok.then_some(significant)
}

/// A strict chunked body from `pos`: its data and where the next message starts.
fn oracle_chunked(b: &[u8], mut pos: usize) -> (BodyEnd, usize) {
    let mut data = Vec::new();
    loop {
        let (line, next) = match strict_line(b, pos) {
            Err(()) => return (BodyEnd::Invalid, b.len()),
            Ok(None) => {
                // A partial size line is incomplete only if it is valid so far.
                let rest = &b[pos..];
                let line = rest.strip_suffix(b"\r").unwrap_or(rest);
                let ok = rest.is_empty() || size_line(line).is_some();
                return (
                    if ok {
                        BodyEnd::Incomplete
                    } else {
                        BodyEnd::Invalid
                    },
                    b.len(),
                );
            }
            Ok(Some(l)) => l,
        };
        let Some(significant) = size_line(line) else {
            return (BodyEnd::Invalid, b.len());
        };
        let size = if significant.is_empty() {
            0
        } else {
            u64::from_str_radix(std::str::from_utf8(&significant).unwrap(), 16).unwrap()
        };
        pos = next;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                match strict_line(b, pos) {
                    Err(()) => return (BodyEnd::Invalid, b.len()),
                    Ok(None) => return (BodyEnd::Incomplete, b.len()),
                    Ok(Some((line, next))) => {
                        pos = next;
                        if line.is_empty() {
                            return (BodyEnd::Complete(data), pos);
                        }
                        let colon = line.iter().position(|&c| c == b':');
                        let ok =
                            colon.is_some_and(|c| c > 0 && line[..c].iter().all(|&x| is_tchar(x)));
                        if !ok {
                            return (BodyEnd::Invalid, b.len());
                        }
                    }
                }
            }
        }
        let Some(end) = pos.checked_add(size as usize).filter(|&e| e <= b.len()) else {
            return (BodyEnd::Incomplete, b.len());
        };
        data.extend_from_slice(&b[pos..end]);
        pos = end;
        match &b[pos..] {
            [b'\r', b'\n', ..] => pos += 2,
            [] | [b'\r'] => return (BodyEnd::Incomplete, b.len()),
            _ => return (BodyEnd::Invalid, b.len()),
        }
    }
}

/// Whether the test service switches protocols for this request.
fn switches(m: &Msg, http10: bool) -> bool {
    !http10
        && m.headers
            .iter()
            .any(|(k, v)| k == "upgrade" && v == "switch")
}

fn keep_alive(m: &Msg, http10: bool) -> bool {
    !http10
        || m.headers
            .iter()
            .any(|(k, v)| k == "connection" && v.to_ascii_lowercase().contains("keep-alive"))
}

fn oracle(b: &[u8]) -> Reading {
    let mut msgs = Vec::new();
    let mut pos = 0;
    loop {
        if pos == b.len() {
            return Reading {
                msgs,
                end: End::Clean,
            };
        }
        let (mut msg, http10, chunked, len, next) = match oracle_head(b, pos) {
            Head::Incomplete => {
                return Reading {
                    msgs,
                    end: End::Truncated,
                }
            }
            Head::Invalid => {
                return Reading {
                    msgs,
                    end: End::Invalid,
                }
            }
            Head::Complete {
                msg,
                http10,
                chunked,
                len,
                next,
            } => (msg, http10, chunked, len, next),
        };
        let (body, after) = if chunked {
            oracle_chunked(b, next)
        } else if (b.len() - next) as u64 >= len {
            let end = next + len as usize;
            (BodyEnd::Complete(b[next..end].to_vec()), end)
        } else {
            (BodyEnd::Incomplete, b.len())
        };
        msg.body = body.clone();
        let switched = switches(&msg, http10);
        let alive = keep_alive(&msg, http10);
        msgs.push(msg);
        match body {
            BodyEnd::Invalid => {
                return Reading {
                    msgs,
                    end: End::Invalid,
                }
            }
            BodyEnd::Incomplete => {
                return Reading {
                    msgs,
                    end: End::Clean,
                }
            }
            BodyEnd::Complete(_) => {}
        }
        if switched {
            return Reading {
                msgs,
                end: End::Switched(b[after..].to_vec()),
            };
        }
        if !alive {
            return Reading {
                msgs,
                end: End::Closed,
            };
        }
        pos = after;
    }
}

// ---------------------------------------------------------------- hyper, with and without the guard

/// What the service saw.
#[derive(Debug, Default)]
struct Seen {
    msgs: Vec<Msg>,
    /// The guard refused a head.
    refused: bool,
    switched: Option<Vec<u8>>,
}

async fn serve(input: Vec<u8>, pieces: Vec<usize>, guarded: bool) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let link = FramingLink::new();
    let svc_link = link.clone();
    let svc_seen = seen.clone();
    let (tail_tx, tail_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let tail_tx = Arc::new(Mutex::new(Some(tail_tx)));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let slot: Option<RequestSlot> = guarded.then(|| svc_link.begin());
        let seen = svc_seen.clone();
        let tail_tx = tail_tx.clone();
        async move {
            let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
            if let Some(refusal) = slot.as_ref().and_then(RequestSlot::refusal) {
                seen.lock().unwrap().refused = true;
                if let Some(s) = &slot {
                    s.answered(false);
                }
                *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
                resp.headers_mut()
                    .insert("connection", "close".parse().unwrap());
                resp.headers_mut()
                    .insert("x-refusal", format!("{refusal:?}").parse().unwrap());
                return Ok::<_, std::convert::Infallible>(resp);
            }
            let mut headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            headers.sort();
            let http10 = req.version() == hyper::Version::HTTP_10;
            let on_upgrade = hyper::upgrade::on(&mut req);
            let method = req.method().to_string();
            let target = req.uri().to_string();
            let body = match req.into_body().collect().await {
                Ok(b) => BodyEnd::Complete(b.to_bytes().to_vec()),
                Err(_) if slot.as_ref().and_then(RequestSlot::refusal).is_some() => {
                    BodyEnd::Invalid
                }
                Err(_) => BodyEnd::Incomplete,
            };
            let msg = Msg {
                method,
                target,
                headers,
                body,
            };
            let switch = switches(&msg, http10) && matches!(msg.body, BodyEnd::Complete(_));
            seen.lock().unwrap().msgs.push(msg);
            if switch {
                *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut()
                    .insert("upgrade", "switch".parse().unwrap());
                resp.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
                tokio::spawn(async move {
                    let mut rest = Vec::new();
                    if let Ok(up) = on_upgrade.await {
                        let mut io = TokioIo::new(up);
                        let _ = io.read_to_end(&mut rest).await;
                    }
                    if let Some(tx) = tail_tx.lock().unwrap().take() {
                        let _ = tx.send(rest);
                    }
                });
            } else if req_is_connect(&seen) {
                *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
            }
            if let Some(s) = &slot {
                s.answered(switch);
            }
            Ok(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(LIMITS.max_bytes)
        .max_headers(LIMITS.max_fields);
    let conn = tokio::spawn(async move {
        if guarded {
            let io = TokioIo::new(FramingGuard::new(server, LIMITS, link));
            let _ = builder.serve_connection(io, svc).with_upgrades().await;
        } else {
            let _ = builder
                .serve_connection(TokioIo::new(server), svc)
                .with_upgrades()
                .await;
        }
    });
    // Write in pieces, then end the input; read (and drop) the answers meanwhile.
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let write = async {
        let mut at = 0usize;
        for p in pieces.into_iter().chain(std::iter::once(usize::MAX)) {
            let end = at.saturating_add(p).min(input.len());
            if wr.write_all(&input[at..end]).await.is_err() {
                break;
            }
            at = end;
            tokio::task::yield_now().await;
            if at == input.len() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    };
    tokio::join!(write, read);
    let _ = conn.await;
    let switched = tokio::time::timeout(Duration::from_millis(200), tail_rx).await;
    let mut out = std::mem::take(&mut *seen.lock().unwrap());
    if let Ok(Ok(rest)) = switched {
        out.switched = Some(rest);
    }
    out
}

fn req_is_connect(seen: &Mutex<Seen>) -> bool {
    seen.lock()
        .unwrap()
        .msgs
        .last()
        .is_some_and(|m| m.method == "CONNECT")
}

// ---------------------------------------------------------------- generators

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![12 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")]
}

fn request_line() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("GET /a HTTP/1.1"),
        6 => Just("POST /b?x=1 HTTP/1.1"),
        2 => Just("PUT /c HTTP/1.0"),
        1 => Just("CONNECT x:1 HTTP/1.1"),
        1 => Just("GET /a HTTP/1.1 x"),
        1 => Just("GET  /a HTTP/1.1"),
        1 => Just("GET /a HTTP/2.0"),
    ]
}

fn field() -> impl Strategy<Value = String> {
    let n = 0u8..12;
    prop_oneof![
        4 => Just("Host: x".to_string()),
        4 => n.clone().prop_map(|n| format!("Content-Length: {n}")),
        1 => n.clone().prop_map(|n| format!("Content-Length: 000{n}")),
        1 => n.clone().prop_map(|n| format!("Content-Length: +{n}")),
        1 => n.clone().prop_map(|n| format!("Content-Length: {n}, {n}")),
        1 => n.prop_map(|n| format!("Content-Length : {n}")),
        4 => Just("Transfer-Encoding: chunked".to_string()),
        1 => Just("Transfer-Encoding: Chunked".to_string()),
        1 => Just("Transfer-Encoding:  chunked ".to_string()),
        1 => Just("Transfer-Encoding:\tchunked".to_string()),
        1 => Just("Transfer-Encoding: chunked\t".to_string()),
        1 => Just("Transfer-Encoding: chunked,".to_string()),
        1 => Just("Transfer-Encoding: gzip, chunked".to_string()),
        1 => Just("Transfer-Encoding: identity".to_string()),
        2 => Just("Upgrade: h2c".to_string()),
        2 => Just("Upgrade: switch".to_string()),
        1 => Just("Connection: upgrade".to_string()),
        1 => Just("Connection: keep-alive".to_string()),
        1 => Just(" folded".to_string()),
        1 => Just("\tfolded: x".to_string()),
        1 => Just("X-A: v\tw ".to_string()),
        1 => Just("NoColon".to_string()),
        1 => Just("X-Obs: caf\u{e9}".to_string()),
    ]
}

fn chunk_size_line() -> impl Strategy<Value = (u8, String)> {
    (0u8..8, 0usize..24, prop_oneof![
        6 => Just(""), 1 => Just(";e=1"), 1 => Just(" "), 1 => Just("\t;x"), 1 => Just("x"), 1 => Just(" y"),
    ])
        .prop_map(|(size, zeros, ext)| (size, format!("{}{size:x}{ext}", "0".repeat(zeros))))
}

fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((chunk_size_line(), eol(), eol()), 0..3),
        eol(),
        prop::option::of(prop_oneof![Just("X-T: 1"), Just("bad trailer"), Just("X\n: 1")]),
        eol(),
        prop_oneof![4 => Just(None), 1 => Just(Some("10000000000000000")), 1 => Just(Some("000FFFFFFFFFFFFFFFF"))],
    )
        .prop_map(|(chunks, last_eol, trailer, end_eol, huge)| {
            let mut out = Vec::new();
            for ((size, line), e1, e2) in chunks {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(e1.as_bytes());
                out.resize(out.len() + usize::from(size), b'd');
                out.extend_from_slice(e2.as_bytes());
            }
            if let Some(h) = huge {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0");
            out.extend_from_slice(last_eol.as_bytes());
            if let Some(t) = trailer {
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(end_eol.as_bytes());
            out
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        3 => chunked_body(),
        2 => prop::collection::vec(prop_oneof![Just(b'z'), Just(b'\r'), Just(b'\n'), Just(b'0')], 0..12),
    ]
}

/// A valid chunked body: sizes with any number of leading zeros, extensions, trailers.
fn valid_chunked() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            (
                0u8..20,
                0usize..30,
                prop_oneof![3 => Just(""), 1 => Just(";a=b"), 1 => Just(" ;x")],
            ),
            0..4,
        ),
        0usize..24,
        prop::option::of(Just("X-Trailer: t\r\n")),
    )
        .prop_map(|(chunks, last_zeros, trailer)| {
            let mut out = Vec::new();
            for (size, zeros, ext) in chunks.into_iter().filter(|c| c.0 > 0) {
                out.extend_from_slice(format!("{}{size:X}{ext}\r\n", "0".repeat(zeros)).as_bytes());
                out.resize(out.len() + usize::from(size), b'c');
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("{}0\r\n", "0".repeat(last_zeros)).as_bytes());
            if let Some(t) = trailer {
                out.extend_from_slice(t.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out
        })
}

/// A request every reader frames the same way.
fn clean_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just("GET /a HTTP/1.1"),
            Just("POST /b?x=1 HTTP/1.1"),
            Just("PUT /c HTTP/1.0")
        ],
        prop::collection::vec(
            prop_oneof![
                Just("Host: x"),
                Just("Upgrade: h2c"),
                Just("Upgrade: switch"),
                Just("Connection: keep-alive"),
                Just("X-Obs: caf\u{e9} \t"),
            ],
            0..3,
        ),
        prop_oneof![
            Just(None),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Some),
        ],
        valid_chunked(),
        any::<bool>(),
    )
        .prop_map(|(line, fields, fixed, chunked, use_chunked)| {
            let mut out = format!("{line}\r\n").into_bytes();
            for f in fields {
                out.extend_from_slice(format!("{f}\r\n").as_bytes());
            }
            let http11 = line.ends_with("1.1");
            if use_chunked && http11 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                out.extend_from_slice(&chunked);
            } else if let Some(body) = fixed {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            } else {
                out.extend_from_slice(b"\r\n");
            }
            out
        })
}

/// A request with anything in it, valid or not.
fn request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![2 => clean_request(), 1 => dirty_request()]
}

fn dirty_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(eol()),
        request_line(),
        eol(),
        prop::collection::vec((field(), eol()), 0..5),
        eol(),
        body(),
    )
        .prop_map(|(lead, line, e0, fields, end, body)| {
            let mut out = Vec::new();
            if let Some(l) = lead {
                out.extend_from_slice(l.as_bytes());
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(e0.as_bytes());
            for (f, e) in fields {
                out.extend_from_slice(f.as_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(&body);
            out
        })
}

fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        prop::collection::vec(request(), 1..4),
        prop::option::of(Just(b"raw tail bytes\r\n\r\n".to_vec())),
        prop::collection::vec(1usize..40, 0..12),
    )
        .prop_map(|(reqs, tail, pieces)| {
            let mut input: Vec<u8> = reqs.concat();
            if let Some(t) = tail {
                input.extend_from_slice(&t);
            }
            (input, pieces)
        })
}

// ---------------------------------------------------------------- the properties

/// Compares the oracle's reading with what hyper alone saw: the number of leading messages
/// both read the same way, and whether they agree on everything.
fn agreement(o: &Reading, plain: &Seen) -> (usize, bool) {
    let same = o
        .msgs
        .iter()
        .zip(&plain.msgs)
        .take_while(|(a, b)| {
            a.method == b.method
                && a.target == b.target
                && a.headers == b.headers
                && a.body == b.body
        })
        .count();
    let tails = match (&o.end, &plain.switched) {
        (End::Switched(a), Some(b)) => a == b,
        (End::Switched(_), None) | (_, Some(_)) => false,
        _ => true,
    };
    let all =
        same == o.msgs.len() && same == plain.msgs.len() && tails && !matches!(o.end, End::Invalid);
    (same, all)
}

fn check(input: &[u8], pieces: Vec<usize>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (plain, guarded) = rt.block_on(async {
        let plain = tokio::time::timeout(
            Duration::from_secs(10),
            serve(input.to_vec(), pieces.clone(), false),
        );
        let guarded =
            tokio::time::timeout(Duration::from_secs(10), serve(input.to_vec(), pieces, true));
        (plain.await, guarded.await)
    });
    let plain = plain.map_err(|_| TestCaseError::fail("hyper alone hung"))?;
    let guarded = guarded.map_err(|_| TestCaseError::fail("the guarded server hung"))?;
    let o = oracle(input);
    let text = String::from_utf8_lossy(input);
    // 1. Behind the guard the service sees only what the oracle reads, message for message.
    prop_assert!(
        guarded.msgs.len() <= o.msgs.len(),
        "the guard passed more than the oracle reads\ninput: {text:?}\noracle: {o:?}\nguarded: {guarded:?}"
    );
    for (g, m) in guarded.msgs.iter().zip(&o.msgs) {
        prop_assert_eq!(g, m, "input: {:?}", text);
    }
    if let Some(rest) = &guarded.switched {
        prop_assert_eq!(&End::Switched(rest.clone()), &o.end, "input: {:?}", text);
    }
    let (same, all) = agreement(&o, &plain);
    if std::env::var("FRAMING_STATS").is_ok() {
        eprintln!(
            "STAT all={all} oracle_end={:?} msgs={} guarded={} refused={}",
            std::mem::discriminant(&o.end),
            o.msgs.len(),
            guarded.msgs.len(),
            guarded.refused
        );
    }
    if all {
        // 2. Where both read the stream the same way, the guard passes all of it.
        prop_assert!(
            !guarded.refused,
            "refused a stream both read the same way: {:?}",
            text
        );
        prop_assert_eq!(guarded.msgs.len(), o.msgs.len(), "input: {:?}", text);
        prop_assert_eq!(&guarded.switched, &plain.switched, "input: {:?}", text);
    } else {
        // 3. Where they could differ, nothing from the first difference on is passed whole.
        prop_assert!(
            guarded.msgs.iter().skip(same).all(|m| !matches!(m.body, BodyEnd::Complete(_))),
            "passed a request past the first difference\ninput: {text:?}\noracle: {o:?}\nplain: {plain:?}\nguarded: {guarded:?}"
        );
        // 4. A head the oracle refuses gets the guard's own answer.
        let head_refused = matches!(o.end, End::Invalid)
            && !o.msgs.last().is_some_and(|m| m.body == BodyEnd::Invalid);
        if head_refused && guarded.msgs.len() == o.msgs.len() {
            prop_assert!(
                guarded.refused,
                "no answer of the guard's own to a head it must refuse\ninput: {text:?}\nguarded: {guarded:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    // 512 cases by default (a few seconds); PROPTEST_CASES=20000 for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_guard_refuses_where_readings_could_differ_and_passes_the_rest((input, pieces) in stream()) {
        check(&input, pieces)?;
    }
}

#[test]
fn known_cases() {
    for case in [
        &b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\nGET /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET /x HTTP/1.1\nHost: a\n\n",
        b"GET /x HTTP/1.1\r\nUpgrade: switch\r\n\r\nGET /not-http HTTP/1.1\r\n\r\n",
        b"\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000000000000000003\r\nabc\r\n0\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    ] {
        check(case, vec![3, 7, 1]).unwrap();
        check(case, vec![]).unwrap();
    }
}
