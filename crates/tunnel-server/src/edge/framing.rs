//! A guard in front of hyper that sees each request head as raw bytes.
//!
//! hyper handles a request carrying both `Content-Length` and `Transfer-Encoding` the way
//! RFC 9112 allows — it drops `Content-Length`, reads the body as chunked and closes the
//! connection afterwards — but it drops the header before we see the request, so we could not
//! refuse it. Such requests are the raw material of request smuggling (front and back proxies
//! disagreeing on where a body ends), and we refuse them outright.
//!
//! [`FramingGuard`] wraps a connection's read side. It holds each request head back until it
//! is complete (bounded by the head size limit), scans its header lines, and if it finds both
//! headers it inserts a marker header that [`crate::limits::check_framing`] turns into a
//! `400` with `Connection: close`. To find the next head on a keep-alive connection it follows
//! the body framing as hyper will (chunked wins, else `Content-Length`, else none). After an
//! upgrade request, or anything it cannot follow, it steps aside and passes bytes through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header the guard adds to a head with both `Content-Length` and `Transfer-Encoding`, several
/// `Content-Length` lines, or a `Transfer-Encoding` other than exactly `chunked` (tabs
/// included).
pub const MARKER: &str = "x-tunnel-ambiguous-framing";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of this many more bytes.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not looking any more (upgrade, or something hyper will refuse anyway).
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size (`digits` so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to CR.
    Ext {
        size: u64,
    },
    /// Expecting LF after the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// Trailer section; a CRLF at a line start ends the message.
    Trailer {
        line_start: bool,
        saw_cr: bool,
    },
}

