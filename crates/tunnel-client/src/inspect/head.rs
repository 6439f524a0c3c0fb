//! A captured request or response head, packed: [`PackedHead`].
//!
//! # Why packed
//! The inspector captures every request, and almost none of them is ever looked at. A
//! `HeaderMap` copy costs several allocations (its index, its entries, a buffer of values) and
//! about 100 bytes per header before the bytes themselves; measured with the default budget
//! full, the client held about twice what the budget counted. A packed head is one exact-size
//! buffer, built straight from the parts that go to the local service, and decoded (into the
//! JSON shapes, or a `HeaderMap` for a replay) only when a page or the API asks for it.
//!
//! # Layout
//! One buffer of length-prefixed fields (lengths as LEB128 varints, so that a short field
//! costs one byte of prefix): for a request its method and target, then for each header its
//! name and its value, the value's length shifted left by one with the low bit saying whether
//! the value is sensitive. A response's status is kept beside the buffer.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// One captured head: method and target (a request) or status (a response), and the headers
/// in their order, in one allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedHead {
    /// A response's status; `None` for a request.
    status: Option<StatusCode>,
    /// How many headers.
    count: u32,
    /// The fields (see the module's doc).
    buf: Box<[u8]>,
}

/// One header of a packed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Its name, lowercase as `http` keeps it.
    pub name: &'a str,
    /// Its value's bytes (not necessarily UTF-8).
    pub value: &'a [u8],
    /// Whether it was marked sensitive (kept for a replay's copy).
    pub sensitive: bool,
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Bytes of `headers` packed, besides a request's method and target.
fn headers_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| {
            let (n, v) = (n.as_str().len(), v.len());
            varint_len(n) + n + varint_len(v << 1) + v
        })
        .sum()
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn pack(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        put_field(out, name.as_str().as_bytes());
        put_varint(out, (value.len() << 1) | usize::from(value.is_sensitive()));
        out.extend_from_slice(value.as_bytes());
    }
}

impl PackedHead {
    /// A request's head: `method target` with `headers`, as sent to the local service.
    pub fn request(method: &Method, target: &str, headers: &HeaderMap) -> Self {
        let (m, t) = (method.as_str().as_bytes(), target.as_bytes());
        let len = varint_len(m.len()) + m.len() + varint_len(t.len()) + t.len();
        let mut out = Vec::with_capacity(len + headers_len(headers));
        put_field(&mut out, m);
        put_field(&mut out, t);
        pack(&mut out, headers);
        Self::finish(None, headers, out)
    }

