//! TCP tunnels across pods: a front-door connection that lands on a pod other than the one
//! holding the tunnel's client is carried there over the peer link; the tunnel's access token
//! is known to every pod; and after the client's pod dies the client comes back on another
//! and TCP works again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_e2e::eventually;
use tunnel_e2e::tcp::{read_hash, send_random, Consumer, TcpService};
use tunnel_e2e::{TestClient, API_KEY, DEADLINE};

use super::{node_of, setup};

/// Bytes each way of a bulk connection.
const BULK: u64 = 16 << 20;

/// A service whose connections start with a mode byte: `b`, it sends [`BULK`] bytes of seed 2
/// while it reads to the end, and reports the hashes; `h`, it reads to the end and only then
/// answers (the half-close).
async fn service() -> (
    TcpService,
    tokio::sync::mpsc::Receiver<((u64, String), String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let service = TcpService::start(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut mode = [0u8; 1];
            s.read_exact(&mut mode).await.expect("mode");
            if mode[0] == b'h' {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.expect("read to the end");
                s.write_all(b"saw the end of: ").await.expect("write");
                s.write_all(&got).await.expect("write");
                s.shutdown().await.expect("shutdown");
                return;
            }
            let (mut rd, mut wr) = s.into_split();
            let sending = tokio::spawn(async move { send_random(&mut wr, 2, BULK).await });
            let got = read_hash(&mut rd).await;
            let sent = sending.await.expect("sender");
            let _ = tx.send((got, sent)).await;
        }
    })
    .await;
    (service, rx)
}

/// [`BULK`] bytes each way at once through `addr`: both arrive hash-equal.
async fn bulk(
    addr: SocketAddr,
    received: &mut tokio::sync::mpsc::Receiver<((u64, String), String)>,
) {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(b"b").await.expect("mode");
    let (mut rd, mut wr) = socket.into_split();
    let up = tokio::spawn(async move { send_random(&mut wr, 1, BULK).await });
    let (down_len, down_hash) = tokio::time::timeout(DEADLINE * 2, read_hash(&mut rd))
        .await
        .expect("the download in time");
    let up_hash = up.await.expect("upload");
    let ((got_len, got_hash), sent_hash) = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .expect("the service's hashes in time")
        .expect("the service reports");
    assert_eq!(
        (down_len, down_hash),
        (BULK, sent_hash),
        "service to consumer"
    );
    assert_eq!((got_len, got_hash), (BULK, up_hash), "consumer to service");
}

/// The consumer ends its direction first; the service sees the end, then answers.
async fn half_close(addr: SocketAddr) {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = socket.into_split();
    wr.write_all(b"hquestion").await.expect("write");
    wr.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, rd.read_to_end(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(answer, b"saw the end of: question".to_vec());
}

/// The access token from the front door's command the client reports for its tunnel.
fn access_token(shown: &str) -> String {
    let mut words = shown.split_whitespace();
    words.find(|w| *w == "--token");
    words
        .next()
        .expect("a --token in the connect command")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_through_another_pod_and_after_its_pod_dies() {
    let Some(mut s) = setup("tcp", 2, &[]).await else {
        return;
    };
    let (service, mut received) = service().await;
    // The balancer tries A first: the client is on A.
    let mut client = TestClient::start_tcp_at(s.lb.addr, service.port, &[]).await;
    let id = client.tunnel_id.clone();
    let token = access_token(&client.public_url);
    assert_eq!(node_of(&s.pods[1], &id).await.as_deref(), Some("a"));
    // Through B, with the tunnel's access token (which B only knows from Redis).
    let via_b = Consumer::start_at(s.pods[1].addr, &id, &token).await;
    bulk(via_b.addr, &mut received).await;
    half_close(via_b.addr).await;
    // And with the owner's key, through A itself.
    let via_a = Consumer::start_at(s.pods[0].addr, &id, API_KEY).await;
    half_close(via_a.addr).await;
    // B only passed the bytes on, and says so.
    eventually("B's line for a connection it passed on", || async {
        s.pods[1]
            .logs()
            .contains("tcp connection through another pod closed")
            .then_some(())
    })
    .await;
    // A dies; the client comes back through the balancer on B, and TCP works again.
    s.pods[0].kill9().await;
    let b = &s.pods[1];
    eventually("the client back on B", || async {
        (node_of(b, &id).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    client.wait_online().await;
    bulk(via_b.addr, &mut received).await;
    half_close(via_b.addr).await;
    client.stop().await.expect("clean stop");
}
