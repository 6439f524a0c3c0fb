//! The headers of a request or response head as decoded: built into an [`http::HeaderMap`]
//! in the same pass as the JSON is read (see [`HeadHeaders`]).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderValue};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::headers::{
    decode_b64, header_map, upgrades_to_websocket, ValueRef, WireHeaders, WireValue,
    EXPECTED_HEADERS,
};
use crate::ProtocolError;

/// The headers of a request or response head as they arrive: checked and built into an
/// [`HeaderMap`] while the JSON is read, which is what both ends hand to hyper.
///
/// Decoding into a [`WireHeaders`] list first and building the map from it afterwards cost
/// two allocations per header (an owned name and an owned value, dropped right after the
/// map was built); here names and values are read as slices of the message's text where
/// JSON allows it (no escapes) and copied once, into the map. A list with an entry HTTP does
/// not allow is not a violation of the protocol by itself (the end that uses the head
/// answers `502` or refuses the request), so such a list is kept as it came and
/// [`HeadHeaders::into_header_map`] reports what is wrong with it.
///
/// On the wire this is the same `[[name, value], …]` list as [`WireHeaders`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadHeaders(Parsed);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Map(HeaderMap),
    /// A list with an entry that is not a valid header, as it came.
    Invalid(WireHeaders),
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed::Map(HeaderMap::new())
    }
}

impl From<HeaderMap> for HeadHeaders {
    fn from(map: HeaderMap) -> Self {
        Self(Parsed::Map(map))
    }
}

/// A list as a peer could send it: built into a map when every entry is valid, kept as it is
/// otherwise (as decoding does).
impl From<WireHeaders> for HeadHeaders {
    fn from(list: WireHeaders) -> Self {
        match list.to_header_map() {
            Ok(map) => Self(Parsed::Map(map)),
            Err(_) => Self(Parsed::Invalid(list)),
        }
    }
}

impl HeadHeaders {
    /// The header map, or why the peer's list is not one (an invalid name or value).
    pub fn into_header_map(self) -> Result<HeaderMap, ProtocolError> {
        match self.0 {
            Parsed::Map(map) => Ok(map),
            Parsed::Invalid(list) => list.to_header_map(),
        }
    }

    /// The valid map, if the list was one.
    pub fn as_header_map(&self) -> Option<&HeaderMap> {
        match &self.0 {
            Parsed::Map(map) => Some(map),
            Parsed::Invalid(_) => None,
        }
    }

    /// The first value of `name` (lower case), in a valid list or an invalid one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match &self.0 {
            Parsed::Map(map) => map.get(name).map(HeaderValue::as_bytes),
            Parsed::Invalid(list) => list
                .0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.0.as_slice()),
        }
    }

    /// Whether these headers ask for (in a request) or agree to (in a `101`) a switch to
    /// WebSocket. See [`upgrades_to_websocket`].
    pub fn upgrades_to_websocket(&self) -> bool {
        match &self.0 {
            Parsed::Map(map) => upgrades_to_websocket(map),
            Parsed::Invalid(list) => list.upgrades_to_websocket(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.0 {
            Parsed::Map(map) => map.len(),
            Parsed::Invalid(list) => list.len(),
        }
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every entry's name and value, in order.
    pub(crate) fn each(&self, mut f: impl FnMut(&str, &[u8])) {
        match &self.0 {
            Parsed::Map(map) => {
                for (name, value) in map {
                    f(name.as_str(), value.as_bytes());
                }
            }
            Parsed::Invalid(list) => {
                for (name, value) in &list.0 {
                    f(name, &value.0);
                }
            }
        }
    }
}

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
                Ok(HeadHeaders(match header_map(entries) {
                    Ok(map) => Parsed::Map(map),
                    Err(_) => Parsed::Invalid(WireHeaders(
                        list.into_iter()
                            .map(|(name, value)| {
                                (name.0.into_owned(), WireValue(value.0.into_owned()))
                            })
                            .collect(),
                    )),
                }))
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
        assert_eq!(headers.as_header_map(), Some(&expected));
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
            assert!(headers.as_header_map().is_none(), "{json}");
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
        assert!(!HeadHeaders::from(map).upgrades_to_websocket());
    }
}
