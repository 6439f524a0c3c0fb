//! HTTP/1.1 connections to the local service, kept open and reused: a small pool of hyper's
//! per-connection clients.
//!
//! hyper-util's pooled client did the same with more machinery than one fixed origin needs
//! (a pool keyed by scheme and authority, checkout futures, an idle reaper) and spawned a
//! task per request to watch the connection become idle again. Here the forward that used a
//! connection waits for that itself, after its answer went back ([`Pooled::release`]): the
//! public client never waits for it. Measured under callgrind: about 8,000 instructions and a
//! task fewer per small request on the client.
//!
//! As hyper-util's client did: a request that never left (the idle connection had been closed
//! by the local service in the meantime) is sent again on a new connection; nothing else is
//! retried, since the local service may have acted on it.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tunnel_protocol::StreamError;

/// Body type sent to the local service.
pub type LocalBody = BoxBody<Bytes, StreamError>;

/// Idle connections kept at most (hyper-util's client kept 64 per host too).
const MAX_IDLE: usize = 64;

/// Why the local service gave no response.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocalError {
    /// No connection could be made.
    #[error("tcp connect error: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP/1.1 handshake or exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl LocalError {
    /// Whether the local service could not be reached at all.
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, LocalError::Connect(_))
    }
}

/// The connections to one local service.
#[derive(Debug)]
pub(super) struct LocalClient {
    authority: String,
    idle: Mutex<Vec<http1::SendRequest<LocalBody>>>,
}

/// A connection in use by one request; [`Pooled::release`] hands it back.
pub(super) struct Pooled {
    sender: Option<http1::SendRequest<LocalBody>>,
}

impl LocalClient {
    /// A client of `authority` (`host:port`).
    pub(super) fn new(authority: String) -> Self {
        Self {
            authority,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (origin-form target) on an idle connection, or a new one.
    pub(super) async fn request(
        &self,
        mut req: http::Request<LocalBody>,
    ) -> Result<(http::Response<Incoming>, Pooled), LocalError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: connecting (resolve, TCP, handshake) is the rare path, and unboxed
                // its state made every request's future larger, which the runtime copies
                // several times per request (spawn, each stage).
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pooled = Pooled {
                        sender: Some(sender),
                    };
                    return Ok((resp, pooled));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the reused connection was closed meanwhile; a new one.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(LocalError::Http(e.into_error())),
                },
            }
        }
    }

    /// An idle connection that can take a request now.
    fn checkout(&self) -> Option<http1::SendRequest<LocalBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<http1::SendRequest<LocalBody>, LocalError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(LocalError::Connect)?;
        let _ = tcp.set_nodelay(true); // latency only; the connection works either way
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        // The connection's own task, as hyper-util's client spawned it: it ends when the
        // connection closes or its last sender is gone (the pool's with the forwarder), and a
        // failure has already reached the request it broke.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Puts a connection back once it can take the next request (its response body read to
    /// the end); a connection that closes instead is let go.
    pub(super) async fn release(&self, mut pooled: Pooled) {
        let Some(mut sender) = pooled.sender.take() else {
            return;
        };
        if sender.ready().await.is_err() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A local service that answers `ok` to every request; with `close_after_one`, it closes
    /// each connection after its first answer (as one whose keep-alive timeout ran out).
    async fn service(close_after_one: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let Ok(n) = tcp.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        have.extend_from_slice(&buf[..n]);
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if tcp.write_all(answer).await.is_err() || close_after_one {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> http::Request<LocalBody> {
        let body = Empty::new().map_err(|never| match never {}).boxed();
        let mut req = http::Request::new(body);
        *req.uri_mut() = http::Uri::from_static("/");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("local"));
        req
    }

    async fn ok(client: &LocalClient) {
        let (resp, pooled) = client.request(get()).await.expect("answered");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        client.release(pooled).await;
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let (addr, accepted) = service(false).await;
        let client = LocalClient::new(addr);
        for _ in 0..5 {
            ok(&client).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_is_replaced() {
        let (addr, accepted) = service(true).await;
        let client = LocalClient::new(addr);
        for round in 1..=3 {
            ok(&client).await;
            // Until the client saw the close: the idle connection is then a closed one.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !client
                .idle
                .lock()
                .expect("lock")
                .iter()
                .all(|s| s.is_closed())
            {
                assert!(tokio::time::Instant::now() < deadline, "close never seen");
                tokio::task::yield_now().await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
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
