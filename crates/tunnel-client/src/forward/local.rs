//! HTTP/1.1 to the local service, spoken by the forwarding task itself on pooled connections.
//!
//! hyper's client connection cost task hand-offs per request: the request went through a
//! channel to the connection's own task, which wrote it and read the answer, the response
//! came back through a oneshot, and the connection was pooled again only after waiting for
//! it to be ready. Here the task that forwards the stream writes the head (one buffer, one
//! write), reads and parses the response head (`httparse`), and reads the body as the pump
//! polls it ([`ResponseBody`]); a connection read to its end goes straight back to the idle
//! list. No connection task, no channel.
//!
//! As hyper's client did: a request that never got an answer on an idle connection the local
//! service had closed meanwhile (the end of stream or a reset before any response byte) is
//! sent again, once, on a new connection, provided none of its body was consumed; nothing
//! else is retried, since the local service may have acted on it.
//!
//! Layout: [`head`] writes request heads and parses response heads (with their framing),
//! [`chunked`] decodes the chunked coding, [`body`] moves the bodies and the upgraded
//! connection, [`conn`] holds a connection and the idle list.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::Buf;
use http::Method;
#[cfg(test)]
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod body;
mod chunked;
mod conn;
mod head;

pub use body::LocalBody;
pub(super) use body::ResponseBody;
use body::{Delimit, SendError, Sending};
use conn::{Conn, Pool};
use head::{Framing, HeadError, RequestError, ResponseHead, Upload, WrittenHead};