    /// A request's head: `method target` with `headers` as `(name, value)` pairs in order
    /// (names lowercase), as written to the local service from a tunnel head: no header map
    /// is built for it (none is marked sensitive).
    pub fn request_pairs<'a, I>(method: &Method, target: &str, headers: I) -> Self
    where
        I: Iterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        let (m, t) = (method.as_str().as_bytes(), target.as_bytes());
        let mut len = varint_len(m.len()) + m.len() + varint_len(t.len()) + t.len();
        let mut count = 0usize;
        for (n, v) in headers.clone() {
            len += varint_len(n.len()) + n.len() + varint_len(v.len() << 1) + v.len();
            count += 1;
        }
        let mut out = Vec::with_capacity(len);
        put_field(&mut out, m);
        put_field(&mut out, t);
        for (name, value) in headers {
            put_field(&mut out, name.as_bytes());
            put_varint(&mut out, value.len() << 1);
            out.extend_from_slice(value);
        }
        Self {
            status: None,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            // Its capacity was its length: no reallocation.
            buf: out.into_boxed_slice(),
        }
    }

    /// A response's head.
    pub fn response(status: StatusCode, headers: &HeaderMap) -> Self {
        let mut out = Vec::with_capacity(headers_len(headers));
        pack(&mut out, headers);
        Self::finish(Some(status), headers, out)
    }

    fn finish(status: Option<StatusCode>, headers: &HeaderMap, out: Vec<u8>) -> Self {
        Self {
            status,
            // `http` refuses a map of more than 32,768 entries.
            count: u32::try_from(headers.len()).unwrap_or(u32::MAX),
            // Its capacity was its length: no reallocation.
            buf: out.into_boxed_slice(),
        }
    }

    /// Bytes it holds outside itself: its buffer's (the store counts them against the
    /// budget; the head itself is part of its entry).
    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }

    /// How many headers.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it has no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A response's status.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// A request's method, as text (`""` for a response).
    pub fn method_str(&self) -> &str {
        self.start().map_or("", |(m, _, _)| m)
    }

    /// A request's method (`None` for a response).
    pub fn method(&self) -> Option<Method> {
        Method::from_bytes(self.start()?.0.as_bytes()).ok()
    }

    /// A request's path and query (`""` for a response).
    pub fn target(&self) -> &str {
        self.start().map_or("", |(_, t, _)| t)
    }

    /// A request's method and target, and where its headers start.
    fn start(&self) -> Option<(&str, &str, usize)> {
        if self.status.is_some() {
            return None;
        }
        let mut r = Reader::new(&self.buf);
        let method = std::str::from_utf8(r.field()?).ok()?;
        let target = std::str::from_utf8(r.field()?).ok()?;
        Some((method, target, r.at))
    }

    /// The headers in their order.
    pub fn iter(&self) -> Fields<'_> {
        let at = match self.status {
            Some(_) => 0,
            None => self.start().map_or(self.buf.len(), |(_, _, at)| at),
        };
        Fields {
            reader: Reader { buf: &self.buf, at },
        }
    }

    /// The first value of header `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// The headers as a `HeaderMap` again (for a replay).
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        for f in self.iter() {
            // The same bytes made a valid name and value when packed; a failure cannot
            // happen, and would only leave the header out of the copy.
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(f.name.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) else {
                continue;
            };
            value.set_sensitive(f.sensitive);
            map.append(name, value);
        }
        map
    }
}

impl std::fmt::Debug for PackedHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("PackedHead");
        match self.status {
            Some(s) => d.field("status", &s),
            None => d
                .field("method", &self.method_str())
                .field("target", &self.target()),
        };
        let headers: Vec<_> = self
            .iter()
            .map(|h| (h.name, String::from_utf8_lossy(h.value)))
            .collect();
        d.field("headers", &headers).finish()
    }
}

/// Reads a packed buffer's fields in order.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn varint(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let out = self.buf.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        self.bytes(len)
    }
}