/// Wraps a public connection; see the module docs.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    io: IO,
    state: State,
    /// Read from `io`, not yet inspected.
    inbox: BytesMut,
    /// Inspected, ready for hyper.
    outbox: BytesMut,
    max_head: usize,
    eof: bool,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`; heads longer than `max_head` are passed through for hyper to refuse.
    pub fn new(io: IO, max_head: usize) -> Self {
        Self {
            io,
            state: State::Head,
            inbox: BytesMut::new(),
            outbox: BytesMut::new(),
            max_head,
            eof: false,
        }
    }

    /// How many of `bytes` belong to the current body; advances the state (to `Head` when
    /// the body ends inside `bytes`).
    fn advance_body(&mut self, bytes: &[u8]) -> usize {
        let mut used = 0;
        while used < bytes.len() {
            match self.state {
                State::Head => return used,
                State::Passthrough => return bytes.len(),
                State::Fixed(n) => {
                    let take = n.min((bytes.len() - used) as u64);
                    used += take as usize;
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Fixed(n - take)
                    };
                }
                State::Chunked(c) => {
                    let (n, next) = chunk_step(c, &bytes[used..]);
                    used += n;
                    self.state = next;
                }
            }
        }
        used
    }

    /// Moves what can be inspected from `inbox` to `outbox`.
    fn process(&mut self) {
        loop {
            if self.inbox.is_empty() {
                return;
            }
            match self.state {
                State::Head => {
                    let Some(end) = find_head_end(&self.inbox) else {
                        if self.inbox.len() > self.max_head || self.eof {
                            // hyper answers 431 (or sees a truncated head): step aside.
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    };
                    let head = self.inbox.split_to(end);
                    let (head, next) = check_head(&head);
                    self.outbox.extend_from_slice(&head);
                    self.state = next;
                }
                _ => {
                    let inbox = std::mem::take(&mut self.inbox);
                    let n = self.advance_body(&inbox);
                    self.outbox.extend_from_slice(&inbox[..n]);
                    self.inbox.extend_from_slice(&inbox[n..]);
                }
            }
        }
    }
}

/// One step of the chunked-body parser over `bytes`: how many it consumed and the next state.
fn chunk_step(c: Chunk, bytes: &[u8]) -> (usize, State) {
    let b = bytes[0];
    let next = match c {
        Chunk::Data(n) => {
            let take = n.min(bytes.len() as u64);
            let next = if take == n {
                Chunk::DataCr
            } else {
                Chunk::Data(n - take)
            };
            return (take as usize, State::Chunked(next));
        }
        Chunk::Size { size, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < 15 => Chunk::Size {
                size: size * 16 + u64::from(d),
                digits: digits + 1,
            },
            _ if digits == 0 => return (1, State::Passthrough),
            _ if b == b'\r' => Chunk::SizeLf { size },
            _ if b == b';' || b == b' ' || b == b'\t' => Chunk::Ext { size },
            _ => return (1, State::Passthrough),
        },
        Chunk::Ext { size } if b == b'\r' => Chunk::SizeLf { size },
        Chunk::Ext { size } => Chunk::Ext { size },
        Chunk::SizeLf { size: 0 } if b == b'\n' => Chunk::Trailer {
            line_start: true,
            saw_cr: false,
        },
        Chunk::SizeLf { size } if b == b'\n' => Chunk::Data(size),
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0 },
        Chunk::SizeLf { .. } | Chunk::DataCr | Chunk::DataLf => return (1, State::Passthrough),
        Chunk::Trailer { line_start, saw_cr } => match (b, saw_cr) {
            (b'\r', false) => Chunk::Trailer {
                line_start,
                saw_cr: true,
            },
            (b'\n', true) if line_start => return (1, State::Head),
            (b'\n', true) => Chunk::Trailer {
                line_start: true,
                saw_cr: false,
            },
            _ => Chunk::Trailer {
                line_start: false,
                saw_cr: false,
            },
        },
    };
    (1, State::Chunked(next))
}

/// Checks a complete head; returns it (marked if ambiguous) and the framing of its body.
fn check_head(head: &[u8]) -> (BytesMut, State) {
    let mut cl_lines = 0;
    let mut cl: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(last coding is chunked)
    let mut upgrade = false;
    let mut odd_te = false;
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next().is_some_and(|l| l.starts_with(b"CONNECT ")) {
        upgrade = true;
    }
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            cl_lines += 1;
            cl = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // hyper trims tabs around values; a tab here is a known smuggling variant.
            let raw = &line[colon + 1..];
            let spaces_only = raw
                .strip_prefix(b" ")
                .unwrap_or(raw)
                .strip_suffix(b" ")
                .unwrap_or(raw.strip_prefix(b" ").unwrap_or(raw));
            if !spaces_only.eq_ignore_ascii_case(b"chunked") {
                odd_te = true;
            }
            let last_chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"));
            te = Some(last_chunked);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    let has_cl = cl_lines > 0;
    let mut out = BytesMut::from(head);
    // hyper silently drops a Content-Length next to Transfer-Encoding, and merges repeated
    // equal ones, so these two cases must be caught here.
    if (has_cl && te.is_some()) || cl_lines > 1 || odd_te {
        // Insert the marker before the blank line that ends the head; hyper answers 400
        // and closes, so the body need not be followed.
        let tail = out.split_off(head.len() - 2);
        out.extend_from_slice(format!("{MARKER}: 1\r\n").as_bytes());
        out.unsplit(tail);
        return (out, State::Passthrough);
    }
    let next = match (upgrade, te, has_cl, cl) {
        (true, ..) => State::Passthrough,
        (_, Some(true), ..) => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
        (_, Some(false), ..) => State::Passthrough, // hyper refuses it
        (_, None, true, Some(0)) | (_, None, false, _) => State::Head,
        (_, None, true, Some(n)) => State::Fixed(n),
        (_, None, true, None) => State::Passthrough, // hyper refuses it
    };
    (out, next)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
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
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.inbox.is_empty() && this.state != State::Head {
                // Fast path for bodies: read straight into hyper's buffer, then take back
                // whatever lies past the end of this body (a pipelined head).
                let before = buf.filled().len();
                match Pin::new(&mut this.io).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        let len = buf.filled().len() - before;
                        if len == 0 {
                            this.eof = true;
                            return Poll::Ready(Ok(()));
                        }
                        let body = this.advance_body(&buf.filled()[before..]);
                        if body < len {
                            this.inbox.extend_from_slice(&buf.filled()[before + body..]);
                            buf.set_filled(before + body);
                            if body == 0 {
                                continue;
                            }
                        }
                        return Poll::Ready(Ok(()));
                    }
                    other => return other,
                }
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.inbox.extend_from_slice(rb.filled());
                    }
                }
                other => return other,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Feeds `input` in pieces of `step` bytes and returns what hyper would read.
    async fn through(input: &[u8], step: usize) -> Vec<u8> {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let input = input.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(step) {
                tx.write_all(piece).await.expect("write");
            }
        });
        let mut guard = FramingGuard::new(rx, 64 * 1024);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn clean_requests_pass_unchanged() {
        let stream: &[u8] =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /d HTTP/1.1\r\n\r\n";
        for step in [1, 3, 7, 64, 4096] {
            assert_eq!(through(stream, step).await, stream, "step {step}");
        }
    }

    #[tokio::test]
    async fn ambiguous_heads_are_marked_wherever_they_are() {
        let bad: &[u8] = b"GET /ok HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in [1, 5, 4096] {
            let out = through(bad, step).await;
            let text = String::from_utf8_lossy(&out);
            assert_eq!(text.matches(MARKER).count(), 1, "step {step}: {text}");
            assert!(
                text.find(MARKER) > text.find("POST /x"),
                "marked the wrong head"
            );
        }
        // A body that merely contains such lines is not a head.
        let body: &[u8] = b"POST /x HTTP/1.1\r\nContent-Length: 50\r\n\r\n\
Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = &body[..body.len()];
        let out = through(body, 2).await;
        assert!(!String::from_utf8_lossy(&out).contains(MARKER));
    }
}
