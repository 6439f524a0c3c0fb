//! HTTP/1.1 heads on the wire: the request head written into one buffer, the response head
//! parsed with `httparse`, and how each message's body is delimited (RFC 9112 §6).

use std::mem::MaybeUninit;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Largest response head read, as hyper's client default (about 400 KiB) is far above what
/// any service sends: past this the response is refused with [`HeadError::TooLarge`].
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Most headers in one response head.
const MAX_HEADERS: usize = 128;

/// Why a request cannot be written to the local service.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The target is not an origin-form path, or holds a space or control byte.
    #[error("invalid request target")]
    Target,
    /// A header value holds a control byte (CR, LF, NUL, …) that could end the line.
    #[error("invalid value of request header {0}")]
    HeaderValue(String),
    /// Content-Length values that are not one number.
    #[error("invalid request content-length")]
    ContentLength,
}

/// Why a response head is unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("response head larger than {} KiB", MAX_HEAD / 1024)]
    TooLarge,
    /// More than [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} response headers")]
    TooManyHeaders,
    /// Not an HTTP/1.x response head.
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    /// A header name or value the `http` types refuse.
    #[error("invalid response header {0:?}")]
    Header(String),
    /// Content-Length values that are not one number.
    #[error("invalid response content-length")]
    ContentLength,
    /// Informational responses without end.
    #[error("more than {MAX_INFORMATIONAL} informational (1xx) responses")]
    TooManyInformational,
}

/// Informational responses skipped at most before the final one.
pub(super) const MAX_INFORMATIONAL: usize = 16;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upload {
    /// No body.
    None,
    /// Exactly this many bytes (the head's Content-Length).
    Length(u64),
    /// Chunked transfer coding: the body's length is not known up front.
    Chunked,
}

/// A request head written out, and what the response to it depends on.
pub(super) struct WrittenHead {
    pub(super) bytes: Vec<u8>,
    pub(super) upload: Upload,
    /// The request said `Connection: close`: the connection is not reused after it.
    pub(super) close: bool,
}

/// [`write_head`] of the headers of an [`http::HeaderMap`] (the tests' requests).
#[cfg(test)]
pub(super) fn write_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    has_body: bool,
) -> Result<WrittenHead, RequestError> {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    write_head(method, target, pairs.into_iter(), has_body)
}

/// Writes the request line and headers of `method target` into one buffer. The head's own
/// framing headers are replaced by the framing the body is sent with: its Content-Length when
/// it has one (checked to be a single number), chunked otherwise, none when `has_body` is
/// false (a `Content-Length: 0` then for the methods servers expect a length with, as hyper
/// did). `headers` are `(name, value)` pairs in the order they are written, names lowercase
/// and valid tokens (a tunnel head's, checked when it was read); the bytes that could end a
/// line are checked again here, since only these reach the socket.
pub(super) fn write_head<'a, I>(
    method: &Method,
    target: &str,
    headers: I,
    has_body: bool,
) -> Result<WrittenHead, RequestError>
where
    I: Iterator<Item = (&'a str, &'a [u8])> + Clone,
{
    // No space, control byte or DEL: nothing that would end the request line early.
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(RequestError::Target);
    }
    // One pass for the buffer's size and the Content-Length.
    let mut len = method.as_str().len() + target.len() + 64;
    let mut length = Ok(None);
    for (name, value) in headers.clone() {
        len += name.len() + value.len() + 4;
        if name == CONTENT_LENGTH.as_str() {
            add_length(&mut length, value);
        }
    }
    let length = length.map_err(|()| RequestError::ContentLength)?;
    let upload = match (has_body, length) {
        (false, _) => Upload::None,
        (true, Some(n)) => Upload::Length(n),
        (true, None) => Upload::Chunked,
    };
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut close = false;
    // The framing header goes where the head had its first one, so that the local service
    // sees the headers in their order (a replay from the inspector is byte for byte).
    let mut framed = false;
    for (name, v) in headers {
        if name == CONTENT_LENGTH.as_str() || name == TRANSFER_ENCODING.as_str() {
            if !framed {
                framed = write_framing(&mut out, upload, length);
            }
            continue;
        }
        // Any control byte but HTAB, as `HeaderValue` itself refuses: CR, LF and NUL among
        // them. A fold without early exit, which the compiler vectorises (an `any` over each
        // byte was about 5 instructions a byte, callgrind).
        if v.iter()
            .fold(false, |bad, &b| bad | (b < b' ' && b != b'\t'))
        {
            return Err(RequestError::HeaderValue(name.to_owned()));
        }
        if name == CONNECTION.as_str() && has_token(v, b"close") {
            close = true;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !framed && !write_framing(&mut out, upload, length) {
        let expects_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if expects_length {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(WrittenHead {
        bytes: out,
        upload,
        close,
    })
}

/// Writes the framing header of `upload`; false when there is none to write (no body, and
/// the head gave no `Content-Length: 0` to keep).
fn write_framing(out: &mut Vec<u8>, upload: Upload, length: Option<u64>) -> bool {
    match (upload, length) {
        (Upload::Length(n), _) | (Upload::None, Some(n @ 0)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            true
        }
        (Upload::Chunked, _) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            true
        }
        (Upload::None, _) => false,
    }
}

/// Adds the Content-Length `value` to what the earlier ones gave: the single length all
/// values (and comma-separated list members) agree on; `Err` when one is not a number or
/// they differ (RFC 9112 §6.3, item 5).
fn add_length(found: &mut Result<Option<u64>, ()>, value: &[u8]) {
    for part in value.split(|&b| b == b',') {
        let n = match (parse_decimal(part.trim_ascii()), &found) {
            (Some(n), Ok(None)) => n,
            (Some(n), Ok(Some(f))) if *f == n => n,
            _ => {
                *found = Err(());
                return;
            }
        };
        *found = Ok(Some(n));
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Whether the comma-separated header value `v` lists `token` (case-insensitive).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 204, 304, or a Content-Length of 0).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the local service closes the connection.
    Close,
    /// A `101`: the connection now speaks another protocol.
    Upgrade,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) framing: Framing,
    /// The connection may take another request once this response was read whole.
    pub(super) keep_alive: bool,
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete,
/// else the head and its length. `head_request` says the request was HEAD (no body follows
/// whatever the headers say).
pub(super) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, ResponseHead)>, HeadError> {
    // Uninitialised slots, as hyper does: filling 128 empty headers first cost more than
    // parsing a small head.
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Parse(e)),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let code = resp.code.ok_or(HeadError::Parse(httparse::Error::Status))?;
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Parse(httparse::Error::Status))?;
    let http11 = resp.version == Some(1);
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut close = false;
    let mut keep_alive_token = false;
    let mut chunked = false;
    let mut transfer_encoding = false;
    // Read here rather than looked up in the map afterwards.
    let mut length = Ok(None);
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Header(h.name.to_string()))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Header(h.name.to_string()))?;
        if name == CONNECTION {
            close |= has_token(h.value, b"close");
            keep_alive_token |= has_token(h.value, b"keep-alive");
        } else if name == TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding decides (RFC 9112 §6.3, item 4).
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONTENT_LENGTH {
            add_length(&mut length, h.value);
        }
        headers.append(name, value);
    }
    let chunked = transfer_encoding.then_some(chunked);
    let framing = framing(status, head_request, chunked, length)?;
    // Both framings given: Transfer-Encoding wins, but the sender is suspect; not reused.
    let both = transfer_encoding && headers.contains_key(CONTENT_LENGTH);
    let keep_alive = !close
        && !both
        && (http11 || keep_alive_token)
        && !matches!(framing, Framing::Close | Framing::Upgrade);
    Ok(Some((
        len,
        ResponseHead {
            status,
            headers,
            framing,
            keep_alive,
        },
    )))
}

