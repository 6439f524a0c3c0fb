//! Request and response heads read back from the exact text [`crate::head_json`] writes,
//! without serde: the one control message of every request in each direction.
//!
//! serde_json reads a head field by field through its visitors (the message's `type` first,
//! then a map access per field, a sequence access per header and per entry): about 7,000 of
//! the 12,000 instructions a small request's head cost on the client (callgrind), the rest
//! being the header map itself. A head as our peer writes it has one fixed shape: the fields
//! in one order, no white space, numbers without signs or exponents. [`read`] takes exactly
//! that shape, and gives up (`None`) at the first byte outside it (an escape in a string, a
//! `{"b64": …}` value, another field order, a header list that is not a valid one, anything
//! unexpected); the caller then decodes the text with serde as before. So what a head means
//! never depends on which reader took it (the tests hold the two side by side), and a text
//! the fast reader does not take costs one failed scan more.
//!
//! Strings with escapes are read here too ([`unescape`]), into a copy: nginx's `ETag` is a
//! quoted string (`"6b123f3f-64"`, written `\"6b123f3f-64\"`), as are browsers'
//! `sec-ch-ua` and `If-None-Match`, and every such head went to serde. Measured (callgrind,
//! `bench/instructions.sh --backend` nginx): the server spent 16,000 instructions per small
//! request decoding nginx's response heads, 13,500 of them in serde after the fast reader gave
//! up on the ETag.

use std::borrow::Cow;

use crate::head_headers::{HeadHeaders, Packer};
use crate::json_scan::first_to_escape;
use crate::message::{ControlMessage, RequestHead, ResponseHead};

const REQUEST: &[u8] = br#"{"type":"request","stream_id":"#;
const RESPONSE: &[u8] = br#"{"type":"response","stream_id":"#;

