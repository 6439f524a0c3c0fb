//! The capture store: every entry the inspector keeps, bounded in bytes.
//!
//! # Never in the tunnel's way
//! Each entry has a lock of its own ([`Slot`]), which only the exchange it captures and the
//! occasional reader take: the tunnel's tasks append to their own entries without meeting
//! each other. The store-wide lock is taken once per exchange, to add its entry at the end of
//! the list (and, when the budget is full, to evict the oldest), and held only for that push
//! or pop: entries are allocated before it and dropped after it. No lock is ever held across
//! an `.await`, and readers copy out of an entry under its own lock.
//!
//! # Bounds
//! - each body keeps at most `body_limit` bytes (the rest is counted, not kept, and the body
//!   records where it was cut);
//! - each WebSocket or SSE session keeps at most `body_limit` bytes of messages, dropping its
//!   oldest messages first (and counting them);
//! - all entries together stay under `budget` bytes, counted as they are held in memory (each
//!   entry's slot, its packed heads, its kept body chunks and messages, not estimates: with
//!   estimates the client held about twice its budget): the oldest entries are evicted first,
//!   even one still in flight (its later bytes then pass uncaptured). An eviction frees a
//!   little more than it must ([`headroom`]: 1/64 of the budget, at most 256 KiB), so that
//!   with a full budget the evicting happens once per few hundred requests, not on every one
//!   (the same work in all, O(1) per entry).
//!
//! Changes are announced on the [`Feed`]: free when no page listens, coalesced when one does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};

use super::feed::{Change, Feed, Subscription};
use super::record::{content_length, message_size};
pub use super::record::{
    CapturedBody, Direction, EntryId, Kind, Message, MessageKind, PackedHead, RequestRecord,
    ResponseRecord, ITEM_OVERHEAD,
};

/// Bytes counted for an entry besides what its heads, bodies and messages hold outside it: its
/// slot with the `Arc`'s two counts, and its place in the store's list.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Slot>() + 3 * std::mem::size_of::<usize>();
/// Entries copied out per turn of the store-wide lock while listing or searching.
const READ_CHUNK: usize = 64;

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
    /// The entry this one replays.
    pub replay_of: Option<EntryId>,
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

impl Entry {
    /// A reader's copy, numbered `id`.
    fn copy(&self, id: EntryId) -> Entry {
        Entry { id, ..self.clone() }
    }

