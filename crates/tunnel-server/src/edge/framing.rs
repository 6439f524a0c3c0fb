//! A guard in front of hyper that reads every request of a connection as raw bytes.
//!
//! # Why
//! hyper is lenient where a front proxy may be strict, and normalises before we see the
//! request: it drops a `Content-Length` next to `Transfer-Encoding`, merges repeated equal
//! `Content-Length` lines, trims tabs around `chunked`, and (through httparse) accepts a bare
//! LF as a line end. Two parsers that frame the same bytes differently are the raw material of
//! request smuggling, so nothing we forward may depend on a leniency.
//!
//! # What it does
//! [`FramingGuard`] wraps a public connection's read side and follows **every** request of
//! the connection with a strict RFC 9112 reading, until the connection ends or really switches
//! protocols:
//! - each head is held back until it is complete, checking every line as it arrives: the
//!   request line, header field syntax, `Content-Length` and `Transfer-Encoding`;
//! - then its body is followed exactly as hyper will follow it (`chunked`, else
//!   `Content-Length`, else none), chunk-size lines included (any number of leading zeros; a
//!   size that does not fit in 64 bits is refused), to find where the next head starts;
//! - after a head that may switch protocols (an `Upgrade` header, or `CONNECT`) and its body,
//!   it waits until the service has answered that request (through the shared
//!   [`FramingLink`]): a `101` means the rest of the connection is the new protocol's and
//!   passes untouched; any other answer leaves the guard in charge.
//!
//! # Line ends (RFC 9112 §2.2)
//! A recipient *may* accept a bare LF as a line end; we do not. A bare LF or bare CR anywhere
//! in a head, a chunk line or a trailer is refused as soon as it is seen, without waiting for
//! the rest of the head. Refusing is the choice that needs no second parser to agree with:
//! whatever hyper or the local service would make of such a line, it never gets it.
//!
//! # How a refusal reaches the client
//! A refused head is replaced by a small synthetic head, and the refusal is recorded in the
//! [`FramingLink`] under that request's position on the connection. The service wrapper sees
//! it before routing and answers `400` (`bad_framing` for ambiguous framing,
//! `malformed_request` for broken syntax, `431 headers_too_large` for size) with
//! `Connection: close`, in order after any earlier pipelined responses; from then on nothing
//! more of the connection reaches hyper. A body that turns out malformed halfway ends with a
//! read error, and the proxy answers `400 bad_framing` if no response has started.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

mod body;
mod head;
mod link;
mod syntax;

use body::{chunked, BodyState};
use head::{HeadScan, Scan};
pub use link::{FramingLink, RequestSlot};
pub use syntax::{content_length, HeadLimits, Refusal};

/// The head a refused request is replaced with: hyper parses it and calls the service, which
/// finds the refusal in the [`FramingLink`].
const REFUSED_HEAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
/// Size of the reads the guard makes for itself.
const READ_CHUNK: usize = 8 * 1024;
/// Least spare room a read into `inbox` gets; below it a new block of [`READ_CHUNK`] is taken.
const MIN_READ: usize = 1024;

#[derive(Debug)]
enum State {
    /// Expecting, or inside, a request head.
    Head(HeadScan),
    /// Inside a body; `then` says what follows it.
    Body { body: BodyState, then: After },
    /// Waiting to learn whether request `n`'s answer switched protocols.
    Decision(u64),
    /// Switched protocols: bytes pass untouched.
    Upgraded,
    /// Refused: nothing more reaches hyper; input is read and dropped. `error` is returned to
    /// hyper once (a body that broke off).
    Refused { error: Option<Refusal> },
}

#[derive(Debug, Clone, Copy)]
enum After {
    Head,
    Decision(u64),
}

