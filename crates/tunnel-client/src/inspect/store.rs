//! The capture store: every entry the inspector keeps, bounded in bytes.
//!
//! One lock over everything, held only for a copy into or out of the store and never across
//! an `.await`: the tunnel's tasks append to it synchronously as bytes pass, so nothing here
//! can make them wait for a reader. Bounds:
//! - each body keeps at most `body_limit` bytes (the rest is counted, not kept, and the body
//!   records where it was cut);
//! - each WebSocket or SSE session keeps at most `body_limit` bytes of messages, dropping its
//!   oldest messages first (and counting them);
//! - all entries together stay under `budget` bytes (headers, kept bodies and messages, plus a
//!   fixed overhead per entry): the oldest entries are evicted first, even one still in flight
//!   (its later bytes then pass uncaptured).
//!
//! Changes are announced on a bounded broadcast channel: a subscriber that falls behind misses
//! events (and is told how many), the sender never waits.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::broadcast;

/// An entry's number, counting up from 1 for the life of the process.
pub type EntryId = u64;

/// Bytes counted for an entry besides its headers, bodies and messages.
const ENTRY_OVERHEAD: usize = 512;
/// Bytes counted per header or message besides its own bytes.
const ITEM_OVERHEAD: usize = 32;
/// Changes a subscriber may fall behind by before it misses some.
const EVENT_QUEUE: usize = 1024;

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
    fn new(headers: &HeaderMap) -> Self {
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

/// One captured exchange.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its number.
    pub id: EntryId,
    /// When the request reached the client.
    pub start: DateTime<Utc>,
    started: Instant,
    /// How long until the exchange ended; `None` while in flight.
    pub duration: Option<Duration>,
    /// The public client's address (the server's `X-Forwarded-For`), if known.
    pub remote_addr: Option<String>,
    /// The entry this one replays.
    pub replay_of: Option<EntryId>,
    /// The server's request id.
    pub request_id: Option<String>,
    /// What it carries.
    pub kind: Kind,
    /// The request.
    pub request: RequestRecord,
    /// The response, once its head came.
    pub response: Option<ResponseRecord>,
    /// The kept messages, oldest first.
    pub messages: VecDeque<Message>,
    /// Messages of this session that were dropped to stay under the limit.
    pub messages_dropped: u64,
    message_bytes: usize,
    /// Why the exchange failed, if it did.
    pub error: Option<String>,
    size: usize,
}

/// What begins an entry.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The request as sent to the local service (its body follows).
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Headers as sent.
    pub headers: HeaderMap,
    /// The public client's address.
    pub remote_addr: Option<String>,
    /// The server's request id.
    pub request_id: Option<String>,
    /// For a replay: the entry replayed.
    pub replay_of: Option<EntryId>,
    /// Whether the request has no body.
    pub empty_body: bool,
}

/// Which body of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request's.
    Request,
    /// The response's.
    Response,
}

/// A change subscribers hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new entry.
    Added(EntryId),
    /// An entry got its response head or ended.
    Updated(EntryId),
    /// An entry logged a message (its index).
    Message(EntryId, u64),
    /// Everything was deleted.
    Cleared,
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes.
    pub budget: usize,
    /// Bytes per body and per session's messages.
    pub body_limit: usize,
}

/// Counters of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Entries held.
    pub entries: usize,
    /// Bytes counted against the budget.
    pub bytes: usize,
    /// Entries evicted to stay under the budget.
    pub evicted: u64,
}

/// The capture store.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; ids are consecutive (only the oldest go, or all).
    entries: VecDeque<Entry>,
    used: usize,
    next_id: EntryId,
    evicted: u64,
}

impl Inner {
    fn index(&self, id: EntryId) -> Option<usize> {
        let first = self.entries.front()?.id;
        let i = usize::try_from(id.checked_sub(first)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    fn get_mut(&mut self, id: EntryId) -> Option<&mut Entry> {
        let i = self.index(id)?;
        self.entries.get_mut(i)
    }

    fn grow(&mut self, id: EntryId, by: usize) {
        if let Some(e) = self.get_mut(id) {
            e.size += by;
            self.used += by;
        }
    }

    fn evict(&mut self, budget: usize) {
        while self.used > budget {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.used -= old.size;
            self.evicted += 1;
        }
    }
}

fn headers_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + ITEM_OVERHEAD)
        .sum()
}

