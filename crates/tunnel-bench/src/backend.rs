//! The local service behind the tunnel (and reached directly for the comparison).
//!
//! - `GET /bytes/N`: N bytes, streamed in 64 KiB chunks of one static buffer, so the backend
//!   itself costs as little as possible and never holds the body in memory.
//! - `POST /upload`: reads and counts the body; answers the count.
//! - anything else: a fixed ~100-byte response.
//!
//! It runs as its own process (`tunnel-bench backend`) so that its CPU time is not mixed with
//! the load client's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Size of one chunk of a streamed body.
pub const CHUNK: usize = 64 * 1024;
static FILL: [u8; CHUNK] = [b'x'; CHUNK];

/// The small response: 100 bytes.
pub const SMALL_BODY: &[u8; 100] =
    b"{\"ok\":true,\"service\":\"tunnel-bench backend\",\"note\":\"a small response of exactly 100 bytes........\"}\n";

/// A body of `remaining` bytes made of slices of one static buffer: no allocation, no copy.
#[derive(Debug)]
pub struct Repeat {
    remaining: u64,
}

impl Repeat {
    /// A body of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self { remaining: len }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

type BackendBody = Either<Full<Bytes>, Repeat>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<BackendBody> {
    let mut resp = Response::new(Either::Left(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

async fn handle(req: Request<Incoming>) -> Result<Response<BackendBody>, Infallible> {
    let path = req.uri().path();
    if let Some(n) = path.strip_prefix("/bytes/") {
        return Ok(match n.parse::<u64>() {
            Ok(n) => {
                let mut resp = Response::new(Either::Right(Repeat::new(n)));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            Err(_) => text(StatusCode::BAD_REQUEST, "bad length\n"),
        });
    }
    if path == "/upload" && req.method() == Method::POST {
        let mut body = req.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        total += d.len() as u64;
                    }
                }
                Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
            }
        }
        return Ok(text(StatusCode::OK, total.to_string()));
    }
    Ok(text(StatusCode::OK, Bytes::from_static(SMALL_BODY)))
}

/// Serves on `listener` forever.
pub async fn serve(listener: TcpListener) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("backend: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("backend: TCP_NODELAY not set: {e}");
        }
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(handle);
            // Errors here are clients that went away mid-request (wrk stopping): expected.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// `tunnel-bench backend`: binds 127.0.0.1:0, prints `listening ADDR` and serves.
pub async fn main() -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {addr}\n").as_bytes())
        .await?;
    out.flush().await?;
    serve(listener).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_body_is_100_bytes() {
        assert_eq!(SMALL_BODY.len(), 100);
    }

    #[tokio::test]
    async fn repeat_yields_exactly_n_bytes() {
        let body = Repeat::new(CHUNK as u64 * 2 + 7);
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert!(matches!(bytes, Ok(b) if b.len() == CHUNK * 2 + 7));
    }
}