/// Wraps a public connection; see the module docs.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    io: IO,
    state: State,
    link: Arc<FramingLink>,
    /// Read from `io`, not yet inspected.
    inbox: BytesMut,
    /// Inspected, ready for hyper.
    outbox: BytesMut,
    limits: HeadLimits,
    /// Heads handed to hyper so far (the number of the last one).
    heads: u64,
    /// Extension and trailer bytes, and trailer fields, of the current chunked body.
    chunk_extra: usize,
    chunk_fields: usize,
    eof: bool,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`; `link` is shared with the service that serves the connection.
    pub fn new(io: IO, limits: HeadLimits, link: Arc<FramingLink>) -> Self {
        Self {
            io,
            state: State::Head(HeadScan::default()),
            link,
            inbox: BytesMut::new(),
            outbox: BytesMut::new(),
            limits,
            heads: 0,
            chunk_extra: 0,
            chunk_fields: 0,
            eof: false,
        }
    }

    /// Replaces the current head with the refusal head and stops passing input.
    fn refuse_head(&mut self, why: Refusal) {
        self.heads += 1;
        self.link.refuse(self.heads, why);
        self.inbox.clear();
        self.outbox.extend_from_slice(REFUSED_HEAD);
        self.state = State::Refused { error: None };
    }

    /// Ends the current body with an error for hyper.
    fn refuse_body(&mut self, why: Refusal) {
        self.link.refuse(self.heads, why);
        self.inbox.clear();
        self.state = State::Refused { error: Some(why) };
    }

    /// How many of `bytes` belong to the current body; advances the state past the body's end
    /// when it ends inside `bytes`.
    fn advance_body(&mut self, bytes: &[u8]) -> usize {
        let State::Body { body, then } = self.state else {
            return 0;
        };
        let (used, rest) = match body {
            BodyState::Fixed(n) => {
                let take = n.min(bytes.len() as u64);
                let rest = (take < n).then_some(BodyState::Fixed(n - take));
                (take as usize, rest)
            }
            BodyState::Chunked(c) => {
                let max_fields = self.limits.max_fields;
                match chunked(
                    c,
                    bytes,
                    &mut self.chunk_extra,
                    max_fields,
                    &mut self.chunk_fields,
                ) {
                    Ok((used, rest)) => (used, rest.map(BodyState::Chunked)),
                    Err(why) => {
                        self.refuse_body(why);
                        return 0;
                    }
                }
            }
        };
        self.state = match rest {
            Some(body) => State::Body { body, then },
            None => self.after(then),
        };
        used
    }

    fn after(&self, then: After) -> State {
        match then {
            After::Head => State::Head(HeadScan::default()),
            After::Decision(n) => State::Decision(n),
        }
    }

    /// Moves what can be inspected from `inbox` to `outbox`. Returns without progress when it
    /// needs more input or waits for a decision.
    fn process(&mut self) {
        loop {
            if self.heads > 0 && self.link.switched() == self.heads {
                // The answer to the last head switched protocols (possibly before its body
                // ended, as hyper allows): what follows is not HTTP.
                if !matches!(self.state, State::Refused { .. }) {
                    self.state = State::Upgraded;
                }
            }
            match &mut self.state {
                State::Refused { .. } => {
                    self.inbox.clear();
                    return;
                }
                State::Upgraded => {
                    let rest = self.inbox.split();
                    self.outbox.unsplit(rest);
                    return;
                }
                State::Decision(n) => match self.link.decision(*n) {
                    None => return,
                    Some(true) => self.state = State::Upgraded,
                    Some(false) => self.state = State::Head(HeadScan::default()),
                },
                State::Head(scan) => {
                    if self.inbox.is_empty() {
                        return;
                    }
                    match scan.scan(&self.inbox, self.limits) {
                        Scan::Partial => return,
                        Scan::Refuse(why) => self.refuse_head(why),
                        Scan::Complete { len } => {
                            let candidate = scan.may_switch();
                            let body = scan.body();
                            self.heads += 1;
                            let head = self.inbox.split_to(len);
                            self.outbox.unsplit(head);
                            let then = if candidate {
                                After::Decision(self.heads)
                            } else {
                                After::Head
                            };
                            self.chunk_extra = 0;
                            self.chunk_fields = 0;
                            self.state = match body {
                                Some(body) => State::Body { body, then },
                                None => self.after(then),
                            };
                        }
                    }
                }
                State::Body { .. } => {
                    if self.inbox.is_empty() {
                        return;
                    }
                    let inbox = self.inbox.split();
                    let n = self.advance_body(&inbox);
                    self.outbox.extend_from_slice(&inbox[..n]);
                    if !matches!(self.state, State::Refused { .. }) {
                        self.inbox.extend_from_slice(&inbox[n..]);
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> FramingGuard<IO> {
    /// Reads into `inbox`; `Ready(false)` at end of input.
    ///
    /// The bytes go straight into `inbox`'s spare room, which is never zeroed: a zeroed 8 KiB
    /// buffer on the stack for each read was a `memset` per read, 30% of the server's
    /// instructions per small request (callgrind). Heads are split off the front of one
    /// block, so a block serves many small requests before a new one is allocated.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.inbox.capacity() - self.inbox.len() < MIN_READ {
            self.inbox.reserve(READ_CHUNK);
        }
        match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.inbox) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(true)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads a body (or an upgraded stream) straight into hyper's buffer, taking back whatever
    /// lies past the end of the body (a pipelined head).
    fn read_direct(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let len = buf.filled().len() - before;
        if len == 0 {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        if matches!(self.state, State::Upgraded) {
            return Poll::Ready(Ok(()));
        }
        let body = self.advance_body(&buf.filled()[before..]);
        if body < len {
            if !matches!(self.state, State::Refused { .. }) {
                self.inbox.extend_from_slice(&buf.filled()[before + body..]);
            }
            buf.set_filled(before + body);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            // Nothing can be read into a full buffer; that is not end of input.
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.outbox.is_empty() {
                let n = this.outbox.len().min(buf.remaining());
                buf.put_slice(&this.outbox[..n]);
                this.outbox.advance(n);
                return Poll::Ready(Ok(()));
            }
            this.process();
            if !this.outbox.is_empty() {
                continue;
            }
            match &mut this.state {
                State::Refused { error } => {
                    if let Some(why) = error.take() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("refused request body: {why:?}"),
                        )));
                    }
                    // Drop whatever else arrives; end when the peer does.
                    if this.eof {
                        return Poll::Ready(Ok(()));
                    }
                    match this.fill(cx) {
                        Poll::Ready(Ok(true)) => continue,
                        Poll::Ready(Ok(false)) => {
                            this.eof = true;
                            return Poll::Ready(Ok(()));
                        }
                        other => return other.map_ok(|_| ()),
                    }
                }
                State::Decision(n) => {
                    let n = *n;
                    this.link.register(cx.waker());
                    if this.link.decision(n).is_none() {
                        // Nothing is read meanwhile: whether the next bytes are HTTP depends
                        // on the answer.
                        return Poll::Pending;
                    }
                    continue;
                }
                _ => {}
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.inbox.is_empty() && matches!(this.state, State::Body { .. } | State::Upgraded) {
                match this.read_direct(cx, buf) {
                    Poll::Ready(Ok(())) if buf.filled().is_empty() && !this.eof => continue,
                    other => return other,
                }
            }
            match this.fill(cx) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => this.eof = true,
                other => return other.map_ok(|_| ()),
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
