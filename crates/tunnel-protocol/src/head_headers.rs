//! The headers of a request or response head as decoded: checked and packed into one buffer
//! in the same pass as the JSON is read (see [`HeadHeaders`]).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderValue};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::headers::{
    decode_b64, known_name, names_websocket, truncate, ValueRef, WireHeaders, WireValue,
    EXPECTED_HEADERS,
};
use crate::ProtocolError;

/// The headers of a request or response head as they arrive: checked and packed into one
/// buffer while the JSON is read, in their order, with [`HeadHeaders::iter`] to walk them and
/// [`HeadHeaders::into_header_map`] for the end that hands them to hyper (the server).
///
/// Packed rather than built into an [`HeaderMap`]: the client only walks the request's
/// headers once, to write them to the local service (and once more into the inspector's own
/// packed copy), and a map cost a `HeaderValue` and a hash per header for that, about 4,300
/// instructions of a small request plus its drop (callgrind). Names are lowercased and checked
/// to be tokens and values checked as [`HeaderValue`] checks them when packed, so that a head
/// accepted here is exactly one [`HeaderMap`] would accept; building the map afterwards costs
/// what building it while reading did (its values share the packed buffer).
///
/// A list with an entry HTTP does not allow is not a violation of the protocol by itself (the
/// end that uses the head answers `502` or refuses the request), so such a list is kept as it
/// came and [`HeadHeaders::into_header_map`] reports what is wrong with it.
///
/// On the wire this is the same `[[name, value], …]` list as [`WireHeaders`].
#[derive(Debug, Clone, Default)]
pub struct HeadHeaders(Parsed);

#[derive(Debug, Clone)]
enum Parsed {
    /// A valid list, packed.
    Packed(Packed),
    /// A list with an entry that is not a valid header, as it came.
    Invalid(WireHeaders),
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed::Packed(Packed::default())
    }
}

/// Two lists are equal when they hold the same entries in the same order and are both valid
/// or both not, however they are held.
impl PartialEq for HeadHeaders {
    fn eq(&self, other: &Self) -> bool {
        self.is_valid() == other.is_valid()
            && self.len() == other.len()
            && self.iter().eq(other.iter())
    }
}

impl Eq for HeadHeaders {}

/// A map's entries packed (a head built to be sent, in tests): a map holds only valid ones.
impl From<HeaderMap> for HeadHeaders {
    fn from(map: HeaderMap) -> Self {
        let entries: Vec<_> = map
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        match Packed::of(entries.into_iter()) {
            Some(packed) => Self(Parsed::Packed(packed)),
            // Not reached: every entry of a map is a valid header.
            None => Self(Parsed::Invalid(WireHeaders::from_header_map(&map))),
        }
    }
}

/// A list as a peer could send it: packed when every entry is valid, kept as it is otherwise
/// (as decoding does).
impl From<WireHeaders> for HeadHeaders {
    fn from(list: WireHeaders) -> Self {
        let entries = list.0.iter().map(|(n, v)| (n.as_str(), v.0.as_slice()));
        match Packed::of(entries) {
            Some(packed) => Self(Parsed::Packed(packed)),
            None => Self(Parsed::Invalid(list)),
        }
    }
}

impl HeadHeaders {
    /// The header map, or why the peer's list is not one (an invalid name or value).
    pub fn into_header_map(self) -> Result<HeaderMap, ProtocolError> {
        match self.0 {
            Parsed::Packed(packed) => packed.into_header_map(),
            Parsed::Invalid(list) => list.to_header_map(),
        }
    }

    /// Whether every entry is a valid header (a list that is not stays as it came).
    pub fn is_valid(&self) -> bool {
        !matches!(self.0, Parsed::Invalid(_))
    }

