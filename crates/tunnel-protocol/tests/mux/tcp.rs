//! Raw TCP streams: opened with their origin, accepted or refused by the client, then bytes
//! both ways with half-close kept.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_protocol::mux::{self, ClientEvent, IncomingTcp, TCP_CONNECTED};
use tunnel_protocol::{ResetCode, StreamError, TcpOpen, TcpVia};

use crate::support::*;

fn origin() -> TcpOpen {
    TcpOpen {
        peer: "192.0.2.10:40001".parse().expect("address"),
        local: "127.0.0.1:20000".parse().expect("address"),
        via: TcpVia::Port,
    }
}

async fn next_tcp(pair: &mut Pair) -> IncomingTcp {
    match within("a tcp event", pair.client_events.recv()).await {
        Some(ClientEvent::Tcp(tcp)) => tcp,
        other => panic!("expected a tcp event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tcp_stream_carries_bytes_both_ways_and_keeps_half_close() {
    let mut pair = mux_pair(config()).await;
    let (sender, answer) = pair.server.open_tcp(origin()).await.expect("opened");
    let incoming = next_tcp(&mut pair).await;
    assert_eq!(incoming.open, origin(), "the origin arrives unchanged");
    let (c_sender, c_receiver) = within("accept", incoming.accept()).await.expect("accepted");
    let answer = response(answer).await.expect("answered");
    assert_eq!(answer.head.status, TCP_CONNECTED);

    // public client <-> [server splice] <-> mux <-> [client splice] <-> local service
    let (public, server_end) = tokio::io::duplex(64 * 1024);
    let (local, client_end) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(mux::splice(server_end, sender, answer.body, None));
    let client = tokio::spawn(mux::splice(client_end, c_sender, c_receiver, None));

    let up = pattern(300_000, 1);
    let down = pattern(500_000, 2);
    let (mut public_rd, mut public_wr) = tokio::io::split(public);
    let (mut local_rd, mut local_wr) = tokio::io::split(local);
    let sent = up.clone();
    let writer = tokio::spawn(async move {
        public_wr.write_all(&sent).await.expect("write");
        public_wr.shutdown().await.expect("half-close");
        public_wr // kept open: only the write side is shut
    });
    // The public client reads all along: the answer is larger than every buffer on the way.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        public_rd.read_to_end(&mut got).await.expect("read");
        got
    });
    // The local service reads the public client's bytes to their end, and only then answers:
    // the answer travels after the other direction ended.
    let mut got_up = Vec::new();
    within("the upload to end", local_rd.read_to_end(&mut got_up))
        .await
        .expect("read");
    assert_same_body(&got_up, &up, "public -> local");
    local_wr.write_all(&down).await.expect("write");
    local_wr.shutdown().await.expect("shutdown");
    let got_down = within("the download", reader).await.expect("reader");
    assert_same_body(&got_down, &down, "local -> public");
    let _public_wr = writer.await.expect("writer");
    let s = within("server splice", server)
        .await
        .expect("task")
        .expect("clean");
    let c = within("client splice", client)
        .await
        .expect("task")
        .expect("clean");
    assert_eq!((s.sent, s.received), (up.len() as u64, down.len() as u64));
    assert_eq!((c.sent, c.received), (down.len() as u64, up.len() as u64));
    within("streams to close", async {
        while pair.server.open_streams() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_refused_tcp_stream_tells_the_server_why() {
    let mut pair = mux_pair(config()).await;
    let (_sender, response) = pair.server.open_tcp(origin()).await.expect("opened");
    let incoming = next_tcp(&mut pair).await;
    incoming.refuse(ResetCode::LocalConnectFailed, "connection refused");
    match within("the refusal", response).await {
        Err(StreamError::Reset { code, .. }) => assert_eq!(code, ResetCode::LocalConnectFailed),
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test]
async fn http_requests_still_arrive_as_requests_beside_tcp_streams() {
    let mut pair = mux_pair(config()).await;
    let _tcp = pair.server.open_tcp(origin()).await.expect("opened");
    let _ = next_tcp(&mut pair).await;
    let (opened, request) = open_pair(&mut pair, true).await;
    assert!(request.head.tcp.is_none());
    assert_eq!(request.responder.id(), opened.id);
}
