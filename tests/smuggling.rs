//! End-to-end: the framing guard follows every request of a keep-alive connection. Each case
//! sends raw bytes on one connection: requests the guard must pass, then one it must refuse,
//! and checks every answer and what the local service saw.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_e2e::backend::Backend;
use tunnel_e2e::{TestClient, TestServer, DEADLINE};

/// One response read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> Option<&str> {
        self.header("x-tunnel-error")
    }
}

/// A raw connection that reads responses one by one (Content-Length or chunked bodies).
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: &TestServer) -> Self {
        Self {
            tcp: TcpStream::connect(server.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at end of stream.
    async fn more(&mut self) -> bool {
        let mut tmp = [0u8; 8192];
        match tokio::time::timeout(DEADLINE, self.tcp.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!("no answer within {DEADLINE:?}"),
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.more().await, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).collect();
                return Some(String::from_utf8_lossy(&line[..p]).into_owned());
            }
            if !self.more().await {
                return None;
            }
        }
    }

    /// The next response, or `None` if the server closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        let status_line = self.line().await?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await.expect("closed inside a head");
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 101 || status == 204 || status == 304 {
            return Some(answer);
        }
        if let Some(n) = answer.header("content-length") {
            let n = n.parse().unwrap();
            answer.body = self.take(n).await;
        } else if answer
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = self.line().await.expect("closed inside a chunked body");
                let size =
                    usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
                let data = self.take(size + 2).await;
                if size == 0 {
                    break;
                }
                answer.body.extend_from_slice(&data[..size]);
            }
        }
        Some(answer)
    }

    /// True once the server has closed the connection (reading nothing more).
    async fn closed(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if !self.more().await {
                return true;
            }
        }
        false
    }
}

async fn setup() -> (TestServer, Backend, TestClient) {
    // A long header timeout: a refusal must come at once, not when the timeout fires.
    let server = TestServer::start(&["--header-read-timeout-secs", "60"]).await;
    let backend = Backend::start("smuggle").await;
    let client = TestClient::start(&server, backend.addr.port(), &[]).await;
    (server, backend, client)
}

/// Requests that leave a keep-alive connection open and in the guard's hands.
fn openers(p: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "an h2c upgrade that is not switched (curl --http2)",
            format!(
                "GET {p}/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            ),
        ),
        (
            "Upgrade: websocket to a route that answers normally",
            format!(
                "GET {p}/plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ),
        ),
        (
            "a chunked body with a long chunk-size line",
            format!(
                "POST {p}/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 00000000000000000005\r\nhello\r\n0000000000000000000000\r\n\r\n"
            ),
        ),
        (
            "a chunked body with an extension and a trailer",
            format!(
                "POST {p}/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
            ),
        ),
    ]
}

/// Heads refused on a fresh connection, and the code each must get.
fn ambiguous(p: &str) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "Content-Length + Transfer-Encoding",
            format!("POST {p}/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "bad_framing",
        ),
        (
            "two Content-Length: 5",
            format!("POST {p}/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            "bad_framing",
        ),
        (
            "Transfer-Encoding: \\tchunked",
            format!("POST {p}/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \tchunked\r\n\r\n0\r\n\r\n"),
            "bad_framing",
        ),
        (
            "a bare-LF head",
            format!("GET {p}/x HTTP/1.1\nHost: a\n\n"),
            "malformed_request",
        ),
    ]
}

