//! Parts of the TCP tunnel tests: a local TCP service on port 0, pseudo-random byte streams
//! with their hashes, and the front door's consumer (`tunnel-client connect`) in-process.

use std::future::Future;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tunnel_client::config::ServerUrl;
use tunnel_client::display::Printer;
use tunnel_client::tcp::consume::{self, FrontDoor};

use crate::backend::hex;
use crate::TestServer;

/// Bytes per write of [`send_random`].
const CHUNK: usize = 256 * 1024;

/// xorshift64*: fast, seeded, and different for every seed; enough to make bytes no layer
/// could compress or mistake for each other.
pub struct Random(u64);

impl Random {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `len` bytes of [`Random`] `seed` to `w`, then shuts its write side down; returns the
/// SHA-256 of what it wrote, hex.
pub async fn send_random<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, len: u64) -> String {
    let mut rng = Random::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        w.write_all(&buf[..n]).await.expect("write");
        left -= n as u64;
    }
    w.shutdown().await.expect("shutdown");
    hex(&hash.finalize())
}

/// Reads `r` to its end; returns how many bytes and their SHA-256, hex.
pub async fn read_hash<R: AsyncRead + Unpin>(r: &mut R) -> (u64, String) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.expect("read");
        if n == 0 {
            return (total, hex(&hash.finalize()));
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

/// A local TCP service on 127.0.0.1:0: each connection handed to `serve` on a task of its
/// own. Stopped when dropped.
pub struct TcpService {
    /// Its port.
    pub port: u16,
    accept: JoinHandle<()>,
}

impl TcpService {
    /// Starts the service.
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket));
            }
        });
        Self { port, accept }
    }

    /// Echoes every byte back, and ends its direction when the peer ended its own.
    pub async fn echo() -> Self {
        Self::start(|mut s| async move {
            let (mut rd, mut wr) = s.split();
            if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
                let _ = wr.shutdown().await;
            }
        })
        .await
    }
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `tunnel-client connect ID --listen 127.0.0.1:0` in-process, with `credential`. Stopped
/// when dropped.
pub struct Consumer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Consumer {
    /// Starts a consumer of tunnel `id` on `server`.
    pub async fn start(server: &TestServer, id: &str, credential: &str) -> Self {
        Self::start_at(server.addr, id, credential).await
    }

    /// [`Consumer::start`] for the server at `server`.
    pub async fn start_at(server: SocketAddr, id: &str, credential: &str) -> Self {
        let url = ServerUrl::parse(&server.to_string()).expect("server url");
        let door = FrontDoor::new(&url, id, credential);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(consume::serve(
            listener,
            door,
            Printer::new(false),
            stop.clone(),
        ));
        Self { addr, stop }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The front door's WebSocket for tunnel `id`, opened with `credential`: the server's answer
/// to the upgrade, as [`consume::open`] reports it.
pub async fn front_door(
    server: &TestServer,
    id: &str,
    credential: &str,
) -> Result<(), consume::ConsumeError> {
    let url = ServerUrl::parse(&server.addr.to_string()).expect("server url");
    consume::open(&FrontDoor::new(&url, id, credential))
        .await
        .map(drop)
}

/// A port the OS has free now (bound and released at once).
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}