    /// The entries in their order, names lowercase, if every one is valid: what
    /// [`HeadHeaders::into_header_map`] would build a map of, without building it; else the
    /// error `into_header_map` gives (the first invalid name or value).
    pub fn valid_iter(&self) -> Result<Iter<'_>, ProtocolError> {
        match &self.0 {
            Parsed::Packed(_) => Ok(self.iter()),
            Parsed::Invalid(list) => Err(match list.to_header_map() {
                Err(e) => e,
                // Not reached: a list is kept unpacked only when `http` refuses it too (the
                // tests hold the two rules side by side).
                Ok(_) => ProtocolError::InvalidHeaderName(String::new()),
            }),
        }
    }

    /// Every entry's name and value, in order: lowercase and valid in a valid list, as they
    /// came in one that is not.
    pub fn iter(&self) -> Iter<'_> {
        Iter(match &self.0 {
            Parsed::Packed(p) => IterInner::Packed(p.iter()),
            Parsed::Invalid(list) => IterInner::List(list.0.iter()),
        })
    }

    /// The first value of `name` (lower case), in a valid list or an invalid one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match &self.0 {
            Parsed::Packed(p) => p.iter().find(|(n, _)| *n == name).map(|(_, v)| v),
            Parsed::Invalid(list) => list
                .0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.0.as_slice()),
        }
    }

    /// Whether these headers ask for (in a request) or agree to (in a `101`) a switch to
    /// WebSocket. See [`crate::headers::upgrades_to_websocket`].
    pub fn upgrades_to_websocket(&self) -> bool {
        match &self.0 {
            Parsed::Packed(p) => p.iter().any(|(n, v)| n == "upgrade" && names_websocket(v)),
            Parsed::Invalid(list) => list.upgrades_to_websocket(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.0 {
            Parsed::Packed(p) => p.count,
            Parsed::Invalid(list) => list.len(),
        }
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every entry's name and value, in order.
    pub(crate) fn each(&self, mut f: impl FnMut(&str, &[u8])) {
        for (name, value) in self.iter() {
            f(name, value);
        }
    }
}

/// The entries of a [`HeadHeaders`], in order: `(name, value)`.
#[derive(Debug, Clone)]
pub struct Iter<'a>(IterInner<'a>);

#[derive(Debug, Clone)]
enum IterInner<'a> {
    Packed(PackedIter<'a>),
    List(std::slice::Iter<'a, (String, WireValue)>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterInner::Packed(p) => p.next(),
            IterInner::List(l) => l.next().map(|(n, v)| (n.as_str(), v.0.as_slice())),
        }
    }
}

/// Valid headers in two buffers: the names (lowercase) one after another in a `String`, so
/// that walking them needs no UTF-8 check (they are ASCII tokens), and for each entry its
/// name's length and its value's length (four bytes each, little-endian) then the value's
/// bytes. Two allocations for a whole head, where a map took an index, its entries and the
/// values' buffer.
#[derive(Debug, Clone, Default)]
struct Packed {
    names: String,
    values: Vec<u8>,
    count: usize,
}

/// The length prefix of one entry.
const PREFIX: usize = 8;

/// Longest name `http` takes (its `MAX_HEADER_NAME_LEN`).
const MAX_NAME: usize = (1 << 16) - 1;

/// Builds valid [`HeadHeaders`], checking each entry as it is added (the fast reader packs
/// the text's slices as it reads them).
pub(crate) struct Packer(Packed);

impl Packer {
    /// A packer whose buffers take `names` and `values` bytes at once.
    pub(crate) fn with_capacity(names: usize, values: usize) -> Self {
        Self(Packed {
            names: String::with_capacity(names),
            values: Vec::with_capacity(values),
            count: 0,
        })
    }