/// Why the local service gave no response.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocalError {
    /// No connection could be made.
    #[error("tcp connect error: {0}")]
    Connect(#[source] std::io::Error),
    /// The request from the tunnel cannot be written as HTTP/1.1.
    #[error("cannot write the request: {0}")]
    Request(#[from] RequestError),
    /// Writing the request head failed.
    #[error("sending the request: {0}")]
    Write(#[source] std::io::Error),
    /// The request body failed before the response head came.
    #[error("{0}")]
    Send(#[from] SendError),
    /// Reading the response head failed.
    #[error("reading the response: {0}")]
    Read(#[source] std::io::Error),
    /// The local service closed the connection without a (whole) response head.
    #[error("connection closed before the response head was complete")]
    Closed,
    /// The response head is unusable.
    #[error("{0}")]
    Head(#[from] HeadError),
}

impl LocalError {
    /// Whether the local service could not be reached at all.
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, LocalError::Connect(_))
    }
}

/// A request head written for the local service, ready to send: the headers it was written
/// from (a tunnel head's, borrowed) are done with before the exchange starts.
pub(super) struct Prepared {
    head: WrittenHead,
    /// The request is HEAD: no body follows its response's head.
    head_request: bool,
}

impl Prepared {
    /// The head of `method target` with `headers` (`(name, value)` pairs in order, names
    /// lowercase tokens), framed for a body if `has_body`.
    pub(super) fn new<'a, I>(
        method: &Method,
        target: &str,
        headers: I,
        has_body: bool,
    ) -> Result<Self, LocalError>
    where
        I: Iterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        Ok(Self {
            head: head::write_head(method, target, headers, has_body)?,
            head_request: *method == Method::HEAD,
        })
    }
}

/// The connections to one local service.
#[derive(Debug)]
pub(super) struct LocalClient {
    authority: String,
    pool: Arc<Pool>,
}

/// An attempt on one connection that failed; `retry` when no byte of a response came.
struct Failed {
    error: LocalError,
    retry: bool,
}

impl LocalClient {
    /// A client of `authority` (`host:port`).
    pub(super) fn new(authority: String) -> Self {
        Self {
            authority,
            pool: Arc::default(),
        }
    }

    /// Sends `req` (origin-form target) on an idle connection, or a new one, and returns
    /// the response once its head arrived; the body is read as it is polled.
    #[cfg(test)]
    pub(super) async fn request(
        &self,
        req: http::Request<LocalBody>,
    ) -> Result<http::Response<ResponseBody>, LocalError> {
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let head = head::write_request(&parts.method, target, &parts.headers, has_body)?;
        let head = Prepared {
            head,
            head_request: parts.method == Method::HEAD,
        };
        self.send(head, body).await
    }

    /// Sends the prepared head and `body` (empty if the head was prepared without one) on an
    /// idle connection, or a new one, and returns the response once its head arrived; the
    /// body is read as it is polled.
    pub(super) async fn send(
        &self,
        prepared: Prepared,
        body: LocalBody,
    ) -> Result<http::Response<ResponseBody>, LocalError> {
        let Prepared { head, head_request } = prepared;
        let has_body = !matches!(head.upload, Upload::None);
        let mut sending = has_body.then(|| Sending::new(body, head.upload));
        let mut fresh_only = false;
        loop {
            let idle = if fresh_only { None } else { self.pool.take() };
            let (mut conn, reused) = match idle {
                Some(conn) => (conn, true),
                // Boxed: connecting (resolve, TCP) is the rare path, and unboxed its state
                // made every request's future larger, which the runtime copies several
                // times per request (spawn, each stage).
                None => (Box::pin(self.connect()).await?, false),
            };
            match exchange(&mut conn, &head.bytes, &mut sending, head_request).await {
                Ok((response, sent_whole)) => {
                    let reusable = sent_whole && !head.close;
                    return Ok(self.respond(conn, response, sending, reusable));
                }
                // Again only if none of the body was taken (a body sent whole, or cut off
                // by a failed write, is gone: `sending` is then `None` with `has_body`).
                Err(f) if f.retry && reused && !fresh_only && untouched(has_body, &sending) => {
                    fresh_only = true;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, LocalError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(LocalError::Connect)?;
        let _ = tcp.set_nodelay(true); // latency only; the connection works either way
        Ok(Conn::new(tcp))
    }

    /// The response to hand on, its body reading from `conn`. A body that is empty puts the
    /// connection back at once (when it may be reused).
    fn respond(
        &self,
        conn: Conn,
        head: ResponseHead,
        sending: Option<Sending>,
        reusable: bool,
    ) -> http::Response<ResponseBody> {
        let pool = (reusable && head.keep_alive).then(|| self.pool.clone());
        let body = match head.framing {
            Framing::Empty => {
                if pool.is_some() && sending.is_none() && conn.buf.is_empty() {
                    self.pool.put(conn);
                }
                ResponseBody::empty()
            }
            Framing::Upgrade => ResponseBody::upgrade(conn),
            Framing::Length(n) => ResponseBody::new(conn, Delimit::Length(n), sending, pool),
            Framing::Chunked => ResponseBody::new(conn, Delimit::Chunked, sending, pool),
            Framing::Close => ResponseBody::new(conn, Delimit::Close, sending, pool),
        };
        let mut response = http::Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        response
    }
}

/// Whether the request can still be sent again: it has no body, or none of it was taken.
fn untouched(has_body: bool, sending: &Option<Sending>) -> bool {
    match sending {
        None => !has_body,
        Some(s) => !s.started(),
    }
}

/// Writes the request head on `conn`, then sends the body (if any) while reading the response
/// head, skipping informational responses other than `101`. Also returns whether the request
/// went out whole without a write failing (`sending` is `None` once the body is out).
async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    sending: &mut Option<Sending>,
    head_request: bool,
) -> Result<(ResponseHead, bool), Failed> {
    if let Err(e) = conn.io.write_all(head).await {
        return Err(Failed {
            error: LocalError::Write(e),
            retry: true,
        });
    }
    let mut sent_whole = true;
    let mut got_bytes = false;
    let mut informational = 0;
    poll_fn(|cx| {
        if let Some(s) = sending.as_mut() {
            match s.poll_send(cx, &mut conn.io) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => *sending = None,
                // The local service may have answered without reading it all (a 413): its
                // answer is still read, and the connection not reused.
                Poll::Ready(Err(SendError::Write(_))) => {
                    *sending = None;
                    sent_whole = false;
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Failed {
                        error: e.into(),
                        retry: false,
                    }))
                }
            }
        }
        loop {
            if !conn.buf.is_empty() {
                match head::parse_response(&conn.buf, head_request) {
                    Ok(Some((len, response))) => {
                        conn.buf.advance(len);
                        let status = response.status;
                        if status.is_informational()
                            && status != http::StatusCode::SWITCHING_PROTOCOLS
                        {
                            informational += 1;
                            if informational > head::MAX_INFORMATIONAL {
                                return Poll::Ready(Err(Failed {
                                    error: HeadError::TooManyInformational.into(),
                                    retry: false,
                                }));
                            }
                            continue;
                        }
                        return Poll::Ready(Ok((response, sent_whole)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Poll::Ready(Err(Failed {
                            error: e.into(),
                            retry: false,
                        }))
                    }
                }
            }
            let error = match std::task::ready!(body::poll_read(&conn.io, cx, &mut conn.buf, 4096))
            {
                Ok(0) => LocalError::Closed,
                Ok(_) => {
                    got_bytes = true;
                    continue;
                }
                Err(e) => LocalError::Read(e),
            };
            return Poll::Ready(Err(Failed {
                error,
                retry: !got_bytes,
            }));
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures_util::stream;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A local service running `serve` on each connection it accepts (with the connection's
    /// number, from 1); returns its address and the count of connections accepted.
    async fn service<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream, usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(tcp, n));
            }
        });
        (addr, accepted)
    }

    /// Reads one request head (through its blank line) into `have`, returning it; `None`
    /// at the end of the connection.
    async fn read_head(tcp: &mut TcpStream, have: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(have.drain(..end + 4).collect());
            }
            let mut buf = [0u8; 4096];
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => have.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Answers every request on the connection with `answer`, then closes if `close`.
    async fn answer_each(mut tcp: TcpStream, answer: &'static [u8], close: bool) {
        let mut have = Vec::new();
        while read_head(&mut tcp, &mut have).await.is_some() {
            if tcp.write_all(answer).await.is_err() || close {
                return;
            }
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn request(method: Method, body: LocalBody) -> http::Request<LocalBody> {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = http::Uri::from_static("/");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("local"));
        req
    }

    fn get() -> http::Request<LocalBody> {
        let body = Empty::new().map_err(|never| match never {}).boxed();
        request(Method::GET, body)
    }

    /// Sends `req`, returns status and the whole body.
    async fn fetch(client: &LocalClient, req: http::Request<LocalBody>) -> (u16, Vec<u8>) {
        let resp = client.request(req).await.expect("answered");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    }

    async fn ok(client: &LocalClient) {
        assert_eq!(fetch(client, get()).await, (200, b"ok".to_vec()));
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, OK, false)).await;
        let client = LocalClient::new(addr);
        for _ in 0..5 {
            ok(&client).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.pool.len(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_is_replaced() {
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, OK, true)).await;
        let client = LocalClient::new(addr);
        for round in 1..=3 {
            ok(&client).await;
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
    }

    /// The service reads the second request on a connection, then closes without an answer
    /// (its keep-alive timeout ran out just then): the request goes again on a new one.
    #[tokio::test]
    async fn a_stale_pooled_connection_is_retried_once() {
        let (addr, accepted) = service(|mut tcp, _| async move {
            let mut have = Vec::new();
            if read_head(&mut tcp, &mut have).await.is_some() && tcp.write_all(OK).await.is_ok() {
                read_head(&mut tcp, &mut have).await;
            }
        })
        .await;
        let client = LocalClient::new(addr);
        ok(&client).await;
        ok(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        ok(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connection_close_is_not_reused() {
        const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, CLOSE, false)).await;
        let client = LocalClient::new(addr);
        ok(&client).await;
        ok(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(client.pool.len(), 0);
        const OLD: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, OLD, false)).await;
        let client = LocalClient::new(addr);
        ok(&client).await;
        ok(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_chunked_response_is_decoded_and_its_connection_reused() {
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n";
        let (addr, accepted) = service(|mut tcp, _| async move {
            let mut have = Vec::new();
            while read_head(&mut tcp, &mut have).await.is_some() {
                // Split across writes (and, with no delay, often across reads).
                for piece in CHUNKED.chunks(7) {
                    if tcp.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
        .await;
        let client = LocalClient::new(addr);
        for _ in 0..3 {
            assert_eq!(fetch(&client, get()).await, (200, b"hello world".to_vec()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_malformed_chunked_response_is_an_error() {
        const BAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nxyz\r\n";
        let (addr, _) = service(|tcp, _| answer_each(tcp, BAD, false)).await;
        let client = LocalClient::new(addr);
        let resp = client.request(get()).await.expect("head");
        let err = resp.into_body().collect().await.expect_err("malformed");
        assert!(err.to_string().contains("chunk"), "{err}");
        assert_eq!(client.pool.len(), 0);
    }

    #[tokio::test]
    async fn a_response_until_close_is_read_to_the_end_and_not_reused() {
        const UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nhello, until close";
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, UNTIL_CLOSE, true)).await;
        let client = LocalClient::new(addr);
        for _ in 0..2 {
            assert_eq!(
                fetch(&client, get()).await,
                (200, b"hello, until close".to_vec())
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(client.pool.len(), 0);
    }

    #[tokio::test]
    async fn a_truncated_content_length_body_is_an_error() {
        const SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        let (addr, _) = service(|tcp, _| answer_each(tcp, SHORT, true)).await;
        let client = LocalClient::new(addr);
        let resp = client.request(get()).await.expect("head");
        let err = resp.into_body().collect().await.expect_err("truncated");
        assert!(err.to_string().contains("7 bytes"), "{err}");
    }

    #[tokio::test]
    async fn head_204_and_304_responses_have_no_body() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n";
        let (addr, accepted) = service(|tcp, _| answer_each(tcp, HEAD, false)).await;
        let client = LocalClient::new(addr);
        for _ in 0..2 {
            let resp = client
                .request(request(
                    Method::HEAD,
                    Empty::new().map_err(|n| match n {}).boxed(),
                ))
                .await
                .expect("answered");
            assert!(resp.body().is_end_stream());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        for answer in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            &b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"[..],
        ] {
            let (addr, accepted) = service(move |tcp, _| answer_each(tcp, answer, false)).await;
            let client = LocalClient::new(addr);
            for _ in 0..2 {
                let resp = client.request(get()).await.expect("answered");
                assert!(resp.body().is_end_stream());
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        const CONTINUE: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, _) = service(|tcp, _| answer_each(tcp, CONTINUE, false)).await;
        let client = LocalClient::new(addr);
        ok(&client).await;
        ok(&client).await;
    }

    #[tokio::test]
    async fn an_upgrade_hands_over_the_connection_with_the_bytes_behind_the_head() {
        let (addr, _) = service(|mut tcp, _| async move {
            let mut have = Vec::new();
            if read_head(&mut tcp, &mut have).await.is_none() {
                return;
            }
            let answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                connection: upgrade\r\n\r\nearly";
            if tcp.write_all(answer).await.is_err() {
                return;
            }
            let mut buf = [0u8; 4];
            if tcp.read_exact(&mut buf).await.is_ok() {
                let _ = tcp.write_all(&buf).await;
            }
        })
        .await;
        let client = LocalClient::new(addr);
        let resp = client.request(get()).await.expect("answered");
        assert_eq!(resp.status(), 101);
        let mut io = resp.into_body().into_upgraded().expect("upgraded");
        let mut early = [0u8; 5];
        io.read_exact(&mut early).await.expect("early bytes");
        assert_eq!(&early, b"early");
        io.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        io.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
    }

    /// A service that answers with the raw bytes it received after the request head, up to
    /// the end of a chunked body or `content-length` bytes.
    async fn echo_raw_body(mut tcp: TcpStream, _: usize) {
        let mut have = Vec::new();
        while let Some(head) = read_head(&mut tcp, &mut have).await {
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            loop {
                let done = match length {
                    Some(n) => have.len() >= n,
                    None => have.ends_with(b"0\r\n\r\n"),
                };
                if done {
                    break;
                }
                let mut buf = [0u8; 4096];
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => have.extend_from_slice(&buf[..n]),
                }
            }
            let body: Vec<u8> = std::mem::take(&mut have);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            if tcp.write_all(head.as_bytes()).await.is_err() || tcp.write_all(&body).await.is_err()
            {
                return;
            }
        }
    }

    fn streamed(chunks: &[&'static [u8]]) -> LocalBody {
        let frames: Vec<Result<_, tunnel_protocol::StreamError>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn request_bodies_are_chunked_or_sent_by_their_length() {
        let (addr, accepted) = service(echo_raw_body).await;
        let client = LocalClient::new(addr);
        let req = request(Method::POST, streamed(&[b"hello", b" world"]));
        assert_eq!(
            fetch(&client, req).await,
            (200, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec())
        );
        let mut req = request(Method::PUT, streamed(&[b"hello", b" world"]));
        req.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("11"));
        assert_eq!(fetch(&client, req).await, (200, b"hello world".to_vec()));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Longer than announced: refused before anything past the length is written.
        let mut req = request(Method::PUT, streamed(&[b"hello", b" world"]));
        req.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("5"));
        let sent = client.request(req).await;
        let failed = match sent {
            Err(e) => e.to_string(),
            Ok(resp) => match resp.into_body().collect().await {
                Err(e) => e.to_string(),
                Ok(_) => String::new(),
            },
        };
        assert!(
            failed.contains("longer than its content-length"),
            "{failed}"
        );
    }

    /// A service that refuses a large upload at once (a 413) and closes without reading it:
    /// the answer still comes through, and the connection is not reused.
    #[tokio::test]
    async fn an_answer_before_the_body_was_read_still_arrives() {
        const REFUSED: &[u8] =
            b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbig";
        let (addr, _) = service(|tcp, _| answer_each(tcp, REFUSED, true)).await;
        let client = LocalClient::new(addr);
        let chunks: Vec<Result<_, tunnel_protocol::StreamError>> = (0..64)
            .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![0u8; 64 * 1024]))))
            .collect();
        let req = request(Method::POST, StreamBody::new(stream::iter(chunks)).boxed());
        let resp = client.request(req).await.expect("answered");
        assert_eq!(resp.status(), 413);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"big");
        assert_eq!(client.pool.len(), 0);
    }

    #[tokio::test]
    async fn a_large_body_flows_in_bounded_frames() {
        const SIZE: usize = 16 << 20;
        let (addr, _) = service(|mut tcp, _| async move {
            let mut have = Vec::new();
            if read_head(&mut tcp, &mut have).await.is_none() {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n");
            if tcp.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![7u8; 64 * 1024];
            for _ in 0..SIZE / block.len() {
                if tcp.write_all(&block).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let client = LocalClient::new(addr);
        let mut body = client.request(get()).await.expect("answered").into_body();
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            assert!(data.len() <= 64 * 1024, "a frame of {}", data.len());
            total += data.len();
        }
        assert_eq!(total, SIZE);
        assert_eq!(client.pool.len(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_service_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let err = LocalClient::new(addr).request(get()).await.err();
        assert!(err.is_some_and(|e| e.is_connect()));
    }
}