/// The request or response head `text` holds, if it has [`crate::head_json`]'s exact shape;
/// `None` for any other text (then serde decides what it is).
pub(crate) fn read(text: &str) -> Option<ControlMessage> {
    let bytes = text.as_bytes();
    if let Some(rest) = bytes.strip_prefix(REQUEST) {
        let mut c = Cursor::new(text, bytes.len() - rest.len());
        let stream_id = c.number()?;
        c.expect(br#","method":"#)?;
        let method = c.string()?;
        c.expect(br#","target":"#)?;
        let target = c.string()?;
        let (headers, end_stream) = c.headers_and_end()?;
        return Some(ControlMessage::Request(RequestHead {
            stream_id,
            method: method.into_owned(),
            target: target.into_owned(),
            headers,
            end_stream,
            tcp: None,
        }));
    }
    if let Some(rest) = bytes.strip_prefix(RESPONSE) {
        let mut c = Cursor::new(text, bytes.len() - rest.len());
        let stream_id = c.number()?;
        c.expect(br#","status":"#)?;
        let status = u16::try_from(c.number()?).ok()?;
        let (headers, end_stream) = c.headers_and_end()?;
        return Some(ControlMessage::Response(ResponseHead {
            stream_id,
            status,
            headers,
            end_stream,
        }));
    }
    None
}

/// A position in the text being read.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str, at: usize) -> Self {
        Self { text, at }
    }

    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Steps over `lit`, which must come next.
    fn expect(&mut self, lit: &[u8]) -> Option<()> {
        if !self.rest().starts_with(lit) {
            return None;
        }
        self.at += lit.len();
        Some(())
    }

    /// A `u32` as JSON writes it: digits, no leading zero (as serde_json requires).
    fn number(&mut self) -> Option<u32> {
        let digits = self
            .rest()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.rest()[..digits];
        if digits == 0 || digits > 10 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        let n = text
            .iter()
            .try_fold(0u64, |n, &d| Some(n * 10 + u64::from(d - b'0')))?;
        self.at += digits;
        u32::try_from(n).ok()
    }

    /// A string: borrowed from the text when it has no escapes (the text is UTF-8, and `"`
    /// ends the string at a character boundary), unescaped into a copy when it has some.
    /// `None` for a raw control character, which serde refuses too.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b"\"")?;
        let len = first_to_escape(self.rest());
        match self.rest().get(len) {
            Some(b'"') => {
                let s = self.text.get(self.at..self.at + len)?;
                self.at += len + 1;
                Some(Cow::Borrowed(s))
            }
            Some(b'\\') => {
                let (s, used) = unescape(self.text.get(self.at..)?)?;
                self.at += used;
                Some(Cow::Owned(s))
            }
            _ => None,
        }
    }

    /// `,"headers":[[name,value],…],"end_stream":bool}` up to the end of the text.
    fn headers_and_end(&mut self) -> Option<(HeadHeaders, bool)> {
        self.expect(br#","headers":["#)?;
        // Room for the rest of the text in each buffer: neither the names nor the values
        // with their prefixes are longer (a JSON entry spends at least eight bytes on
        // quotes, brackets and commas).
        let room = self.text.len() - self.at;
        let mut packer = Packer::with_capacity(room, room);
        if self.expect(b"]").is_none() {
            loop {
                self.expect(b"[")?;
                let name = self.string()?;
                self.expect(b",")?;
                let value = self.string()?;
                self.expect(b"]")?;
                // A list that is not valid is serde's to keep as it came (`HeadHeaders`).
                packer.push(&name, value.as_bytes())?;
                if self.expect(b",").is_none() {
                    self.expect(b"]")?;
                    break;
                }
            }
        }
        let end_stream = if self.expect(br#","end_stream":true}"#).is_some() {
            true
        } else {
            self.expect(br#","end_stream":false}"#)?;
            false
        };
        if !self.rest().is_empty() {
            return None;
        }
        Some((packer.into_headers(), end_stream))
    }
}

/// The body of a JSON string with escapes, from just after its opening quote: the string
/// and how many bytes it took (through the closing quote). Every escape of RFC 8259 is read
/// (`\uXXXX` with surrogate pairs); `None` where serde_json would refuse the string (a raw
/// control character, an unknown escape, a lone surrogate) or the text ends first.
fn unescape(text: &str) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len().min(256));
    let mut at = 0;
    loop {
        let run = first_to_escape(bytes.get(at..)?);
        // `run` ends at an ASCII byte or the end of the text: a character boundary.
        out.push_str(text.get(at..at + run)?);
        at += run;
        match *bytes.get(at)? {
            b'"' => return Some((out, at + 1)),
            b'\\' => {}
            _ => return None,
        }
        let escaped = *bytes.get(at + 1)?;
        at += 2;
        let c = match escaped {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = hex4(bytes.get(at..at + 4)?)?;
                at += 4;
                match first {
                    0xD800..=0xDBFF => {
                        // A high surrogate: its low half must follow as `\uDC00`–`\uDFFF`.
                        if bytes.get(at..at + 2)? != b"\\u" {
                            return None;
                        }
                        let low = hex4(bytes.get(at + 2..at + 6)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        at += 6;
                        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    // A lone low surrogate is no character (`from_u32` refuses it too).
                    _ => char::from_u32(first)?,
                }
            }
            _ => return None,
        };
        out.push(c);
    }
}

/// Four hexadecimal digits (either case) as a number.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(n << 4 | v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head_json::{request_json, response_json};
    use crate::headers::{WireHeaders, WireValue};
    use proptest::prelude::*;

    fn serde(text: &str) -> Option<ControlMessage> {
        serde_json::from_str(text).ok()
    }

    fn wire(pairs: &[(String, Vec<u8>)]) -> WireHeaders {
        WireHeaders(
            pairs
                .iter()
                .map(|(n, v)| (n.clone(), WireValue(v.clone())))
                .collect(),
        )
    }

    #[test]
    fn heads_as_written_are_read_as_serde_reads_them() {
        let headers = wire(&[
            ("host".into(), b"example.com".to_vec()),
            ("x-request-id".into(), b"abc-1".to_vec()),
            ("accept".into(), b"*/*".to_vec()),
            ("set-cookie".into(), b"a=1".to_vec()),
            ("set-cookie".into(), b"b=2".to_vec()),
        ]);
        for end in [false, true] {
            for h in [headers.clone(), WireHeaders::default()] {
                let text = request_json(4_000_000_000, "GET", "/a?b=c", &h, end);
                let fast = read(&text);
                assert!(fast.is_some(), "{text}");
                assert_eq!(fast, serde(&text), "{text}");
                let text = response_json(7, 204, &h, end);
                let fast = read(&text);
                assert!(fast.is_some(), "{text}");
                assert_eq!(fast, serde(&text), "{text}");
            }
        }
    }

    #[test]
    fn long_header_lists_are_read_whole() {
        let pairs: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| (format!("x-h{i}"), format!("v{i}").into_bytes()))
            .collect();
        let text = request_json(3, "POST", "/", &wire(&pairs), false);
        let fast = read(&text);
        assert!(fast.is_some());
        assert_eq!(fast, serde(&text));
    }

    #[test]
    fn strings_with_escapes_are_read_as_serde_reads_them() {
        let h = wire(&[
            ("etag".into(), b"\"6b123f3f-64\"".to_vec()),
            (
                "sec-ch-ua".into(),
                br#""Chromium";v="120", "Not?A_Brand";v="8""#.to_vec(),
            ),
            ("x-slashes".into(), b"a\\b/c\tend".to_vec()),
            ("x-utf8".into(), "caf\u{e9} \u{1f600}".as_bytes().to_vec()),
        ]);
        for end in [false, true] {
            for text in [
                request_json(9, "GET", "/q?a=\"b\"&c=\\", &h, end),
                response_json(9, 200, &h, end),
            ] {
                let fast = read(&text);
                assert!(fast.is_some(), "{text}");
                assert_eq!(fast, serde(&text), "{text}");
            }
        }
        // A control character in the target, which only an escape can carry.
        let text = request_json(1, "GET", "/\u{1}", &WireHeaders::default(), false);
        assert!(read(&text).is_some(), "{text}");
        assert_eq!(read(&text), serde(&text));
        // Every escape JSON has, as another writer than ours may use them. Header values
        // cannot hold most of these: the map refuses them, so serde decides (and keeps the
        // list as it came).
        let text = r#"{"type":"response","stream_id":1,"status":200,"headers":[["x-a","\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00"]],"end_stream":true}"#;
        assert!(read(text).is_none());
        assert!(serde(text).is_some());
        let text = r#"{"type":"response","stream_id":1,"status":200,"headers":[["x-a","\"\\\/\t\u0041\u00e9\ud83d\ude00"]],"end_stream":true}"#;
        assert!(read(text).is_some(), "{text}");
        assert_eq!(read(text), serde(text));
    }

    #[test]
    fn escapes_serde_refuses_are_refused() {
        for s in [
            r#"\x"#,           // no such escape
            r#"\u12"#,         // too few digits
            r#"\u12G4"#,       // not hexadecimal
            r#"\ud83d"#,       // a high surrogate alone
            r#"\ud83dx"#,      // followed by something else
            r#"\ud83d\u0041"#, // followed by no low surrogate
            r#"\ude00"#,       // a low surrogate alone
            "\\\u{1}",         // a raw control character after an escape
            "\\",              // the text ends in the escape
        ] {
            let text = format!(
                r#"{{"type":"response","stream_id":1,"status":200,"headers":[["x-a","{s}"]],"end_stream":true}}"#
            );
            assert_eq!(read(&text), None, "{text}");
            assert_eq!(serde(&text), None, "{text}");
        }
    }

    #[test]
    fn other_shapes_are_left_to_serde() {
        let h = wire(&[
            ("x-esc".into(), b"a\"b".to_vec()),
            ("x-bin".into(), vec![0xff]),
        ]);
        // The binary value ({"b64": …}) sends the whole head to serde.
        for text in [
            request_json(1, "GET", "/", &h, false),
            r#"{"type":"request","stream_id":01,"method":"GET","target":"/","headers":[],"end_stream":false}"#.into(),
            r#"{"type":"request","stream_id":4294967296,"method":"GET","target":"/","headers":[],"end_stream":false}"#.into(),
            r#"{"type":"response","stream_id":1,"status":70000,"headers":[],"end_stream":false}"#.into(),
            r#"{"type":"response","stream_id":1,"status":200,"headers":[],"end_stream":false} "#.into(),
            r#"{"type":"response","stream_id":1,"status":200,"headers":[["bad name","v"]],"end_stream":false}"#.into(),
            r#"{"type":"response","stream_id":1,"status":200,"headers":[]}"#.into(),
            r#"{"type":"response", "stream_id":1,"status":200,"headers":[],"end_stream":false}"#.into(),
            r#"{"type":"window","stream_id":1,"increment":5}"#.into(),
        ] {
            assert_eq!(read(&text), None, "{text}");
        }
    }

    proptest! {
        /// Any string as serde_json writes it is read back whole, escapes and all.
        #[test]
        fn unescape_reads_what_serde_writes(s in "\\PC*|[\\x00-\\x1f\"\\\\]{0,8}.{0,8}") {
            let json = serde_json::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let body = &json[1..];
            if body.contains('\\') {
                prop_assert_eq!(unescape(body), Some((s, body.len())));
            }
        }

        /// Whatever a head holds, the fast reader agrees with serde or leaves it to serde.
        #[test]
        fn never_disagrees_with_serde(
            stream_id: u32,
            status: u16,
            method in "[A-Z\"\\\\]{0,8}",
            target in "\\PC{0,24}",
            pairs in prop::collection::vec(
                ("[a-zA-Z0-9 _-]{0,10}", prop::collection::vec(any::<u8>(), 0..12)), 0..6),
            end: bool,
        ) {
            let h = wire(&pairs);
            for text in [
                request_json(stream_id, &method, &target, &h, end),
                response_json(stream_id, status, &h, end),
            ] {
                if let Some(fast) = read(&text) {
                    prop_assert_eq!(Some(fast), serde(&text), "{}", text);
                }
            }
        }

        /// Heads of valid headers, escapes or not, are all taken by the fast reader.
        #[test]
        fn plain_heads_are_read_fast(
            stream_id: u32,
            status: u16,
            method in "[A-Z]{1,7}",
            target in "/[!-~]{0,20}",
            pairs in prop::collection::vec(
                ("[a-z][a-z0-9-]{0,9}", "[ -~\t\u{a0}-\u{2fff}]{0,12}"), 0..6),
            end: bool,
        ) {
            let pairs: Vec<(String, Vec<u8>)> =
                pairs.into_iter().map(|(n, v)| (n, v.into_bytes())).collect();
            let h = wire(&pairs);
            for text in [
                request_json(stream_id, &method, &target, &h, end),
                response_json(stream_id, status, &h, end),
            ] {
                let fast = read(&text);
                prop_assert!(fast.is_some(), "{}", text);
                prop_assert_eq!(fast, serde(&text), "{}", text);
            }
        }
    }
}