    /// Adds one entry; `None` (and the packer is to be dropped) if it is not a valid header:
    /// a name of 1 to 65,535 token characters, a value without control bytes other than
    /// HTAB (no CR, LF, NUL or DEL), as `http`'s `HeaderName::from_bytes` and
    /// `HeaderValue::from_bytes` decide.
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) -> Option<()> {
        let p = &mut self.0;
        if name.is_empty() || name.len() > MAX_NAME {
            return None;
        }
        // Folds without early exit, which the compiler vectorises (as the client's writer).
        // Names as the server writes them (hyper's: lowercase letters, digits, `-`) take the
        // first test only; the table and lowercasing are for any other.
        let plain = name.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'-'))
        });
        if !plain && name.bytes().any(|b| !TOKEN[usize::from(b)]) {
            return None;
        }
        if value.iter().fold(false, |bad, &b| {
            bad | ((b < b' ' && b != b'\t') || b == 0x7f)
        }) {
            return None;
        }
        let value_len = u32::try_from(value.len()).ok()?;
        let start = p.names.len();
        p.names.push_str(name);
        if !plain {
            p.names[start..].make_ascii_lowercase();
        }
        // `name.len()` fits in 16 bits (checked above).
        let (n, v) = ((name.len() as u32).to_le_bytes(), value_len.to_le_bytes());
        p.values
            .extend_from_slice(&[n[0], n[1], n[2], n[3], v[0], v[1], v[2], v[3]]);
        p.values.extend_from_slice(value);
        p.count += 1;
        Some(())
    }

    /// The headers packed.
    pub(crate) fn into_headers(self) -> HeadHeaders {
        HeadHeaders(Parsed::Packed(self.0))
    }
}

impl Packed {
    /// `entries` packed, if every one is valid.
    fn of<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8])> + Clone) -> Option<Self> {
        let (names, values) = entries.clone().fold((0, 0), |(n, v), (name, value)| {
            (n + name.len(), v + PREFIX + value.len())
        });
        let mut packer = Packer::with_capacity(names, values);
        for (name, value) in entries {
            packer.push(name, value)?;
        }
        Some(packer.0)
    }

    fn iter(&self) -> PackedIter<'_> {
        PackedIter {
            names: &self.names,
            values: &self.values,
            name_at: 0,
            at: 0,
        }
    }

    /// The map of these headers. Every entry was checked when packed, so this fails only if
    /// `http` changed its rules; its values share one `Bytes` (the values' buffer), as
    /// building the map while reading did.
    fn into_header_map(self) -> Result<HeaderMap, ProtocolError> {
        let mut map = HeaderMap::with_capacity(self.count);
        let values = bytes::Bytes::from(self.values);
        let mut at = (0, 0);
        while let Some((name, value, next)) = entry(&self.names, &values, at) {
            let name = match known_name(name) {
                Some(known) => known,
                None => http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ProtocolError::InvalidHeaderName(truncate(name)))?,
            };
            let value = HeaderValue::from_maybe_shared(values.slice(value))
                .map_err(|_| ProtocolError::InvalidHeaderValue(name.as_str().to_owned()))?;
            map.append(name, value);
            at = next;
        }
        Ok(map)
    }
}

/// The entry whose name starts at `at.0` in `names` and whose prefix starts at `at.1` in
/// `values`: its name, the range of its value in `values`, and where the next one starts;
/// `None` at the end.
#[inline]
fn entry<'a>(
    names: &'a str,
    values: &[u8],
    (name_at, at): (usize, usize),
) -> Option<(&'a str, std::ops::Range<usize>, (usize, usize))> {
    let prefix: [u8; PREFIX] = values.get(at..at + PREFIX)?.try_into().ok()?;
    let [n0, n1, n2, n3, v0, v1, v2, v3] = prefix;
    let name_len = u32::from_le_bytes([n0, n1, n2, n3]) as usize;
    let value_len = u32::from_le_bytes([v0, v1, v2, v3]) as usize;
    let name_end = name_at + name_len;
    let name = names.get(name_at..name_end)?;
    let value_at = at + PREFIX;
    let end = value_at + value_len;
    Some((name, value_at..end, (name_end, end)))
}