#[tokio::test]
async fn the_guard_follows_every_request_of_a_connection() {
    let (server, backend, client) = setup().await;
    let p = client.prefix();
    let mut expected_requests = 0;
    for (opener, first) in openers(&p) {
        for (name, bad, code) in ambiguous(&p) {
            // Sent in two writes and, separately, pipelined in one.
            for pipelined in [false, true] {
                let mut conn = Conn::open(&server).await;
                if pipelined {
                    conn.send(format!("{first}{bad}").as_bytes()).await;
                } else {
                    conn.send(first.as_bytes()).await;
                }
                let a = conn.answer().await.unwrap();
                assert_eq!(a.status, 200, "{opener}: {a:?}");
                expected_requests += 1;
                if !pipelined {
                    conn.send(bad.as_bytes()).await;
                }
                let b = conn
                    .answer()
                    .await
                    .expect("no answer to the refused request");
                assert_eq!(b.status, 400, "{opener}, then {name}: {b:?}");
                assert_eq!(b.error_code(), Some(code), "{opener}, then {name}");
                assert_eq!(b.header("connection"), Some("close"));
                assert!(conn.closed().await, "{opener}, then {name}: left open");
                assert_eq!(
                    backend.requests(),
                    expected_requests,
                    "{opener}, then {name}: reached the local service"
                );
            }
        }
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn bare_lf_heads_are_answered_at_once_and_never_forwarded() {
    let (server, backend, client) = setup().await;
    let p = client.prefix();
    let pad = "a".repeat(70 * 1024);
    let cases = [
        ("a bare-LF GET", format!("GET {p}/x HTTP/1.1\nHost: a\n\n"), 400, "malformed_request"),
        ("LF after the request line only", format!("GET {p}/x HTTP/1.1\nHost: a\r\n\r\n"), 400, "malformed_request"),
        ("a bare CR", format!("GET {p}/x HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"), 400, "malformed_request"),
        (
            "CL + TE ending chunked\\n\\r\\n, padded past 64 KiB",
            format!("POST {p}/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\n\r\nX-Pad: {pad}\r\n\r\n0\r\n\r\n"),
            400,
            "malformed_request",
        ),
        (
            "the padding first, then CL + TE ending chunked\\n\\r\\n",
            format!("POST {p}/x HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\n\r\n0\r\n\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "CL + TE entirely in bare LF",
            format!("POST {p}/x HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n"),
            400,
            "malformed_request",
        ),
    ];
    for (name, req, status, code) in cases {
        let started = Instant::now();
        let mut conn = Conn::open(&server).await;
        // The server may close before reading everything; a failed write is fine.
        let _ = conn.tcp.write_all(req.as_bytes()).await;
        let a = conn
            .answer()
            .await
            .unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(a.status, status, "{name}: {a:?}");
        assert_eq!(a.error_code(), Some(code), "{name}");
        assert!(conn.closed().await, "{name}: left open");
        // Well under the 60 s header timeout: answered, not timed out.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        backend.requests(),
        0,
        "a malformed head reached the local service"
    );
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_chunk_size_past_64_bits_is_the_public_clients_fault() {
    let (server, _backend, client) = setup().await;
    let p = client.prefix();
    for size in ["10000000000000000", "0000FFFFFFFFFFFFFFFFF", "5x"] {
        let mut conn = Conn::open(&server).await;
        conn.send(
            format!("POST {p}/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n")
                .as_bytes(),
        )
        .await;
        let a = conn
            .answer()
            .await
            .unwrap_or_else(|| panic!("{size}: no answer"));
        assert_eq!(a.status, 400, "{size}: {a:?}");
        assert_eq!(a.error_code(), Some("bad_framing"), "{size}");
        assert!(conn.closed().await, "{size}: left open");
    }
    // The largest size that fits is followed, not refused (the body then breaks off short).
    let mut conn = Conn::open(&server).await;
    conn.send(
        format!("POST {p}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0FFFFFFFFFFFFFFFF\r\nabc")
            .as_bytes(),
    )
    .await;
    conn.tcp.shutdown().await.unwrap();
    if let Some(a) = conn.answer().await {
        assert_ne!(a.error_code(), Some("bad_framing"), "{a:?}");
    }
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_websocket_upgrade_after_requests_on_the_same_connection_is_switched() {
    let (server, _backend, client) = setup().await;
    let p = client.prefix();
    let mut conn = Conn::open(&server).await;
    conn.send(format!("GET {p}/one HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    assert_eq!(conn.answer().await.unwrap().status, 200);
    // Sent with a masked text frame right behind the head: the guard must hold the frame until
    // the answer, then pass it as WebSocket bytes, not read it as a request head.
    let mut bytes = format!(
        "GET {p}/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    let mask = [1u8, 2, 3, 4];
    let text = b"hello through";
    bytes.extend_from_slice(&[0x81, 0x80 | text.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.send(&bytes).await;
    let a = conn.answer().await.unwrap();
    assert_eq!(a.status, 101, "{a:?}");
    // The service greets with a JSON text frame first, then echoes (frames unmasked).
    let hello = conn.take(2).await;
    assert_eq!(hello[0], 0x81);
    let greeting = conn.take(usize::from(hello[1])).await;
    assert!(greeting.starts_with(b"{"), "{greeting:?}");
    let frame = conn.take(2 + text.len()).await;
    assert_eq!(frame[0], 0x81);
    assert_eq!(&frame[2..], text);
    client.stop().await.unwrap();
}
