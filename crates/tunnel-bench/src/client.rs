//! The load client for everything `wrk` does not measure: bulk transfers, fresh connections,
//! a rate-limited reader, and readiness polls.
//!
//! It speaks HTTP/1.1 through hyper's low-level connection API, one connection per call, so
//! that no pool hides a connect or keeps sockets alive between measurements.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::Repeat;

/// Opens one HTTP/1.1 connection to `addr`.
pub async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Ends with an error when we drop a response mid-body on purpose: expected.
        let _ = conn.await;
    });
    Ok(sender)
}

fn request<B>(method: Method, addr: SocketAddr, path: &str, body: B) -> anyhow::Result<Request<B>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(body)?)
}

/// GET `path` on an open connection; returns the status and drains the body.
pub async fn get_status(
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<StatusCode> {
    sender.ready().await?;
    let resp = sender
        .send_request(request(Method::GET, addr, path, Empty::new())?)
        .await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

/// How a download went.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Body bytes moved.
    pub bytes: u64,
    /// From sending the request to the last byte.
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Downloads `path`, optionally reading at most `rate` bytes/s and stopping after `max_time`
/// (the connection is then dropped, which cancels the transfer).
pub async fn download(
    addr: SocketAddr,
    path: &str,
    rate: Option<u64>,
    max_time: Option<Duration>,
) -> anyhow::Result<Transfer> {
    let mut sender = connect::<Empty<Bytes>>(addr).await?;
    let started = Instant::now();
    let resp = sender
        .send_request(request(Method::GET, addr, path, Empty::new())?)
        .await?;
    if resp.status() != StatusCode::OK {
        bail!("GET {path}: status {}", resp.status());
    }
    let expected = http_body::Body::size_hint(resp.body()).exact();
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("GET {path} after {bytes} bytes"))?;
        if let Some(d) = frame.data_ref() {
            bytes += d.len() as u64;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(bytes as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if max_time.is_some_and(|m| started.elapsed() >= m) {
            return Ok(Transfer {
                bytes,
                elapsed: started.elapsed(),
            });
        }
    }
    if let Some(n) = expected {
        if n != bytes {
            bail!("GET {path}: {bytes} bytes instead of {n}");
        }
    }
    Ok(Transfer {
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Uploads `len` bytes to `path`; the backend must answer the count it received.
pub async fn upload(addr: SocketAddr, path: &str, len: u64) -> anyhow::Result<Transfer> {
    let mut sender = connect::<Repeat>(addr).await?;
    let started = Instant::now();
    let mut req = request(Method::POST, addr, path, Repeat::new(len))?;
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let answer = resp.into_body().collect().await?.to_bytes();
    let elapsed = started.elapsed();
    if status != StatusCode::OK || answer.as_ref() != len.to_string().as_bytes() {
        bail!(
            "POST {path}: status {status}, answer {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    Ok(Transfer {
        bytes: len,
        elapsed,
    })
}

/// One request on a new TCP connection (`Connection: close`), timed from `connect` to the
/// last byte of the response.
pub async fn fresh_get(addr: SocketAddr, path: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    tcp.read_to_end(&mut buf).await?;
    let elapsed = started.elapsed();
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path} on a fresh connection: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(100)])
        );
    }
    Ok(elapsed)
}

/// Never constructed: the error type of bodies that cannot fail.
pub type NoError = Infallible;
