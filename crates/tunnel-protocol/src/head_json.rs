//! Request and response heads written as JSON straight from their parts: the bytes serde
//! would write for a [`ControlMessage::Request`] or [`ControlMessage::Response`], without a
//! [`WireHeaders`] copy of the header list in between.
//!
//! A head is the one control message of every request in each direction. Going through
//! serde meant copying every header name and value of an [`http::HeaderMap`] into a
//! [`WireHeaders`] (two allocations per header) only to write them out as JSON and drop them.
//! Writing from the map itself keeps one allocation, the JSON text; what a peer reads is the
//! same text, byte for byte (see the tests), so nothing changes on the wire.
//!
//! [`ControlMessage::Request`]: crate::message::ControlMessage::Request
//! [`ControlMessage::Response`]: crate::message::ControlMessage::Response

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderMap;

use crate::head_headers::HeadHeaders;
use crate::headers::WireHeaders;
use crate::json_scan::first_to_escape;
use crate::message::StreamId;

/// A header list a head can be written from: a parsed [`HeaderMap`] (what the proxy holds)
/// or a [`WireHeaders`] list (any bytes, as a peer may send).
pub trait HeaderList {
    /// Number of entries (a hint for the size of the text).
    fn entries(&self) -> usize;
    /// Calls `f` with every entry's name and value, in order.
    fn each(&self, f: impl FnMut(&str, &[u8]));
}

impl HeaderList for HeaderMap {
    fn entries(&self) -> usize {
        self.len()
    }

    fn each(&self, mut f: impl FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name.as_str(), value.as_bytes());
        }
    }
}

impl HeaderList for HeadHeaders {
    fn entries(&self) -> usize {
        self.len()
    }

    fn each(&self, f: impl FnMut(&str, &[u8])) {
        HeadHeaders::each(self, f)
    }
}

/// A borrowed list: a response can be written from the headers of one it does not own.
impl<T: HeaderList> HeaderList for &T {
    fn entries(&self) -> usize {
        (**self).entries()
    }

    fn each(&self, f: impl FnMut(&str, &[u8])) {
        (**self).each(f)
    }
}

impl HeaderList for WireHeaders {
    fn entries(&self) -> usize {
        self.len()
    }

    fn each(&self, mut f: impl FnMut(&str, &[u8])) {
        for (name, value) in &self.0 {
            f(name, &value.0);
        }
    }
}

/// Bytes of text per header, to size the buffer once for a typical head.
const BYTES_PER_HEADER: usize = 48;