impl Store {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        let (changes, _) = broadcast::channel(EVENT_QUEUE);
        Self {
            limits,
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            changes,
        }
    }

    /// Its bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a half-updated counter; the capture
        // must go on (and never take the tunnel down with it).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn announce(&self, change: Change) {
        // No subscriber is not an error; a full queue drops the oldest for laggards.
        let _ = self.changes.send(change);
    }

    /// Hears about changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Starts an entry.
    pub fn begin(&self, new: NewEntry) -> EntryId {
        let size = ENTRY_OVERHEAD + headers_size(&new.headers) + new.target.len();
        let body = CapturedBody {
            complete: new.empty_body,
            ..CapturedBody::new(&new.headers)
        };
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            inner.entries.push_back(Entry {
                id,
                start: Utc::now(),
                started: Instant::now(),
                duration: None,
                remote_addr: new.remote_addr,
                replay_of: new.replay_of,
                request_id: new.request_id,
                kind: Kind::Http,
                request: RequestRecord {
                    method: new.method,
                    target: new.target,
                    headers: new.headers,
                    body,
                },
                response: None,
                messages: VecDeque::new(),
                messages_dropped: 0,
                message_bytes: 0,
                error: None,
                size,
            });
            inner.used += size;
            inner.evict(self.limits.budget);
            id
        };
        self.announce(Change::Added(id));
        id
    }

    /// Body bytes passed; the part under the body limit is copied into the entry.
    pub fn append(&self, id: EntryId, side: Side, data: &[u8]) {
        let limit = self.limits.body_limit;
        let mut inner = self.lock();
        let Some(entry) = inner.get_mut(id) else {
            return; // evicted or deleted: the bytes pass uncaptured
        };
        let body = match (side, entry.response.as_mut()) {
            (Side::Request, _) => &mut entry.request.body,
            (Side::Response, Some(r)) => &mut r.body,
            (Side::Response, None) => return,
        };
        body.seen += data.len() as u64;
        if body.expected.is_some_and(|n| body.seen >= n) {
            body.complete = true;
        }
        let take = data.len().min(limit - body.kept.min(limit));
        if take < data.len() {
            body.truncated_at.get_or_insert(limit);
        }
        if take == 0 {
            return;
        }
        body.chunks.push(Bytes::copy_from_slice(&data[..take]));
        body.kept += take;
        inner.grow(id, take);
        inner.evict(self.limits.budget);
    }

    /// A body's end passed.
    pub fn body_end(&self, id: EntryId, side: Side) {
        let mut inner = self.lock();
        if let Some(entry) = inner.get_mut(id) {
            match (side, entry.response.as_mut()) {
                (Side::Request, _) => entry.request.body.complete = true,
                (Side::Response, Some(r)) => r.body.complete = true,
                (Side::Response, None) => {}
            }
        }
    }

    /// The local service's response head.
    pub fn respond(&self, id: EntryId, status: StatusCode, headers: &HeaderMap, kind: Kind) {
        {
            let mut inner = self.lock();
            let Some(entry) = inner.get_mut(id) else {
                return;
            };
            let size = headers_size(headers);
            entry.kind = kind;
            entry.response = Some(ResponseRecord {
                status,
                headers: headers.clone(),
                body: CapturedBody::new(headers),
            });
            inner.grow(id, size);
            inner.evict(self.limits.budget);
        }
        self.announce(Change::Updated(id));
    }

    /// A WebSocket message or SSE event (its `index` is assigned here).
    pub fn message(&self, id: EntryId, mut message: Message) {
        let limit = self.limits.body_limit;
        let index = {
            let mut inner = self.lock();
            let Some(entry) = inner.get_mut(id) else {
                return;
            };
            message.index = entry
                .messages
                .back()
                .map_or(entry.messages_dropped, |m| m.index + 1);
            let index = message.index;
            let size = message.data.len() + ITEM_OVERHEAD;
            entry.message_bytes += size;
            entry.messages.push_back(message);
            let mut freed = 0;
            while entry.message_bytes > limit && entry.messages.len() > 1 {
                if let Some(old) = entry.messages.pop_front() {
                    let n = old.data.len() + ITEM_OVERHEAD;
                    entry.message_bytes -= n;
                    entry.messages_dropped += 1;
                    freed += n;
                }
            }
            entry.size -= freed;
            inner.used -= freed;
            inner.grow(id, size);
            inner.evict(self.limits.budget);
            index
        };
        self.announce(Change::Message(id, index));
    }

    /// The exchange ended (with `error` if it failed).
    pub fn finish(&self, id: EntryId, error: Option<String>) {
        {
            let mut inner = self.lock();
            let Some(entry) = inner.get_mut(id) else {
                return;
            };
            entry.duration = Some(entry.started.elapsed());
            if entry.error.is_none() {
                entry.error = error;
            }
        }
        self.announce(Change::Updated(id));
    }

    /// A copy of one entry (bodies and messages are shared, not copied).
    pub fn get(&self, id: EntryId) -> Option<Entry> {
        let inner = self.lock();
        inner.index(id).and_then(|i| inner.entries.get(i).cloned())
    }

    /// Copies of the newest entries, newest first, up to `limit` of those `keep` accepts.
    pub fn newest(&self, limit: usize, mut keep: impl FnMut(&Entry) -> bool) -> Vec<Entry> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Deletes every entry.
    pub fn clear(&self) {
        {
            let mut inner = self.lock();
            inner.entries.clear();
            inner.used = 0;
        }
        self.announce(Change::Cleared);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            entries: inner.entries.len(),
            bytes: inner.used,
            evicted: inner.evicted,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(budget: usize, body_limit: usize) -> Store {
        Store::new(Limits { budget, body_limit })
    }

    fn new_entry() -> NewEntry {
        NewEntry {
            method: Method::POST,
            target: "/hook".into(),
            headers: HeaderMap::new(),
            remote_addr: None,
            request_id: None,
            replay_of: None,
            empty_body: false,
        }
    }

    #[test]
    fn a_body_past_the_limit_keeps_its_start_and_says_where_it_was_cut() {
        let s = store(1 << 20, 10);
        let id = s.begin(new_entry());
        s.append(id, Side::Request, b"0123456");
        s.append(id, Side::Request, b"789abcdef");
        s.body_end(id, Side::Request);
        let e = s.get(id).unwrap();
        assert_eq!(&e.request.body.bytes()[..], b"0123456789");
        assert_eq!(e.request.body.seen, 16);
        assert_eq!(e.request.body.truncated_at, Some(10));
        assert!(e.request.body.complete && !e.request.body.is_whole());
    }

    #[test]
    fn the_oldest_entries_go_first_when_the_budget_is_full() {
        let s = store(3 * (ENTRY_OVERHEAD + 5 + 1000), 1000);
        let ids: Vec<_> = (0..5)
            .map(|_| {
                let id = s.begin(new_entry());
                s.append(id, Side::Request, &[7; 1000]);
                id
            })
            .collect();
        let stats = s.stats();
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.evicted, 2);
        assert!(stats.bytes <= 3 * (ENTRY_OVERHEAD + 5 + 1000));
        assert!(s.get(ids[0]).is_none() && s.get(ids[1]).is_none());
        let left: Vec<_> = s.newest(10, |_| true).iter().map(|e| e.id).collect();
        assert_eq!(left, vec![ids[4], ids[3], ids[2]]);
        // Bytes for an evicted entry pass uncaptured.
        s.append(ids[0], Side::Request, b"late");
        assert_eq!(s.stats().entries, 3);
    }

    #[test]
    fn a_session_drops_its_oldest_messages_past_the_limit() {
        let s = store(1 << 20, 3 * (100 + ITEM_OVERHEAD));
        let id = s.begin(new_entry());
        for i in 0..5u8 {
            s.message(
                id,
                Message {
                    index: 0,
                    direction: Direction::In,
                    at: Utc::now(),
                    kind: MessageKind::Binary,
                    size: 100,
                    data: Bytes::from(vec![i; 100]),
                    truncated: false,
                    compressed: false,
                    event: None,
                },
            );
        }
        let e = s.get(id).unwrap();
        assert_eq!(e.messages_dropped, 2);
        let idx: Vec<_> = e.messages.iter().map(|m| m.index).collect();
        assert_eq!(idx, vec![2, 3, 4]);
        assert_eq!(e.messages[0].data[0], 2);
    }

    #[tokio::test]
    async fn subscribers_hear_changes_and_clear_empties_the_store() {
        let s = store(1 << 20, 1 << 10);
        let mut rx = s.subscribe();
        let id = s.begin(new_entry());
        s.respond(id, StatusCode::OK, &HeaderMap::new(), Kind::Http);
        s.finish(id, None);
        s.clear();
        assert_eq!(rx.recv().await.unwrap(), Change::Added(id));
        assert_eq!(rx.recv().await.unwrap(), Change::Updated(id));
        assert_eq!(rx.recv().await.unwrap(), Change::Updated(id));
        assert_eq!(rx.recv().await.unwrap(), Change::Cleared);
        assert_eq!(s.stats().entries, 0);
        assert_eq!(s.stats().bytes, 0);
        // Ids keep counting after a clear.
        assert!(s.begin(new_entry()) > id);
    }
}
