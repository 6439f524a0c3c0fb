//! A minimal HTTP/1.1 client that sends targets exactly as given (reqwest would normalise
//! `..` and percent-encoding), and raw-socket helpers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request on a new connection and returns the response with its body unread.
pub async fn send_streaming(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.unwrap()
}

/// Sends one request and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    let resp = send_streaming(addr, req).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

/// A request with a literal target and `Host` set.
pub fn request(method: &str, target: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", "tunnel.test")
        .body(Full::new(body.into()))
        .unwrap()
}

/// `GET target`.
pub async fn get(addr: SocketAddr, target: &str) -> Response<Bytes> {
    send(addr, request("GET", target, Bytes::new())).await
}

/// Writes raw bytes on a new connection and reads until the server closes (or `max` bytes).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(super::DEADLINE, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