/// The framing of a response body (RFC 9112 §6.3); `chunked` is `None` without
/// Transfer-Encoding, else whether its last coding is chunked.
fn framing(
    status: StatusCode,
    head_request: bool,
    chunked: Option<bool>,
    length: Result<Option<u64>, ()>,
) -> Result<Framing, HeadError> {
    Ok(if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Upgrade
    } else if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length.map_err(|()| HeadError::ContentLength)? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> ResponseHead {
        let (len, head) = parse_response(raw.as_bytes(), false)
            .expect("valid")
            .expect("complete");
        assert_eq!(len, raw.len());
        head
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 101 Switching\r\nupgrade: websocket\r\n\r\n",
                Framing::Upgrade,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
        ];
        for (raw, framing, keep_alive) in cases {
            let head = parse(raw);
            assert_eq!(head.framing, framing, "{raw:?}");
            assert_eq!(head.keep_alive, keep_alive, "{raw:?}");
        }
    }

    #[test]
    fn a_head_request_has_no_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n";
        let (_, head) = parse_response(raw, true).expect("valid").expect("complete");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(parse_response(raw.as_bytes(), false).is_err(), "{raw:?}");
        }
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .expect("valid so far")
            .is_none());
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert!(matches!(
            parse_response(&big, false),
            Err(HeadError::TooLarge | HeadError::TooManyHeaders)
        ));
    }

    #[test]
    fn the_request_head_carries_its_framing() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("local"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let w = write_request(&Method::POST, "/a?b=c", &h, true).expect("valid");
        assert_eq!(w.upload, Upload::Chunked);
        assert_eq!(
            String::from_utf8_lossy(&w.bytes),
            "POST /a?b=c HTTP/1.1\r\nhost: local\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        h.insert("content-length", HeaderValue::from_static("12"));
        let w = write_request(&Method::PUT, "/", &h, true).expect("valid");
        assert_eq!(w.upload, Upload::Length(12));
        let w = write_request(&Method::POST, "/", &HeaderMap::new(), false).expect("valid");
        assert_eq!(
            String::from_utf8_lossy(&w.bytes),
            "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(write_request(&Method::GET, "/a b", &HeaderMap::new(), false).is_err());
        assert!(write_request(&Method::GET, "/a\r\nx: y", &HeaderMap::new(), false).is_err());
        assert!(write_request(&Method::GET, "http://x/", &HeaderMap::new(), false).is_err());
        h.insert("content-length", HeaderValue::from_static("1, 2"));
        assert!(write_request(&Method::PUT, "/", &h, true).is_err());
    }
}