    /// The public client's address (the first of the server's `X-Forwarded-For`), if known:
    /// read from the request's head when asked, not kept (two strings per request).
    pub fn remote_addr(&self) -> Option<&str> {
        self.header_text("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    }

    /// The server's request id (its `X-Request-Id`), read like [`Entry::remote_addr`].
    pub fn request_id(&self) -> Option<&str> {
        self.header_text("x-request-id")
    }

    fn header_text(&self, name: &str) -> Option<&str> {
        let value = self.request.head.get(name)?;
        std::str::from_utf8(value).ok()
    }

    fn body_mut(&mut self, side: Side) -> Option<&mut CapturedBody> {
        match (side, self.response.as_mut()) {
            (Side::Request, _) => Some(&mut self.request.body),
            (Side::Response, Some(r)) => Some(&mut r.body),
            (Side::Response, None) => None,
        }
    }
}

/// What begins an entry.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The request's head as sent to the local service (its body follows), with the
    /// server's `X-Forwarded-For` and `X-Request-Id`.
    pub head: PackedHead,
    /// Its `Content-Length`.
    pub content_length: Option<u64>,
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

/// What an eviction frees beyond the budget: 1/64 of it, at most 256 KiB (a few hundred
/// small requests), so that a full budget is not evicted from on every request.
pub fn headroom(budget: usize) -> usize {
    (budget / 64).min(256 << 10)
}

/// One entry and its own lock: the handle its exchange writes through.
#[derive(Debug)]
pub struct Slot {
    /// Set once (with the entry's `id`), under the store's lock, when the slot joins the
    /// list.
    id: AtomicU64,
    kept: Mutex<Kept>,
}

#[derive(Debug)]
struct Kept {
    entry: Entry,
    /// Evicted or deleted: later bytes pass uncaptured, and are not counted.
    gone: bool,
}

impl Slot {
    /// The entry's number.
    pub fn id(&self) -> EntryId {
        self.id.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding it leaves at worst a half-updated entry; the capture must go
        // on (and never take the tunnel down with it).
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the entry (bodies and messages are shared, not copied), unless it is gone.
    fn entry(&self) -> Option<Entry> {
        let kept = self.lock();
        (!kept.gone).then(|| kept.entry.copy(self.id()))
    }

    /// Takes the entry out of the budget: marks it gone and uncounts its bytes.
    fn remove(&self, used: &AtomicUsize) {
        let mut kept = self.lock();
        if !kept.gone {
            kept.gone = true;
            used.fetch_sub(kept.entry.size, Ordering::Relaxed);
        }
    }
}

/// The capture store.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    /// Bytes counted against the budget: the sum of the sizes of the entries not gone. An
    /// entry's bytes are added and subtracted only under that entry's lock, so that the
    /// subtraction of an evicted entry never comes before an addition it accounts for.
    used: AtomicUsize,
    inner: Mutex<Inner>,
    feed: Arc<Feed>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; ids are consecutive (only the oldest go, or all).
    entries: VecDeque<Arc<Slot>>,
    next_id: EntryId,
    evicted: u64,
}

impl Inner {
    fn index(&self, id: EntryId) -> Option<usize> {
        let first = self.entries.front()?.id();
        let i = usize::try_from(id.checked_sub(first)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    fn slot(&self, id: EntryId) -> Option<&Arc<Slot>> {
        self.entries.get(self.index(id)?)
    }
}

impl Store {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            used: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            feed: Arc::new(Feed::default()),
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

    /// Hears about changes from now on.
    pub fn subscribe(&self) -> Subscription {
        self.feed.subscribe()
    }

    /// Counts `by` more bytes for `kept`'s entry (call under its lock); whether the budget
    /// is now exceeded.
    fn grow(&self, kept: &mut Kept, by: usize) -> bool {
        kept.entry.size += by;
        self.used.fetch_add(by, Ordering::Relaxed) + by > self.limits.budget
    }

    /// Past the budget: the oldest entries go, down to the budget less its headroom. The
    /// evicted slots are returned, to be dropped once the lock is released.
    fn evict(&self, inner: &mut Inner) -> Vec<Arc<Slot>> {
        let budget = self.limits.budget;
        if self.used.load(Ordering::Relaxed) <= budget {
            return Vec::new();
        }
        let target = budget - headroom(budget);
        let mut victims = Vec::new();
        while self.used.load(Ordering::Relaxed) > target {
            let Some(old) = inner.entries.pop_front() else {
                break;
            };
            old.remove(&self.used);
            inner.evicted += 1;
            victims.push(old);
        }
        victims
    }

    /// Evicts what the budget needs (from outside the store's lock).
    fn make_room(&self) {
        let victims = self.evict(&mut self.lock());
        drop(victims);
    }

    /// Starts an entry; the returned slot is where its exchange writes.
    pub fn begin(&self, new: NewEntry) -> Arc<Slot> {
        let size = ENTRY_OVERHEAD + new.head.heap_size();
        let mut body = CapturedBody::new(new.content_length);
        body.complete = new.empty_body;
        // Allocated before the lock, numbered under it.
        let slot = Arc::new(Slot {
            id: AtomicU64::new(0),
            kept: Mutex::new(Kept {
                entry: Entry {
                    id: 0,
                    start: Utc::now(),
                    started: Instant::now(),
                    duration: None,
                    replay_of: new.replay_of,
                    kind: Kind::Http,
                    request: RequestRecord {
                        head: new.head,
                        body,
                    },
                    response: None,
                    messages: VecDeque::new(),
                    messages_dropped: 0,
                    message_bytes: 0,
                    error: None,
                    size,
                },
                gone: false,
            }),
        });
        let victims = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            slot.id.store(id, Ordering::Relaxed);
            // Its own lock, which nobody else can take yet: for what `keep` of `newest` sees.
            slot.lock().entry.id = id;
            // Not yet reachable by anyone else: counted without its lock.
            self.used.fetch_add(size, Ordering::Relaxed);
            inner.entries.push_back(slot.clone());
            self.evict(&mut inner)
        };
        drop(victims);
        self.feed.publish(Change::Added(slot.id()));
        slot
    }

    /// Body bytes passed; the part under the body limit is copied into the entry.
    pub fn append(&self, slot: &Slot, side: Side, data: &[u8]) {
        let over = {
            let mut kept = slot.lock();
            if kept.gone {
                return; // evicted or deleted: the bytes pass uncaptured
            }
            let Some(body) = kept.entry.body_mut(side) else {
                return;
            };
            let took = body.take(data, self.limits.body_limit);
            took > 0 && self.grow(&mut kept, took)
        };
        if over {
            self.make_room();
        }
    }

    /// A body's end passed.
    pub fn body_end(&self, slot: &Slot, side: Side) {
        if let Some(body) = slot.lock().entry.body_mut(side) {
            body.complete = true;
        }
    }

    /// The local service's response head.
    pub fn respond(&self, slot: &Slot, status: StatusCode, headers: &HeaderMap, kind: Kind) {
        let response = ResponseRecord {
            head: PackedHead::response(status, headers),
            body: CapturedBody::new(content_length(headers)),
        };
        let size = response.head.heap_size();
        let over = {
            let mut kept = slot.lock();
            if kept.gone {
                return;
            }
            kept.entry.kind = kind;
            kept.entry.response = Some(response);
            self.grow(&mut kept, size)
        };
        if over {
            self.make_room();
        }
        self.feed.publish(Change::Updated(slot.id()));
    }

    /// A WebSocket message or SSE event (its `index` is assigned here).
    pub fn message(&self, slot: &Slot, mut message: Message) {
        let limit = self.limits.body_limit;
        let (index, over) = {
            let mut kept = slot.lock();
            if kept.gone {
                return;
            }
            let entry = &mut kept.entry;
            message.index = entry
                .messages
                .back()
                .map_or(entry.messages_dropped, |m| m.index + 1);
            let index = message.index;
            let size = message_size(&message);
            entry.message_bytes += size;
            entry.messages.push_back(message);
            let mut freed = 0;
            while entry.message_bytes > limit && entry.messages.len() > 1 {
                if let Some(old) = entry.messages.pop_front() {
                    let n = message_size(&old);
                    entry.message_bytes -= n;
                    entry.messages_dropped += 1;
                    freed += n;
                }
            }
            entry.size = entry.size + size - freed;
            // Added before subtracted: `used` never goes below what the entries hold.
            self.used.fetch_add(size, Ordering::Relaxed);
            let now = self.used.fetch_sub(freed, Ordering::Relaxed) - freed;
            (index, now > self.limits.budget)
        };
        if over {
            self.make_room();
        }
        self.feed.publish(Change::Message(slot.id(), index));
    }

    /// The exchange ended (with `error` if it failed).
    pub fn finish(&self, slot: &Slot, error: Option<String>) {
        {
            let mut kept = slot.lock();
            if kept.gone {
                return;
            }
            let entry = &mut kept.entry;
            entry.duration = Some(entry.started.elapsed());
            if entry.error.is_none() {
                entry.error = error;
            }
        }
        self.feed.publish(Change::Updated(slot.id()));
    }

    fn slot(&self, id: EntryId) -> Option<Arc<Slot>> {
        self.lock().slot(id).cloned()
    }

    /// A copy of one entry (bodies and messages are shared, not copied).
    pub fn get(&self, id: EntryId) -> Option<Entry> {
        self.slot(id)?.entry()
    }

    /// A copy of one message of an entry.
    pub fn message_of(&self, id: EntryId, index: u64) -> Option<Message> {
        let slot = self.slot(id)?;
        let kept = slot.lock();
        if kept.gone {
            return None;
        }
        // Indexes are consecutive from the first kept one.
        let first = kept.entry.messages.front()?.index;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        kept.entry.messages.get(i).cloned()
    }

    /// Copies of the newest entries, newest first, up to `limit` of those `keep` accepts.
    /// The store-wide lock is taken per [`READ_CHUNK`] entries, so that a search through a
    /// full budget never keeps the tunnel's tasks from adding theirs.
    pub fn newest(&self, limit: usize, mut keep: impl FnMut(&Entry) -> bool) -> Vec<Entry> {
        let mut out = Vec::new();
        // Entries with ids below this one are left to look at.
        let mut below = EntryId::MAX;
        while out.len() < limit {
            let chunk: Vec<Arc<Slot>> = {
                let inner = self.lock();
                let end = match inner.index(below) {
                    Some(i) => i,
                    None if inner.entries.front().is_some_and(|f| f.id() >= below) => 0,
                    None => inner.entries.len(),
                };
                let start = end.saturating_sub(READ_CHUNK);
                inner.entries.range(start..end).rev().cloned().collect()
            };
            let Some(last) = chunk.last() else {
                break;
            };
            below = last.id();
            for slot in &chunk {
                let kept = slot.lock();
                if !kept.gone && keep(&kept.entry) {
                    out.push(kept.entry.copy(slot.id()));
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Deletes every entry.
    pub fn clear(&self) {
        let all = std::mem::take(&mut self.lock().entries);
        for slot in &all {
            slot.remove(&self.used);
        }
        drop(all);
        self.feed.publish(Change::Cleared);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            entries: inner.entries.len(),
            bytes: self.used.load(Ordering::Relaxed),
            evicted: inner.evicted,
        }
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::inspect::feed::Batch;

    fn store(budget: usize, body_limit: usize) -> Store {
        Store::new(Limits { budget, body_limit })
    }

    fn entry_with(headers: &HeaderMap) -> NewEntry {
        NewEntry {
            head: PackedHead::request(&http::Method::POST, "/hook", headers),
            content_length: None,
            replay_of: None,
            empty_body: false,
        }
    }

    fn new_entry() -> NewEntry {
        entry_with(&HeaderMap::new())
    }

    /// What an entry of [`new_entry`] counts before its bodies: its slot, and its head's
    /// buffer (`POST` and `/hook`, each after a one-byte length).
    const BASE: usize = ENTRY_OVERHEAD + 11;

    #[test]
    fn an_entry_counts_its_slot_and_its_packed_head() {
        assert_eq!(new_entry().head.heap_size(), 11);
        // An entry's slot stays small: the heads are packed outside it.
        const { assert!(ENTRY_OVERHEAD <= 512) };
        let s = store(1 << 20, 1 << 10);
        let slot = s.begin(new_entry());
        assert_eq!(s.stats().bytes, BASE);
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/plain".parse().unwrap());
        s.respond(&slot, StatusCode::OK, &h, Kind::Http);
        assert_eq!(s.stats().bytes, BASE + 1 + 12 + 1 + 10);
        // A second chunk of a body adds the list that holds it.
        s.append(&slot, Side::Response, b"one");
        s.append(&slot, Side::Response, b"two");
        let listed = s.stats().bytes - (BASE + 24 + 6);
        assert!(listed >= std::mem::size_of::<Bytes>(), "{listed}");
        assert_eq!(
            &s.get(slot.id()).unwrap().response.unwrap().body.bytes()[..],
            b"onetwo"
        );
    }

    #[test]
    fn a_body_past_the_limit_keeps_its_start_and_says_where_it_was_cut() {
        let s = store(1 << 20, 10);
        let slot = s.begin(new_entry());
        s.append(&slot, Side::Request, b"0123456");
        s.append(&slot, Side::Request, b"789abcdef");
        s.body_end(&slot, Side::Request);
        let e = s.get(slot.id()).unwrap();
        assert_eq!(&e.request.body.bytes()[..], b"0123456789");
        assert_eq!(e.request.body.seen, 16);
        assert_eq!(e.request.body.truncated_at, Some(10));
        assert!(e.request.body.complete && !e.request.body.is_whole());
    }

    #[test]
    fn the_oldest_entries_go_first_when_the_budget_is_full() {
        let s = store(3 * (BASE + 1000), 1000);
        let slots: Vec<_> = (0..5)
            .map(|_| {
                let slot = s.begin(new_entry());
                s.append(&slot, Side::Request, &[7; 1000]);
                slot
            })
            .collect();
        let ids: Vec<_> = slots.iter().map(|s| s.id()).collect();
        let stats = s.stats();
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.evicted, 2);
        assert!(stats.bytes <= 3 * (BASE + 1000));
        assert!(s.get(ids[0]).is_none() && s.get(ids[1]).is_none());
        let left: Vec<_> = s.newest(10, |_| true).iter().map(|e| e.id).collect();
        assert_eq!(left, vec![ids[4], ids[3], ids[2]]);
        // Bytes for an evicted entry pass uncaptured.
        s.append(&slots[0], Side::Request, b"late");
        assert_eq!(s.stats().entries, 3);
        assert_eq!(s.stats().bytes, 3 * (BASE + 1000));
    }

    #[test]
    fn a_session_drops_its_oldest_messages_past_the_limit() {
        let s = store(1 << 20, 3 * (100 + ITEM_OVERHEAD));
        let slot = s.begin(new_entry());
        let id = slot.id();
        for i in 0..5u8 {
            s.message(
                &slot,
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
        assert_eq!(s.message_of(id, 3).unwrap().data[0], 3);
        assert!(s.message_of(id, 1).is_none());
        assert_eq!(s.stats().bytes, BASE + 3 * (100 + ITEM_OVERHEAD));
    }

    #[test]
    fn subscribers_hear_changes_and_clear_empties_the_store() {
        let s = store(1 << 20, 1 << 10);
        let mut sub = s.subscribe();
        let slot = s.begin(new_entry());
        let id = slot.id();
        s.respond(&slot, StatusCode::OK, &HeaderMap::new(), Kind::Http);
        s.finish(&slot, None);
        s.clear();
        assert_eq!(
            sub.try_next(),
            Some(Batch::Changes(vec![
                Change::Added(id),
                Change::Updated(id),
                Change::Updated(id),
                Change::Cleared,
            ]))
        );
        assert_eq!(s.stats().entries, 0);
        assert_eq!(s.stats().bytes, 0);
        // Bytes of a deleted entry still in flight pass uncounted.
        s.append(&slot, Side::Request, b"late");
        assert_eq!(s.stats().bytes, 0);
        // Ids keep counting after a clear.
        assert!(s.begin(new_entry()).id() > id);
    }

    #[test]
    fn a_full_budget_evicts_in_batches_and_never_goes_over() {
        let budget = 64 << 10;
        let s = store(budget, 1 << 10);
        let mut evictions = 0;
        let mut last = 0;
        for _ in 0..2000 {
            let slot = s.begin(new_entry());
            s.append(&slot, Side::Request, &[1; 100]);
            s.respond(&slot, StatusCode::OK, &HeaderMap::new(), Kind::Http);
            s.append(&slot, Side::Response, &[2; 100]);
            s.finish(&slot, None);
            let stats = s.stats();
            assert!(stats.bytes <= budget, "{stats:?}");
            if stats.evicted != last {
                evictions += 1;
                last = stats.evicted;
            }
        }
        let stats = s.stats();
        let per_entry = BASE + 200;
        assert_eq!(stats.bytes, stats.entries * per_entry);
        assert_eq!(stats.evicted + stats.entries as u64, 2000);
        // Each eviction freed the headroom (1 KiB here: several entries), not one entry.
        assert!(
            stats.evicted >= 2 * evictions,
            "{} in {evictions}",
            stats.evicted
        );
        // The newest are kept, newest first, listed across several reading chunks.
        let ids: Vec<_> = s
            .newest(usize::MAX, |_| true)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), stats.entries);
        assert!(ids.windows(2).all(|w| w[0] == w[1] + 1));
        assert_eq!(ids[0], 2000);
        let odd: Vec<_> = s
            .newest(3, |e| e.id % 2 == 1)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(odd, vec![1999, 1997, 1995]);
    }

    #[test]
    fn copies_name_the_public_client_and_the_request_id_from_the_headers() {
        let s = store(1 << 20, 1 << 10);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        h.insert("x-request-id", "req-42".parse().unwrap());
        let slot = s.begin(entry_with(&h));
        for e in [s.get(slot.id()).unwrap(), s.newest(1, |_| true).remove(0)] {
            assert_eq!(e.remote_addr(), Some("203.0.113.7"));
            assert_eq!(e.request_id(), Some("req-42"));
        }
    }
}
