//! The bodies of an exchange with the local service, moved by the forwarding task itself: the
//! request body written onto the connection ([`Sending`]), the response body read from it
//! ([`ResponseBody`], an [`http_body::Body`] for the stream's pump), and the connection after
//! a `101` ([`Upgraded`]).
//!
//! The response body drives what is left of the request body each time it is polled, so a
//! local service that streams its answer while it still reads the request (or answers before
//! reading all of it) is served as hyper's connection task served it, without that task.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tunnel_protocol::StreamError;

use super::chunked::{ChunkError, Decoder, Step};
use super::conn::{Conn, Pool};
use super::head::Upload;

/// Body type sent to the local service.
pub type LocalBody = BoxBody<Bytes, StreamError>;

/// Most body bytes read at once and handed on in one frame: a large body flows in pieces of
/// this size, whatever its length.
const READ_CHUNK: usize = 32 * 1024;

/// Reads what the connection has into the spare room of `buf` (reserving some first).
pub(super) fn poll_read(
    io: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<std::io::Result<usize>> {
    buf.reserve(room);
    loop {
        ready!(io.poll_read_ready(cx))?;
        match io.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Why the request body could not be sent whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The body from the tunnel failed (the public client went away, or the stream reset).
    #[error("request body from the tunnel failed: {0}")]
    Body(#[source] StreamError),
    /// More bytes than the head's Content-Length announced: not written, since the rest
    /// would be read as another request.
    #[error("request body longer than its content-length")]
    TooLong,
    /// Fewer bytes than the head's Content-Length announced.
    #[error("request body shorter than its content-length")]
    TooShort,
    /// Writing to the local service failed.
    #[error("sending the request body: {0}")]
    Write(#[source] std::io::Error),
}

/// A request body on its way to the local service, framed as the head announced.
pub(super) struct Sending {
    body: LocalBody,
    upload: Upload,
    /// Bytes taken from the body (with their chunk framing) not yet written.
    pending: VecDeque<Bytes>,
    /// The body ended and its end is queued.
    finished: bool,
    /// A frame (or the end) was taken from the body: the request can no longer be sent again.
    started: bool,
}

impl Sending {
    pub(super) fn new(body: LocalBody, upload: Upload) -> Self {
        Self {
            body,
            upload,
            pending: VecDeque::new(),
            finished: false,
            started: false,
        }
    }

    /// Whether part of the body was consumed (so the request cannot be retried).
    pub(super) fn started(&self) -> bool {
        self.started
    }

    /// Writes what the body has onto `io`; ready once the whole body (and its end) is out.
    pub(super) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut TcpStream,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while let Some(front) = self.pending.front_mut() {
                match ready!(Pin::new(&mut *io).poll_write(cx, front)) {
                    Ok(0) => {
                        return Poll::Ready(Err(SendError::Write(
                            std::io::ErrorKind::WriteZero.into(),
                        )))
                    }
                    Ok(n) => {
                        front.advance(n);
                        if front.is_empty() {
                            self.pending.pop_front();
                        }
                    }
                    Err(e) => return Poll::Ready(Err(SendError::Write(e))),
                }
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
            self.started = true;
            let data = match frame {
                None => {
                    match self.upload {
                        Upload::Length(left) if left > 0 => {
                            return Poll::Ready(Err(SendError::TooShort))
                        }
                        Upload::Chunked => self.pending.push_back(Bytes::from_static(b"0\r\n\r\n")),
                        Upload::Length(_) | Upload::None => {}
                    }
                    self.finished = true;
                    continue;
                }
                Some(Err(e)) => return Poll::Ready(Err(SendError::Body(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue, // trailers are not sent; empty chunks would end the body
                },
            };
            let len = data.len() as u64;
            match &mut self.upload {
                Upload::Length(left) if len <= *left => {
                    *left -= len;
                    self.pending.push_back(data);
                }
                Upload::Length(_) | Upload::None => return Poll::Ready(Err(SendError::TooLong)),
                Upload::Chunked => {
                    self.pending
                        .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                    self.pending.push_back(data);
                    self.pending.push_back(Bytes::from_static(b"\r\n"));
                }
            }
        }
    }
}

/// Why the response body broke off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Reading from the local service failed.
    #[error("reading the response body: {0}")]
    Read(#[source] std::io::Error),
    /// The connection closed before the Content-Length was complete.
    #[error("connection closed with {0} bytes of the response body missing")]
    Truncated(u64),
    /// The connection closed inside a chunked body.
    #[error("connection closed before the end of the chunked response body")]
    ChunkedTruncated,
    /// The chunked coding is malformed.
    #[error("malformed chunked response body: {0}")]
    Chunk(#[from] ChunkError),
    /// The request body, still being sent, failed.
    #[error(transparent)]
    Send(SendError),
}

/// How much of the response body is left.
#[derive(Debug)]
enum Decode {
    Length(u64),
    Chunked(Decoder),
    Close,
    /// Read whole; the connection is back in the pool or closed.
    Done,
    /// A `101`: no body; the connection is taken by [`ResponseBody::into_upgraded`].
    Upgrade,
    /// Data was handed out and the framing after it found malformed: reported next poll.
    Failed(ChunkError),
}

/// The body of a response from the local service, read from its connection as polled.
/// Read to its end, it puts the connection back in the pool (when the exchange left it
/// reusable) at once, before the last frame is handed on: the pump stops polling a body that
/// says it ended.
pub(crate) struct ResponseBody {
    conn: Option<Conn>,
    decode: Decode,
    sending: Option<Sending>,
    /// Where the connection goes when the body was read whole; `None` if it is not reused.
    pool: Option<Arc<Pool>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decode", &self.decode)
            .finish_non_exhaustive()
    }
}

/// How a response body is delimited, as the head said.
pub(super) enum Delimit {
    Length(u64),
    Chunked,
    Close,
}

impl ResponseBody {
    /// A body without bytes (its connection already dealt with).
    pub(super) fn empty() -> Self {
        Self {
            conn: None,
            decode: Decode::Done,
            sending: None,
            pool: None,
        }
    }

    /// The (empty) body of a `101`, holding the upgraded connection.
    pub(super) fn upgrade(conn: Conn) -> Self {
        Self {
            conn: Some(conn),
            decode: Decode::Upgrade,
            sending: None,
            pool: None,
        }
    }

    /// A body read from `conn`; `pool` when the connection may be reused after it.
    pub(super) fn new(
        conn: Conn,
        delimit: Delimit,
        sending: Option<Sending>,
        pool: Option<Arc<Pool>>,
    ) -> Self {
        let decode = match delimit {
            Delimit::Length(n) => Decode::Length(n),
            Delimit::Chunked => Decode::Chunked(Decoder::new()),
            Delimit::Close => Decode::Close,
        };
        Self {
            conn: Some(conn),
            decode,
            sending,
            pool,
        }
    }

    /// After a `101`: the connection, its bytes read past the head first.
    pub(crate) fn into_upgraded(mut self) -> Option<Upgraded> {
        match self.decode {
            Decode::Upgrade => self.conn.take().map(|c| Upgraded {
                io: c.io,
                early: c.buf.freeze(),
            }),
            _ => None,
        }
    }

    /// The body was read whole: the connection goes back to the pool if nothing of this
    /// exchange is left on it (the request body sent whole, no bytes past the response).
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.decode = Decode::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Some(pool) = self.pool.take() else {
            return;
        };
        if let Some(sending) = self.sending.as_mut() {
            // Often only the body's end marker was left to take.
            if !matches!(sending.poll_send(cx, &mut conn.io), Poll::Ready(Ok(()))) {
                return;
            }
            self.sending = None;
        }
        if conn.buf.is_empty() {
            pool.put(conn);
        }
    }

    /// Moves the request body on, if one is still being sent. A failed write does not end
    /// the exchange (the local service may answer whole without reading all of it), but the
    /// connection is not reused.
    fn drive_sending(&mut self, cx: &mut Context<'_>) -> Result<(), SendError> {
        let (Some(sending), Some(conn)) = (self.sending.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match sending.poll_send(cx, &mut conn.io) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.sending = None;
                Ok(())
            }
            Poll::Ready(Err(SendError::Write(_))) => {
                self.sending = None;
                self.pool = None;
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e),
        }
    }

    /// Data, the end, or `None` when more must be read first.
    fn decoded(&mut self, cx: &mut Context<'_>) -> Option<Option<Result<Bytes, BodyError>>> {
        let conn = self.conn.as_mut()?;
        let buf = &mut conn.buf;
        match &mut self.decode {
            Decode::Done | Decode::Upgrade => Some(None),
            Decode::Failed(e) => {
                let e = e.clone();
                self.decode = Decode::Done;
                self.conn = None;
                Some(Some(Err(e.into())))
            }
            Decode::Length(left) => {
                if buf.is_empty() {
                    return None;
                }
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len())
                    .min(READ_CHUNK);
                let data = buf.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0 {
                    self.finish(cx);
                }
                Some(Some(Ok(data)))
            }
            Decode::Close => {
                if buf.is_empty() {
                    return None;
                }
                let n = buf.len().min(READ_CHUNK);
                Some(Some(Ok(buf.split_to(n).freeze())))
            }
            Decode::Chunked(d) => match d.step(buf, READ_CHUNK) {
                Ok(Step::More) => None,
                Ok(Step::End) => {
                    self.finish(cx);
                    Some(None)
                }
                Ok(Step::Data(data)) => {
                    // The end is often in the same read: seen now, the pump sends the data
                    // as the last frame and the connection is free at once.
                    match d.step(buf, 0) {
                        Ok(Step::End) => self.finish(cx),
                        Ok(_) => {}
                        Err(e) => self.decode = Decode::Failed(e),
                    }
                    Some(Some(Ok(data)))
                }
                Err(e) => {
                    self.decode = Decode::Done;
                    self.conn = None;
                    Some(Some(Err(e.into())))
                }
            },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Err(e) = this.drive_sending(cx) {
            this.decode = Decode::Done;
            this.conn = None;
            return Poll::Ready(Some(Err(BodyError::Send(e))));
        }
        loop {
            if let Some(out) = this.decoded(cx) {
                return Poll::Ready(out.map(|r| r.map(Frame::data)));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let read = ready!(poll_read(&conn.io, cx, &mut conn.buf, READ_CHUNK));
            let error = match (read, &this.decode) {
                (Ok(0), Decode::Close) => {
                    // The close delimits the body: done, and the connection with it.
                    this.decode = Decode::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                (Ok(0), Decode::Length(left)) => BodyError::Truncated(*left),
                (Ok(0), _) => BodyError::ChunkedTruncated,
                (Ok(_), _) => continue,
                (Err(e), _) => BodyError::Read(e),
            };
            this.decode = Decode::Done;
            this.conn = None;
            return Poll::Ready(Some(Err(error)));
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done | Decode::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done | Decode::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The connection to the local service after it agreed to switch protocols: the bytes it
/// sent right behind its `101` head come first, then the connection's own.
#[derive(Debug)]
pub(crate) struct Upgraded {
    io: TcpStream,
    early: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