/// The headers of a [`PackedHead`], in order.
pub struct Fields<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let r = &mut self.reader;
        if r.at >= r.buf.len() {
            return None;
        }
        let name = std::str::from_utf8(r.field()?).ok()?;
        let tagged = r.varint()?;
        let value = r.bytes(tagged >> 1)?;
        Some(Field {
            name,
            value,
            sensitive: tagged & 1 == 1,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(head: &PackedHead) -> Vec<(String, Vec<u8>)> {
        head.iter()
            .map(|f| (f.name.to_string(), f.value.to_vec()))
            .collect()
    }

    fn map_pairs(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        map.iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_request_head_round_trips_in_order_with_repeated_names() {
        let mut h = HeaderMap::new();
        h.append("host", HeaderValue::from_static("example.test"));
        h.append("x-two", HeaderValue::from_static("aaa"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        h.append("x-two", HeaderValue::from_static("bbb"));
        let mut secret = HeaderValue::from_static("Bearer s3cret");
        secret.set_sensitive(true);
        h.append("authorization", secret);
        let head = PackedHead::request(&Method::PATCH, "/a/b?c=d&e", &h);
        let listed: Vec<(&str, &[u8])> =
            h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let from_pairs =
            PackedHead::request_pairs(&Method::PATCH, "/a/b?c=d&e", listed.into_iter());
        if !h.values().any(HeaderValue::is_sensitive) {
            assert_eq!(from_pairs, head);
        }
        assert_eq!(head.method(), Some(Method::PATCH));
        assert_eq!(head.method_str(), "PATCH");
        assert_eq!(head.target(), "/a/b?c=d&e");
        assert_eq!(head.status(), None);
        assert_eq!(head.len(), 5);
        assert_eq!(pairs(&head), map_pairs(&h));
        assert_eq!(head.get("x-two"), Some(&b"aaa"[..]));
        assert_eq!(head.get("content-type"), Some(&b"application/json"[..]));
        assert_eq!(head.get("x-missing"), None);
        let back = head.header_map();
        assert_eq!(back, h);
        assert!(back["authorization"].is_sensitive());
        assert!(!back["host"].is_sensitive());
        // One buffer of exactly the packed bytes: each field and its one-byte length.
        let fields: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 2).sum();
        assert_eq!(head.heap_size(), 5 + 10 + 2 + fields);
    }

    #[test]
    fn an_extension_method_and_a_response_status() {
        let method = Method::from_bytes(b"PURGE-ALL").unwrap();
        let head = PackedHead::request(&method, "/", &HeaderMap::new());
        assert_eq!(head.method(), Some(method));
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from(12));
        let resp = PackedHead::response(StatusCode::IM_A_TEAPOT, &h);
        assert_eq!(resp.status(), Some(StatusCode::IM_A_TEAPOT));
        assert_eq!(resp.method(), None);
        assert_eq!((resp.method_str(), resp.target()), ("", ""));
        assert_eq!(resp.get("content-length"), Some(&b"12"[..]));
    }

    #[test]
    fn odd_bytes_and_non_utf8_values_come_back_as_they_were() {
        let odd: &[&[u8]] = &[
            b"a\tb \"quoted\" ;,=\\",
            b"\xff\xfe\x80 latin-1 caf\xe9",
            b"",
            b"  padded  ",
        ];
        let mut h = HeaderMap::new();
        for v in odd {
            h.append("x-odd", HeaderValue::from_bytes(v).unwrap());
        }
        let head = PackedHead::response(StatusCode::OK, &h);
        let values: Vec<&[u8]> = head.iter().map(|f| f.value).collect();
        assert_eq!(values, odd);
        assert_eq!(head.header_map(), h);
    }

    #[test]
    fn many_headers_and_long_values_need_longer_length_prefixes() {
        let mut h = HeaderMap::new();
        let long = "v".repeat(70_000);
        for i in 0..300 {
            let value = if i % 100 == 7 {
                long.clone()
            } else {
                format!("{i}")
            };
            h.append(
                HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        let target = format!("/{}", "p".repeat(200));
        let head = PackedHead::request(&Method::GET, &target, &h);
        assert_eq!(head.len(), 300);
        assert_eq!(head.target(), target);
        assert_eq!(pairs(&head), map_pairs(&h));
        assert_eq!(head.get("x-header-107").map(<[u8]>::len), Some(70_000));
        assert_eq!(head.get("x-header-299"), Some(&b"299"[..]));
        assert_eq!(head.header_map(), h);
    }

    #[test]
    fn empty_heads() {
        let req = PackedHead::request(&Method::GET, "", &HeaderMap::new());
        assert!(req.is_empty());
        assert_eq!((req.method_str(), req.target()), ("GET", ""));
        assert_eq!(req.iter().count(), 0);
        let resp = PackedHead::response(StatusCode::NO_CONTENT, &HeaderMap::new());
        assert!(resp.is_empty() && resp.buf.is_empty());
        assert_eq!(resp.iter().count(), 0);
        assert!(resp.header_map().is_empty());
    }

    #[test]
    fn varints_of_every_width() {
        for n in [0, 1, 127, 128, 16_383, 16_384, usize::MAX >> 1] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            assert_eq!(Reader::new(&out).varint(), Some(n));
        }
    }
}
