//! The hook into forwarding: a [`Capture`] per exchange, and tees that copy what passes into
//! the store without ever holding a byte back.
//!
//! A tee wraps a body ([`TeeBody`]) or an upgraded connection ([`TeeIo`]) and, each time bytes
//! pass through it, appends a copy synchronously (no channel, no task, no await: the copy is
//! cut at the body limit, so a tee costs at most one bounded memcpy per chunk). What the
//! forwarding code polls, it gets unchanged and at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::observe::{FrameObserver, Seen, SseObserver};
use super::record::{content_length, parse_length};
use super::store::{Direction, EntryId, Kind, Message, NewEntry, PackedHead, Side, Slot, Store};

/// The store and the entry of one exchange, shared by its capture and its tees (one
/// reference count per exchange, instead of one per tee on the store's own).
#[derive(Debug)]
struct Tap {
    store: Arc<Store>,
    slot: Arc<Slot>,
}

/// The capture of one exchange; dropping it ends the entry (its duration is then known).
#[derive(Debug)]
pub struct Capture {
    tap: Arc<Tap>,
    error: Option<String>,
}

impl Capture {
    /// Starts an entry for a request about to be sent to the local service.
    pub(super) fn begin(store: Arc<Store>, new: NewEntry) -> Self {
        let slot = store.begin(new);
        Self {
            tap: Arc::new(Tap { store, slot }),
            error: None,
        }
    }

    /// The entry's number.
    pub fn id(&self) -> EntryId {
        self.tap.slot.id()
    }

    /// What starts the entry of `method target` with `headers` as sent to the local service
    /// (which also carry the server's `X-Forwarded-For` and `X-Request-Id`): the head packed
    /// in one buffer, on the tunnel's path; it is decoded only if someone looks.
    pub(super) fn new_entry(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        empty_body: bool,
    ) -> NewEntry {
        NewEntry {
            head: PackedHead::request(method, target, headers),
            content_length: content_length(headers),
            replay_of: None,
            empty_body,
        }
    }

    /// [`Capture::new_entry`] of a request whose headers are `(name, value)` pairs in order
    /// (names lowercase), as written to the local service from a tunnel head.
    pub(super) fn new_entry_pairs<'a, I>(
        method: &Method,
        target: &str,
        headers: I,
        empty_body: bool,
    ) -> NewEntry
    where
        I: Iterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        let content_length = headers
            .clone()
            .find(|(n, _)| *n == http::header::CONTENT_LENGTH.as_str())
            .and_then(|(_, v)| parse_length(v));
        NewEntry {
            head: PackedHead::request_pairs(method, target, headers),
            content_length,
            replay_of: None,
            empty_body,
        }
    }

    /// The local service's response head.
    pub fn response(&self, status: StatusCode, headers: &HeaderMap) {
        let kind = if status == StatusCode::SWITCHING_PROTOCOLS {
            Kind::WebSocket
        } else if is_event_stream(headers) {
            Kind::Sse
        } else {
            Kind::Http
        };
        self.tap
            .store
            .respond(&self.tap.slot, status, headers, kind);
    }

    /// The local service's response head, with no body after it.
    pub fn empty_response(&self, status: StatusCode, headers: &HeaderMap) {
        self.response(status, headers);
        self.tap.store.body_end(&self.tap.slot, Side::Response);
    }

    /// Why the exchange failed (shown with the entry).
    pub fn fail(&mut self, why: impl Into<String>) {
        self.error = Some(why.into());
    }

    /// Tees the request body.
    pub fn tee_request<B>(&self, body: B) -> TeeBody<B> {
        TeeBody::new(self.tap.clone(), Side::Request, body, None)
    }

    /// Tees the response body (and follows its events if it is an event stream).
    pub fn tee_response<B>(&self, body: B, headers: &HeaderMap) -> TeeBody<B> {
        let sse =
            is_event_stream(headers).then(|| SseObserver::new(self.tap.store.limits().body_limit));
        TeeBody::new(self.tap.clone(), Side::Response, body, sse)
    }

    /// Tees an upgraded (WebSocket) connection to the local service: what is written to it
    /// came from the public client, what is read from it goes there.
    pub fn tee_upgraded<IO>(&self, io: IO) -> TeeIo<IO> {
        let cap = self.tap.store.limits().body_limit;
        TeeIo {
            io,
            tap: self.tap.clone(),
            inbound: FrameObserver::new(cap),
            outbound: FrameObserver::new(cap),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.tap.store.finish(&self.tap.slot, self.error.take());
    }
}

/// Whether the `Content-Type` is `text/event-stream`, compared in place: this runs twice for
/// every response, and a lowercased copy was two allocations per request.
fn is_event_stream(headers: &HeaderMap) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii_start()
            .get(..SSE.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(SSE))
    })
}

fn log(tap: &Tap, direction: Direction, seen: Seen) {
    tap.store.message(
        &tap.slot,
        Message {
            index: 0,
            direction,
            at: Utc::now(),
            kind: seen.kind,
            size: seen.size,
            data: seen.data,
            truncated: seen.truncated,
            compressed: seen.compressed,
            event: seen.event,
        },
    );
}

/// A body that copies its data into the store as it is polled.
#[derive(Debug)]
pub struct TeeBody<B> {
    inner: B,
    tap: Arc<Tap>,
    side: Side,
    sse: Option<SseObserver>,
    /// The end was recorded (once is enough).
    ended: bool,
}

impl<B> TeeBody<B> {
    fn new(tap: Arc<Tap>, side: Side, inner: B, sse: Option<SseObserver>) -> Self {
        Self {
            inner,
            tap,
            side,
            sse,
            ended: false,
        }
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.tap.store.body_end(&self.tap.slot, self.side);
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let tap = &*this.tap;
                if let Some(data) = f.data_ref() {
                    tap.store.append(&tap.slot, this.side, data);
                    if let Some(sse) = this.sse.as_mut() {
                        sse.feed(data, &mut |s| log(tap, Direction::Out, s));
                    }
                }
                if this.inner.is_end_stream() {
                    this.end();
                }
            }
            None => this.end(),
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upgraded connection whose WebSocket frames are logged both ways as they pass.
#[derive(Debug)]
pub struct TeeIo<IO> {
    io: IO,
    tap: Arc<Tap>,
    inbound: FrameObserver,
    outbound: FrameObserver,
}

impl<IO: AsyncRead + Unpin> AsyncRead for TeeIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let tap = &*this.tap;
        this.outbound.feed(&buf.filled()[before..], &mut |s| {
            log(tap, Direction::Out, s)
        });
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TeeIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        let tap = &*this.tap;
        this.inbound
            .feed(&buf[..n], &mut |s| log(tap, Direction::In, s));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