/// The entries of a [`Packed`].
#[derive(Debug, Clone)]
struct PackedIter<'a> {
    names: &'a str,
    values: &'a [u8],
    name_at: usize,
    at: usize,
}

impl<'a> Iterator for PackedIter<'a> {
    type Item = (&'a str, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (name, value, (name_at, at)) = entry(self.names, self.values, (self.name_at, self.at))?;
        let value = self.values.get(value)?;
        self.name_at = name_at;
        self.at = at;
        Some((name, value))
    }
}

/// The token characters of a header name (RFC 9110 §5.6.2): the bytes `http`'s own table
/// takes, so that a name packed is one `HeaderName` takes.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

impl Serialize for HeadHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        let mut result = Ok(());
        self.each(|name, value| {
            if result.is_ok() {
                result = seq.serialize_element(&(name, ValueRef(value)));
            }
        });
        result?;
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HeadHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = HeadHeaders;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of [name, value] pairs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeadHeaders, A::Error> {
                let mut list: Vec<(Text<'de>, Bytes<'de>)> = Vec::with_capacity(EXPECTED_HEADERS);
                while let Some(Entry(name, value)) = seq.next_element()? {
                    list.push((name, value));
                }
                let entries = list.iter().map(|(name, value)| (&*name.0, &*value.0));
                Ok(match Packed::of(entries) {
                    Some(packed) => HeadHeaders(Parsed::Packed(packed)),
                    None => HeadHeaders(Parsed::Invalid(WireHeaders(
                        list.into_iter()
                            .map(|(name, value)| {
                                (name.0.into_owned(), WireValue(value.0.into_owned()))
                            })
                            .collect(),
                    ))),
                })
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

/// A string of the input, borrowed when it has no escapes.
struct Text<'de>(Cow<'de, str>);
/// A header value's bytes: a string of the input (borrowed when it has no escapes) or a
/// `{"b64": …}` object, decoded.
struct Bytes<'de>(Cow<'de, [u8]>);
/// One `[name, value]` entry.
struct Entry<'de>(Text<'de>, Bytes<'de>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a header name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Bytes<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Bytes<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a header value: a string or {"b64": "…"}"#)
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Bytes<'de>, E> {
                Ok(Bytes(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes<'de>, E> {
                Ok(Bytes(Cow::Owned(v.as_bytes().to_vec())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Bytes<'de>, E> {
                Ok(Bytes(Cow::Owned(v.into_bytes())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Bytes<'de>, A::Error> {
                decode_b64(map).map(|v| Bytes(Cow::Owned(v)))
            }
        }
        d.deserialize_any(BytesVisitor)
    }
}

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = Entry<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [name, value] pair")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Entry<'de>, A::Error> {
                let name = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let value = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(Entry(name, value))
            }
        }
        d.deserialize_tuple(2, EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> HeadHeaders {
        serde_json::from_str(json).expect("a list")
    }

    #[test]
    fn a_valid_list_decodes_to_the_map_the_list_builds() {
        let json = r#"[["Content-Type","text/plain"],["set-cookie","a=1"],["x-bin",{"b64":"gP4g"}],
            ["set-cookie","b\"=2"],["x-forwarded-for","1.2.3.4"],["x-empty",""]]"#;
        let list: WireHeaders = serde_json::from_str(json).expect("a list");
        let expected = list.to_header_map().expect("valid");
        let headers = decode(json);
        assert!(headers.is_valid());
        // In the list's order (a map groups repeated names), names lowercased.
        let pairs: Vec<_> = headers.iter().collect();
        let listed: Vec<(String, &[u8])> = list
            .0
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.0.as_slice()))
            .collect();
        assert!(pairs.iter().map(|&(n, v)| (n.to_owned(), v)).eq(listed));
        assert_eq!(pairs[0], ("content-type", &b"text/plain"[..]));
        assert_eq!(headers.len(), 6);
        assert_eq!(headers.get("set-cookie"), Some(&b"a=1"[..]));
        let cookies: Vec<_> = expected.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b\"=2"]);
        assert_eq!(headers.clone().into_header_map().expect("valid"), expected);
        assert_eq!(HeadHeaders::from(list), headers);
    }

    #[test]
    fn an_invalid_list_is_kept_and_refused_when_used() {
        for json in [
            r#"[["ok","1"],["bad name","v"]]"#,
            r#"[["x-a","line\r\nx-injected: 1"]]"#,
            r#"[["x-a",{"b64":"AA=="}]]"#,
        ] {
            let headers = decode(json);
            assert!(!headers.is_valid(), "{json}");
            assert!(headers.valid_iter().is_err(), "{json}");
            assert!(headers.clone().into_header_map().is_err(), "{json}");
            // Written back as it came.
            let list: WireHeaders = serde_json::from_str(json).expect("a list");
            assert_eq!(
                serde_json::to_string(&headers).expect("ok"),
                serde_json::to_string(&list).expect("ok")
            );
            assert_eq!(HeadHeaders::from(list), headers);
        }
        assert_eq!(
            decode(r#"[["Bad Name","v"]]"#).get("bad name"),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn malformed_lists_are_errors() {
        for bad in [
            r#"[["a"]]"#,
            r#"[["a","b","c"]]"#,
            r#"[["a",5]]"#,
            r#"[["a",{"b64":"!!"}]]"#,
            r#"[["a",{"x":"1"}]]"#,
            r#"{"a":"b"}"#,
            r#"[[1,"b"]]"#,
        ] {
            assert!(serde_json::from_str::<HeadHeaders>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_map_is_written_as_its_list() {
        let mut map = HeaderMap::new();
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.append(
            "x-raw",
            HeaderValue::from_bytes(&[0x80, b'z']).expect("obs-text"),
        );
        let ours = serde_json::to_string(&HeadHeaders::from(map.clone())).expect("ok");
        let list = serde_json::to_string(&WireHeaders::from_header_map(&map)).expect("ok");
        assert_eq!(ours, list);
        assert!(decode("[]").is_empty());
        assert!(!HeadHeaders::from(map.clone()).upgrades_to_websocket());
        // A map and the same list packed are the same headers.
        assert_eq!(
            HeadHeaders::from(map),
            HeadHeaders::from(WireHeaders(vec![
                ("set-cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
                ("x-raw".into(), WireValue(vec![0x80, b'z'])),
            ]))
        );
    }

    #[test]
    fn an_upgrade_is_seen_in_a_packed_list() {
        assert!(decode(r#"[["Upgrade"," WebSocket"]]"#).upgrades_to_websocket());
        assert!(!decode(r#"[["upgrade","h2c"]]"#).upgrades_to_websocket());
    }

    proptest::proptest! {
        /// A list is packed exactly when `http` takes it as a map, in its order with names
        /// lowercased, and the map built from the packed list is the one `http` builds from
        /// the list itself.
        #[test]
        fn packing_accepts_what_a_header_map_accepts(
            pairs in proptest::collection::vec(
                (r"[a-zA-Z0-9 _:!~\-\x{e9}]{0,8}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..10)),
                0..6),
        ) {
            let list = WireHeaders(
                pairs.into_iter().map(|(n, v)| (n, WireValue(v))).collect(),
            );
            let headers = HeadHeaders::from(list.clone());
            match list.to_header_map() {
                Ok(map) => {
                    proptest::prop_assert!(headers.is_valid());
                    let ours: Vec<(String, Vec<u8>)> =
                        headers.iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
                    let theirs: Vec<(String, Vec<u8>)> = list
                        .0
                        .iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v.0.clone()))
                        .collect();
                    proptest::prop_assert_eq!(ours, theirs);
                    proptest::prop_assert_eq!(headers.into_header_map().ok(), Some(map));
                }
                Err(_) => proptest::prop_assert!(!headers.is_valid()),
            }
        }
    }
}
