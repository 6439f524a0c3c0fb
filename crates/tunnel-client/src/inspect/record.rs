//! What a captured exchange is made of: the request and response records, their kept bodies,
//! and the WebSocket messages or SSE events of a session. Plain data; the store
//! ([`super::store`]) decides where it lives and how much of it is kept.

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// An entry's number, counting up from 1 for the life of the process.
pub type EntryId = u64;

/// Bytes counted per header or message besides its own bytes.
pub const ITEM_OVERHEAD: usize = 32;

/// Which way a WebSocket message or an SSE event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the public client to the local service.
    In,
    /// From the local service to the public client.
    Out,
}

/// What a logged message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A WebSocket text message.
    Text,
    /// A WebSocket binary message.
    Binary,
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// A WebSocket close frame.
    Close,
    /// One server-sent event.
    Event,
}

/// One WebSocket message or SSE event of an entry.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its position in the session, from 0 (kept across dropped messages).
    pub index: u64,
    /// Which way it went.
    pub direction: Direction,
    /// When it was complete.
    pub at: DateTime<Utc>,
    /// What it is.
    pub kind: MessageKind,
    /// Its full payload size.
    pub size: u64,
    /// The payload, or its first part when `truncated`.
    pub data: Bytes,
    /// Whether `data` is only the first part.
    pub truncated: bool,
    /// permessage-deflate: `data` is compressed.
    pub compressed: bool,
    /// An SSE event's `event:` name.
    pub event: Option<String>,
}

/// The kept part of a body.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    chunks: Vec<Bytes>,
    /// Bytes kept.
    pub kept: usize,
    /// Bytes that passed, kept or not.
    pub seen: u64,
    /// Set when bytes past this many were not kept.
    pub truncated_at: Option<usize>,
    /// Whether the body's end passed.
    pub complete: bool,
    /// Its `Content-Length`: the end has passed once that many bytes have (a client that
    /// knows the length stops reading there, without polling for an end).
    expected: Option<u64>,
}

impl CapturedBody {
    /// An empty capture of the body that `headers` announce.
    pub fn new(headers: &HeaderMap) -> Self {
        let expected = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Self {
            complete: expected == Some(0),
            expected,
            ..Self::default()
        }
    }

    /// Body bytes passed: keeps what fits under `limit`; the bytes newly kept.
    pub fn take(&mut self, data: &[u8], limit: usize) -> usize {
        self.seen += data.len() as u64;
        if self.expected.is_some_and(|n| self.seen >= n) {
            self.complete = true;
        }
        let take = data.len().min(limit - self.kept.min(limit));
        if take < data.len() {
            self.truncated_at.get_or_insert(limit);
        }
        if take > 0 {
            self.chunks.push(Bytes::copy_from_slice(&data[..take]));
            self.kept += take;
        }
        take
    }

    /// The kept bytes in one piece.
    pub fn bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => many.concat().into(),
        }
    }

    /// Whether the whole body was kept (so that it can be replayed as it was).
    pub fn is_whole(&self) -> bool {
        self.complete && self.truncated_at.is_none()
    }
}

/// The request as it was sent to the local service.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Headers, as sent (Host already rewritten).
    pub headers: HeaderMap,
    /// Body.
    pub body: CapturedBody,
}

/// The local service's response.
#[derive(Debug, Clone)]
pub struct ResponseRecord {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: CapturedBody,
}

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A request and its response.
    Http,
    /// A WebSocket session (after `101`): messages both ways.
    WebSocket,
    /// A `text/event-stream` response: its events.
    Sse,
}

/// Bytes counted for `headers` against the budget.
pub fn headers_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + ITEM_OVERHEAD)
        .sum()
}

/// A copy of `headers` that owns its bytes: the values copied into one new buffer of their
/// size. A plain clone would share each value's bytes with the buffer it was parsed from (for
/// a response, a slice of the connection's read buffer), and an entry kept for minutes would
/// hold that whole buffer: measured with the default budget, 7 KiB resident per small
/// request where 1.1 KiB was counted, and the client's heap growing past the budget several
/// times over. Names are shared: standard ones are constants, others own their bytes.
pub fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let total = headers.iter().map(|(_, v)| v.len()).sum();
    let mut block = BytesMut::with_capacity(total);
    for (_, value) in headers {
        block.extend_from_slice(value.as_bytes());
    }
    let block = block.freeze();
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    for (name, value) in headers {
        let end = at + value.len();
        // The same bytes made a valid value before; a failure cannot happen, and would only
        // leave the header out of the capture.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(block.slice(at..end)) {
            copy.set_sensitive(value.is_sensitive());
            out.append(name.clone(), copy);
        }
        at = end;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn owned_headers_keep_every_value_in_order_in_one_buffer_of_their_own() {
        let parsed = Bytes::from_static(b"text/plain;aaa;bbb;secret");
        let mut h = HeaderMap::new();
        let value = |r: std::ops::Range<usize>| HeaderValue::from_maybe_shared(parsed.slice(r));
        h.append("content-type", value(0..10).unwrap());
        h.append("x-two", value(11..14).unwrap());
        h.append("x-two", value(15..18).unwrap());
        let mut secret = value(19..25).unwrap();
        secret.set_sensitive(true);
        h.append("authorization", secret);
        let copy = owned_headers(&h);
        assert_eq!(copy, h);
        let all: Vec<_> = copy.get_all("x-two").iter().collect();
        assert_eq!(all, ["aaa", "bbb"]);
        assert!(copy["authorization"].is_sensitive());
        // None of the copy points into the parsed buffer.
        let range = parsed.as_ptr() as usize..parsed.as_ptr() as usize + parsed.len();
        assert!(copy
            .values()
            .all(|v| !range.contains(&(v.as_bytes().as_ptr() as usize))));
    }
}
