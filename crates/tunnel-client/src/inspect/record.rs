//! What a captured exchange is made of: the request and response records (their heads
//! packed, [`PackedHead`]), their kept bodies, and the WebSocket messages or SSE events of a
//! session. Plain data; the store ([`super::store`]) decides where it lives and how much of it
//! is kept.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};

pub use super::head::PackedHead;

/// An entry's number, counting up from 1 for the life of the process.
pub type EntryId = u64;

/// Bytes counted per message besides its payload: the message itself, as the session's
/// queue holds it (its payload is one allocation of its own).
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Message>();

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

/// The kept part of a body. Its first chunk is held in place (most captured bodies are one
/// chunk: no list to allocate), later ones in a list.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    first: Bytes,
    rest: Vec<Bytes>,
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

/// A body's `Content-Length`, if `headers` give a valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| parse_length(v.as_bytes()))
}

/// A Content-Length value's number, read as [`content_length`] reads it: a value of visible
/// ASCII and tabs (what `HeaderValue::to_str` takes), trimmed, parsed whole.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl CapturedBody {
    /// An empty capture of a body of `expected` bytes, if known.
    pub fn new(expected: Option<u64>) -> Self {
        Self {
            complete: expected == Some(0),
            expected,
            ..Self::default()
        }
    }

    /// Body bytes passed: keeps what fits under `limit`; the bytes of memory this now holds
    /// more (the bytes kept, and its list's growth).
    pub fn take(&mut self, data: &[u8], limit: usize) -> usize {
        self.seen += data.len() as u64;
        if self.expected.is_some_and(|n| self.seen >= n) {
            self.complete = true;
        }
        let take = data.len().min(limit - self.kept.min(limit));
        if take < data.len() {
            self.truncated_at.get_or_insert(limit);
        }
        if take == 0 {
            return 0;
        }
        // Exactly `take` bytes, one allocation (a boxed slice: no spare capacity).
        let chunk = Bytes::copy_from_slice(&data[..take]);
        self.kept += take;
        if self.first.is_empty() {
            self.first = chunk;
            return take;
        }
        let before = self.rest.capacity();
        self.rest.push(chunk);
        take + (self.rest.capacity() - before) * std::mem::size_of::<Bytes>()
    }

    /// The kept bytes in one piece.
    pub fn bytes(&self) -> Bytes {
        if self.rest.is_empty() {
            return self.first.clone();
        }
        let mut all = Vec::with_capacity(self.kept);
        for chunk in std::iter::once(&self.first).chain(&self.rest) {
            all.extend_from_slice(chunk);
        }
        all.into()
    }

    /// Whether the whole body was kept (so that it can be replayed as it was).
    pub fn is_whole(&self) -> bool {
        self.complete && self.truncated_at.is_none()
    }
}

/// The request as it was sent to the local service.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Method, path and query, and headers as sent (Host already rewritten), packed.
    pub head: PackedHead,
    /// Body.
    pub body: CapturedBody,
}

/// The local service's response.
#[derive(Debug, Clone)]
pub struct ResponseRecord {
    /// Status and headers, packed.
    pub head: PackedHead,
    /// Body.
    pub body: CapturedBody,
}

impl ResponseRecord {
    /// Its status.
    pub fn status(&self) -> StatusCode {
        // A response's head always has one; 200 only if a request's were put here.
        self.head.status().unwrap_or_default()
    }
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

/// Bytes counted for a message against its session's limit and the budget: the message as
/// the queue holds it, its payload and its event name.
pub fn message_size(m: &Message) -> usize {
    ITEM_OVERHEAD + m.data.len() + m.event.as_ref().map_or(0, String::len)
}
