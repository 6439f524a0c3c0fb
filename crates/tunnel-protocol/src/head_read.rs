//! Request and response heads read back from the exact text [`crate::head_json`] writes,
//! without serde: the one control message of every request in each direction.
//!
//! serde_json reads a head field by field through its visitors (the message's `type` first,
//! then a map access per field, a sequence access per header and per entry): about 7,000 of
//! the 12,000 instructions a small request's head cost on the client (callgrind), the rest
//! being the header map itself. A head as our peer writes it has one fixed shape: the fields
//! in one order, no white space, numbers without signs or exponents. [`read`] takes exactly
//! that shape, and gives up (`None`) at the first byte outside it (an escape in a string, a
//! `{"b64": …}` value, another field order, a header list that is not a valid map, anything
//! unexpected); the caller then decodes the text with serde as before. So what a head means
//! never depends on which reader took it (the tests hold the two side by side), and a text
//! the fast reader does not take costs one failed scan more.

use crate::head_headers::HeadHeaders;
use crate::headers::{header_map, EXPECTED_HEADERS};
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
            method: method.to_owned(),
            target: target.to_owned(),
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

    /// A string without escapes or control characters (the text is UTF-8, and `"` ends the
    /// string at a character boundary).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let len = first_to_escape(self.rest());
        if self.rest().get(len) != Some(&b'"') {
            return None;
        }
        let s = self.text.get(self.at..self.at + len)?;
        self.at += len + 1;
        Some(s)
    }

    /// `,"headers":[[name,value],…],"end_stream":bool}` up to the end of the text.
    fn headers_and_end(&mut self) -> Option<(HeadHeaders, bool)> {
        self.expect(br#","headers":["#)?;
        let mut entries = Entries::default();
        if self.expect(b"]").is_none() {
            loop {
                self.expect(b"[")?;
                let name = self.string()?;
                self.expect(b",")?;
                let value = self.string()?;
                self.expect(b"]")?;
                entries.push((name, value.as_bytes()));
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
        // A list that is not a valid map is serde's to keep as it came (`HeadHeaders`).
        let map = header_map(entries.as_slice().iter().copied()).ok()?;
        Some((HeadHeaders::from(map), end_stream))
    }
}

/// The entries of a head as slices of its text: on the stack up to [`EXPECTED_HEADERS`], in
/// a `Vec` beyond (a `Vec` for every head was one allocation per request).
#[derive(Default)]
struct Entries<'a> {
    inline: [(&'a str, &'a [u8]); EXPECTED_HEADERS],
    len: usize,
    spill: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Entries<'a> {
    fn push(&mut self, entry: (&'a str, &'a [u8])) {
        if self.spill.is_empty() && self.len < EXPECTED_HEADERS {
            self.inline[self.len] = entry;
            self.len += 1;
            return;
        }
        if self.spill.is_empty() {
            self.spill.extend_from_slice(&self.inline[..self.len]);
        }
        self.spill.push(entry);
    }

    fn as_slice(&self) -> &[(&'a str, &'a [u8])] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
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
    fn other_shapes_are_left_to_serde() {
        let h = wire(&[
            ("x-esc".into(), b"a\"b".to_vec()),
            ("x-bin".into(), vec![0xff]),
        ]);
        for text in [
            request_json(1, "GET", "/", &h, false),
            request_json(1, "GET", "/\u{1}", &WireHeaders::default(), false),
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

        /// Heads without escapes, as almost every head is, are all taken by the fast reader.
        #[test]
        fn plain_heads_are_read_fast(
            stream_id: u32,
            status: u16,
            method in "[A-Z]{1,7}",
            target in "/[!#-\\[\\]-~]{0,20}",
            pairs in prop::collection::vec(
                ("[a-z][a-z0-9-]{0,9}", "[ !#-\\[\\]-~]{0,12}"), 0..6),
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