/// `{"type":"request",…}` as serde writes a [`crate::RequestHead`] without `tcp`.
pub fn request_json(
    stream_id: StreamId,
    method: &str,
    target: &str,
    headers: &impl HeaderList,
    end_stream: bool,
) -> String {
    let mut out = String::with_capacity(
        96 + method.len() + target.len() + headers.entries() * BYTES_PER_HEADER,
    );
    out.push_str(r#"{"type":"request","stream_id":"#);
    push_u32(&mut out, stream_id);
    out.push_str(r#","method":"#);
    push_str(&mut out, method);
    out.push_str(r#","target":"#);
    push_str(&mut out, target);
    push_headers_and_end(&mut out, headers, end_stream);
    out
}

/// `{"type":"response",…}` as serde writes a [`crate::ResponseHead`].
pub fn response_json(
    stream_id: StreamId,
    status: u16,
    headers: &impl HeaderList,
    end_stream: bool,
) -> String {
    let mut out = String::with_capacity(96 + headers.entries() * BYTES_PER_HEADER);
    out.push_str(r#"{"type":"response","stream_id":"#);
    push_u32(&mut out, stream_id);
    out.push_str(r#","status":"#);
    push_u32(&mut out, u32::from(status));
    push_headers_and_end(&mut out, headers, end_stream);
    out
}

fn push_headers_and_end(out: &mut String, headers: &impl HeaderList, end_stream: bool) {
    out.push_str(r#","headers":["#);
    let mut first = true;
    headers.each(|name, value| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('[');
        push_str(out, name);
        out.push(',');
        match std::str::from_utf8(value) {
            Ok(text) => push_str(out, text),
            Err(_) => {
                out.push_str(r#"{"b64":""#);
                B64.encode_string(value, out);
                out.push_str("\"}");
            }
        }
        out.push(']');
    });
    out.push_str(if end_stream {
        r#"],"end_stream":true}"#
    } else {
        r#"],"end_stream":false}"#
    });
}

fn push_u32(out: &mut String, mut n: u32) {
    // Digit by digit rather than through `write!` and the formatting machinery.
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it: `"`, `\` and the control
/// characters below 0x20 (with the short forms for backspace, tab, newline, form feed and
/// carriage return), nothing else. Each run between two escapes is copied whole, with one
/// capacity check for the string: almost every name and value is one run, found a word at a
/// time ([`first_to_escape`]).
fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    loop {
        let i = first_to_escape(rest.as_bytes());
        // `i` is the position of an ASCII byte or the end: a character boundary.
        let Some((run, tail)) = rest.split_at_checked(i) else {
            break;
        };
        let Some(&b) = tail.as_bytes().first() else {
            break;
        };
        out.push_str(run);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x09 => out.push_str("\\t"),
            0x0A => out.push_str("\\n"),
            0x0C => out.push_str("\\f"),
            0x0D => out.push_str("\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
        rest = &tail[1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::WireValue;
    use crate::message::{ControlMessage, RequestHead, ResponseHead};
    use http::HeaderValue;

    fn awkward() -> WireHeaders {
        WireHeaders(vec![
            ("content-type".into(), "text/plain".into()),
            ("x-bin".into(), WireValue(vec![0xff, 0x00, b'a'])),
            (
                "x-esc".into(),
                "q\"b\\s\u{1}\u{8}\t\n\u{c}\r\u{1f}\u{7f}é€".into(),
            ),
            ("Odd \"Name\"".into(), "".into()),
        ])
    }

    #[test]
    fn requests_are_written_as_serde_writes_them() {
        for (headers, end_stream) in [(awkward(), false), (WireHeaders::default(), true)] {
            let head = RequestHead {
                stream_id: 4_000_000_000,
                method: "M\"X".into(),
                target: "/a%2Fb?x=1&y=\u{7}".into(),
                headers: headers.clone().into(),
                end_stream,
                tcp: None,
            };
            let ours = request_json(
                head.stream_id,
                &head.method,
                &head.target,
                &headers,
                end_stream,
            );
            let serde = serde_json::to_string(&ControlMessage::Request(head.clone())).expect("ok");
            assert_eq!(ours, serde);
            let back: ControlMessage = serde_json::from_str(&ours).expect("parses");
            assert_eq!(back, ControlMessage::Request(head));
        }
    }

    #[test]
    fn responses_are_written_as_serde_writes_them() {
        let mut map = HeaderMap::new();
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.append(
            "x-raw",
            HeaderValue::from_bytes(&[0x80, b'z']).expect("obs-text"),
        );
        for end_stream in [false, true] {
            let head = ResponseHead {
                stream_id: 7,
                status: 204,
                headers: map.clone().into(),
                end_stream,
            };
            let serde = serde_json::to_string(&ControlMessage::Response(head)).expect("ok");
            assert_eq!(response_json(7, 204, &map, end_stream), serde);
            let wire = WireHeaders::from_header_map(&map);
            assert_eq!(response_json(7, 204, &wire, end_stream), serde);
        }
    }

    #[test]
    fn every_ascii_byte_and_number_is_written_as_serde_writes_it() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for s in [all.as_str(), "", "plain", "\"\"", "a\u{1}b\u{1f}", "é\"€\\"] {
            let mut ours = String::new();
            push_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).expect("ok"), "{s:?}");
        }
        // Escapes and multi-byte characters at every place of the words the scan reads.
        for base in [
            "abcdefghijklmnopqrstuvwx",
            "é€😀é€😀ab",
            "\u{7f}\u{80}\u{a0}\u{ff}\u{7f}\u{80}",
        ] {
            for at in 0..=base.len() {
                if !base.is_char_boundary(at) {
                    continue;
                }
                for special in ["\"", "\\", "\u{0}", "\u{1f}", "\n", "é"] {
                    let s = format!("{}{special}{}\"", &base[..at], &base[at..]);
                    let mut ours = String::new();
                    push_str(&mut ours, &s);
                    assert_eq!(ours, serde_json::to_string(&s).expect("ok"), "{s:?}");
                }
            }
        }
        for n in [0, 7, 10, 99, 4_000_000_000, u32::MAX] {
            let mut ours = String::new();
            push_u32(&mut ours, n);
            assert_eq!(ours, n.to_string());
        }
    }
}
