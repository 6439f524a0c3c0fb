//! Integration tests of the stream multiplexer ([`tunnel_protocol::mux`]).
//!
//! Every test runs over an in-memory `tokio::io::duplex` pipe wrapped in WebSocket framing on
//! both ends: either two muxes talking to each other, or one mux and a hand-driven "raw" peer
//! that speaks the wire format directly (to misbehave on purpose). Every wait is bounded by a
//! timeout; the only fixed delays are negative checks ("this has *not* happened after 200 ms").
//! The tests near the end began as reproductions of defects found in review (writer stuck on a
//! non-reading peer, unbounded close, lost close reasons); they guard the fixes.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::frame::{DataFrame, Frame};
use tunnel_protocol::headers::WireHeaders;
use tunnel_protocol::mux::{self, BodyReceiver, BodySender, Event, Mux, MuxConfig, Role, Stream};
use tunnel_protocol::ws::WebSocket;
use tunnel_protocol::{
    ControlMessage, GoodbyeReason, Hello, RequestHead, ResetCode, ResponseHead, StreamError,
    StreamId, PROTOCOL_VERSION,
};

type Ws = WebSocketStream<DuplexStream>;
type HeadRx = oneshot::Receiver<Result<ResponseHead, StreamError>>;

/// Credit per stream and direction in most tests: small, so that flow control kicks in often.
const WINDOW: u32 = 64 * 1024;
/// Largest data frame payload in most tests.
const FRAME: u32 = 16 * 1024;
/// How long anything that should happen "promptly" may take.
const PROMPT: Duration = Duration::from_secs(5);
/// How long a negative check waits for something that must not happen.
const NOT_YET: Duration = Duration::from_millis(200);

fn config() -> MuxConfig {
    MuxConfig {
        initial_window: WINDOW,
        // Auto-tuning off: these tests count bytes against a fixed window. The tests of
        // auto-tuning set their own.
        max_window: WINDOW,
        max_frame_size: FRAME,
        max_streams: 64,
        // Long enough that keepalive never interferes, except in the tests about it.
        ping_interval: Duration::from_secs(30),
        dead_after: Duration::from_secs(90),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Awaits `fut`, failing the test if it takes longer than [`PROMPT`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(PROMPT, what, fut).await
}

/// Our framing on the mux's end of a pipe.
fn ours(io: tokio::io::DuplexStream, role: mux::Role) -> WebSocket<tokio::io::DuplexStream> {
    WebSocket::new(io, role, 1 << 20)
}

/// A server mux and a client mux connected to each other.
struct Pair {
    server: Mux,
    server_events: mpsc::Receiver<Event>,
    client: Mux,
    client_events: mpsc::Receiver<Event>,
}

async fn mux_pair(cfg: MuxConfig) -> Pair {
    let (s, c) = tokio::io::duplex(1 << 20);
    let (server, server_events) = mux::start(ours(s, Role::Server), cfg.clone(), Role::Server);
    let (client, client_events) = mux::start(ours(c, Role::Client), cfg, Role::Client);
    Pair {
        server,
        server_events,
        client,
        client_events,
    }
}

/// A server-role mux whose peer is a raw WebSocket driven by the test.
async fn mux_server_raw_client(cfg: MuxConfig) -> (Mux, mpsc::Receiver<Event>, Ws) {
    let (s, c) = tokio::io::duplex(1 << 20);
    let mut c = WebSocketStream::from_raw_socket(c, WsRole::Client, None).await;
    let (mux, events) = mux::start(ours(s, Role::Server), cfg, Role::Server);
    answer_opening_ping(&mut c).await;
    (mux, events, c)
}

/// A client-role mux whose peer is a raw WebSocket driven by the test.
async fn mux_client_raw_server(cfg: MuxConfig) -> (Mux, mpsc::Receiver<Event>, Ws) {
    let (s, c) = tokio::io::duplex(1 << 20);
    let mut s = WebSocketStream::from_raw_socket(s, WsRole::Server, None).await;
    let (mux, events) = mux::start(ours(c, Role::Client), cfg, Role::Client);
    answer_opening_ping(&mut s).await;
    (mux, events, s)
}

/// A mux pings right after it starts (its first round-trip sample). The raw peer takes that
/// ping and sends the answer at once: left pending, the answer would go out with the peer's
/// next read, and on a connection the mux already closed (say after a protocol violation the
/// test provoked) that write fails and hides the goodbye and close frame still to be read.
async fn answer_opening_ping(raw: &mut Ws) {
    match within("the opening ping", raw.next()).await {
        Some(Ok(Message::Ping(payload))) => assert_eq!(payload.len(), 8, "a probe counter"),
        other => panic!("expected the opening ping, got {other:?}"),
    }
    within("the pong", raw.flush()).await.expect("pong sent");
}

fn request_head(stream_id: StreamId, end_stream: bool) -> RequestHead {
    RequestHead {
        stream_id,
        method: "POST".into(),
        target: "/upload?x=1&y".into(),
        headers: WireHeaders(vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("x-bin".into(), vec![0xff, 0x00, b'a'].into()),
        ]),
        end_stream,
    }
}

fn response_head(stream_id: StreamId, status: u16, end_stream: bool) -> ResponseHead {
    ResponseHead {
        stream_id,
        status,
        headers: WireHeaders(vec![("content-type".into(), "text/plain".into())]),
        end_stream,
    }
}

/// (Server mux) opens a stream and sends its request head.
async fn open_request(server: &Mux, end_stream: bool) -> (Stream, HeadRx, RequestHead) {
    let (mut stream, head_rx) = server.open_stream().expect("open a stream");
    let head = request_head(stream.id, end_stream);
    within(
        "the request head to be queued",
        server.send_control(ControlMessage::Request(head.clone())),
    )
    .await
    .expect("send the request head");
    if end_stream {
        stream.sender.mark_finished();
    }
    (stream, head_rx, head)
}

/// (Client mux) waits for the next request event.
async fn next_request(events: &mut mpsc::Receiver<Event>) -> (RequestHead, Stream) {
    match within("a request event", events.recv()).await {
        Some(Event::Request { head, stream }) => (head, stream),
        other => panic!("expected a request event, got {other:?}"),
    }
}

/// Opens a stream on the server mux and accepts it on the client mux.
async fn open_pair(pair: &mut Pair, end_stream: bool) -> (Stream, HeadRx, Stream) {
    let (server_stream, head_rx, sent) = open_request(&pair.server, end_stream).await;
    let (got, client_stream) = next_request(&mut pair.client_events).await;
    assert_eq!(got, sent, "the request head arrives unchanged");
    assert_eq!(client_stream.id, server_stream.id);
    (server_stream, head_rx, client_stream)
}

async fn send_response(mux: &Mux, id: StreamId, status: u16, end_stream: bool) {
    within(
        "the response head to be queued",
        mux.send_control(ControlMessage::Response(response_head(
            id, status, end_stream,
        ))),
    )
    .await
    .expect("send the response head");
}

/// Deterministic pseudo-random bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// 64-bit FNV-1a, enough to compare bodies without printing megabytes on failure.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Sends `data` in chunks of varying, frame-misaligned sizes, then the end marker.
async fn send_chunked(tx: &mut BodySender, data: &[u8]) -> Result<(), StreamError> {
    let sizes = [1usize, 1000, 65_537, 100_000, 7, 16_384, 200_003];
    let mut rest = Bytes::copy_from_slice(data);
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        tx.send(rest.split_to(n)).await?;
        i += 1;
    }
    tx.finish().await
}

/// Spawns [`send_chunked`] with owned arguments; the task gives the sender back.
fn spawn_upload(mut tx: BodySender, data: Vec<u8>) -> JoinHandle<Result<BodySender, StreamError>> {
    tokio::spawn(async move {
        send_chunked(&mut tx, &data).await?;
        Ok(tx)
    })
}

/// Reads a body to its end.
async fn read_all(rx: &mut BodyReceiver) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    while let Some(chunk) = rx.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn assert_same_body(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(fnv1a(got), fnv1a(want), "{what}: content hash");
}

// --- raw peer helpers ---

async fn raw_send(raw: &mut Ws, msg: ControlMessage) {
    let m = Frame::Control(msg).into_message().expect("encodes");
    within("a raw send", raw.send(m)).await.expect("raw send");
}

async fn raw_send_data(raw: &mut Ws, stream_id: StreamId, end: bool, payload: Vec<u8>) {
    let frame = DataFrame {
        stream_id,
        end,
        payload: payload.into(),
    };
    within("a raw send", raw.send(Message::Binary(frame.encode())))
        .await
        .expect("raw send");
}

/// Next message from the mux other than ping/pong; `None` once the connection ended.
async fn raw_recv(raw: &mut Ws) -> Option<Message> {
    loop {
        match within("a message from the mux", raw.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Next control message from the mux, skipping data frames.
async fn raw_control(raw: &mut Ws) -> ControlMessage {
    loop {
        match raw_recv(raw).await {
            Some(Message::Close(f)) => panic!("connection closed ({f:?}) instead of a message"),
            Some(m) => match Frame::decode(m, usize::MAX).expect("the mux sends valid frames") {
                Some(Frame::Control(c)) => return c,
                Some(Frame::Data(_)) | None => continue,
            },
            None => panic!("connection ended while waiting for a control message"),
        }
    }
}

/// Reads control messages until one matches; returns it and the ones skipped on the way.
async fn raw_until(
    raw: &mut Ws,
    want: impl Fn(&ControlMessage) -> bool,
) -> (ControlMessage, Vec<ControlMessage>) {
    let mut skipped = Vec::new();
    loop {
        let m = raw_control(raw).await;
        if want(&m) {
            return (m, skipped);
        }
        skipped.push(m);
    }
}

fn is_reset_of(m: &ControlMessage, id: StreamId) -> bool {
    matches!(m, ControlMessage::Reset { stream_id, .. } if *stream_id == id)
}

/// (Server mux, raw client) opens a stream and has the raw peer see its head.
async fn raw_open(mux: &Mux, raw: &mut Ws) -> (Stream, HeadRx) {
    let (stream, head_rx, _) = open_request(mux, true).await;
    let id = stream.id;
    let (_, skipped) = raw_until(
        raw,
        |m| matches!(m, ControlMessage::Request(h) if h.stream_id == id),
    )
    .await;
    assert!(skipped.is_empty(), "unexpected messages: {skipped:?}");
    (stream, head_rx)
}

/// Proves a server mux with a raw client peer still works: a fresh stream gets its head
/// across and the raw peer's answer back. Returns control messages seen on the way.
async fn probe(mux: &Mux, raw: &mut Ws) -> Vec<ControlMessage> {
    let (stream, head_rx, _) = open_request(mux, true).await;
    let id = stream.id;
    let (_, skipped) = raw_until(
        raw,
        |m| matches!(m, ControlMessage::Request(h) if h.stream_id == id),
    )
    .await;
    raw_send(raw, ControlMessage::Response(response_head(id, 204, true))).await;
    let head = within("the probe's response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("probe answered");
    assert_eq!(head.status, 204);
    assert!(!mux.is_closed());
    skipped
}

/// Reads what a mux sends after a protocol violation: expects a goodbye with reason
/// `protocol_error`, then a close frame with code 1002, then the end of the connection.
async fn expect_protocol_error_close(raw: &mut Ws) {
    let mut goodbye = None;
    let mut close = None;
    while let Some(m) = raw_recv(raw).await {
        match m {
            Message::Close(f) => {
                close = Some(f);
                break;
            }
            m => {
                if let Some(Frame::Control(ControlMessage::Goodbye { reason, message })) =
                    Frame::decode(m, usize::MAX).expect("valid frame")
                {
                    goodbye = Some((reason, message));
                }
            }
        }
    }
    let (reason, message) = goodbye.expect("a goodbye before the close");
    assert_eq!(reason, GoodbyeReason::ProtocolError, "{message}");
    assert!(message.contains("protocol error"), "{message}");
    let close = close.expect("a close frame").expect("with a code");
    assert_eq!(close.code, CloseCode::Protocol);
    // And then nothing more.
    assert!(raw_recv(raw).await.is_none());
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------------------------

/// A 5 MiB request body and a 2 MiB response body cross a 64 KiB window intact, in both
/// directions at once, and both ends then see a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_large_bodies_then_clean_end() {
    let mut pair = mux_pair(config()).await;
    let request_body = pattern(5 << 20, 1);
    let response_body = pattern((2 << 20) + 12_345, 2);

    let (server_stream, head_rx, client_stream) = open_pair(&mut pair, false).await;
    let id = server_stream.id;
    let Stream {
        sender: server_tx,
        receiver: mut server_rx,
        ..
    } = server_stream;
    let upload = spawn_upload(server_tx, request_body.clone());

    // The client answers while the request body is still arriving (full duplex).
    let client_mux = pair.client.clone();
    let body = response_body.clone();
    let client = tokio::spawn(async move {
        let Stream {
            sender: mut tx,
            receiver: mut rx,
            ..
        } = client_stream;
        client_mux
            .send_control(ControlMessage::Response(response_head(id, 200, false)))
            .await?;
        let (got, sent) = tokio::join!(read_all(&mut rx), send_chunked(&mut tx, &body));
        sent?;
        Ok::<_, StreamError>((got?, tx, rx))
    });

    let head = within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("a response head");
    assert_eq!(head, response_head(id, 200, false));
    let got_response = within_for(
        Duration::from_secs(30),
        "the response body",
        read_all(&mut server_rx),
    )
    .await
    .expect("response body");
    let server_tx = within_for(Duration::from_secs(30), "the upload", upload)
        .await
        .expect("upload task")
        .expect("upload");
    let (got_request, client_tx, mut client_rx) =
        within_for(Duration::from_secs(30), "the client side", client)
            .await
            .expect("client task")
            .expect("client side");

    assert_same_body(&got_request, &request_body, "request body");
    assert_same_body(&got_response, &response_body, "response body");

    // Clean end on both sides: the receivers keep yielding None.
    assert!(server_rx.is_end_received());
    assert!(client_rx.is_end_received());
    assert!(server_rx.next().await.is_none());
    assert!(client_rx.next().await.is_none());
    assert_eq!(
        pair.server.bytes(),
        (request_body.len() as u64, response_body.len() as u64)
    );
    assert_eq!(
        pair.client.bytes(),
        (response_body.len() as u64, request_body.len() as u64)
    );

    // Dropping finished streams forgets them on both sides and leaves the connection up.
    assert_eq!(pair.server.open_streams(), 1);
    drop((server_tx, server_rx, client_tx, client_rx));
    assert_eq!(pair.server.open_streams(), 0);
    assert_eq!(pair.client.open_streams(), 0);
    assert!(!pair.server.is_closed() && !pair.client.is_closed());

    // The connection still carries new streams, including bodiless ones.
    let (mut s, head_rx, mut c) = open_pair(&mut pair, true).await;
    assert!(within("empty request body", c.receiver.next())
        .await
        .is_none());
    send_response(&pair.client, s.id, 204, true).await;
    c.sender.mark_finished();
    let head = within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("a response head");
    assert_eq!(head.status, 204);
    assert!(within("empty response body", s.receiver.next())
        .await
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// 2. Flow control
// ---------------------------------------------------------------------------------------------

/// A receiver that does not read stalls its sender after one window, and only its own stream:
/// a second stream on the same connection completes meanwhile. Once the reader resumes,
/// everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flow_control_bounds_buffering_and_isolates_streams() {
    let mut pair = mux_pair(config()).await;
    let window = u64::from(WINDOW);

    // Stream A: the client does not read the request body.
    let (a, _a_head, mut client_a) = open_pair(&mut pair, false).await;
    let body_a = pattern(4 * WINDOW as usize, 3);
    let mut upload_a = spawn_upload(a.sender, body_a.clone());
    let mut a_rx = a.receiver;

    // Negative check: sending four windows cannot complete while nobody reads.
    assert!(
        timeout(NOT_YET, &mut upload_a).await.is_err(),
        "a send of 4 windows completed although the receiver reads nothing"
    );
    let (sent, _) = pair.server.bytes();
    let (_, received) = pair.client.bytes();
    assert!(
        sent <= window,
        "sent {sent} bytes on a {window} byte window"
    );
    assert!(
        received <= window,
        "buffered {received} bytes on a {window} byte window"
    );

    // Stream B completes in both directions while A is stalled.
    let (b, b_head, client_b) = open_pair(&mut pair, false).await;
    let b_id = b.id;
    let body_b = pattern(4 * WINDOW as usize + 3, 4);
    let upload_b = spawn_upload(b.sender, body_b.clone());
    let client_mux = pair.client.clone();
    let client_b = tokio::spawn(async move {
        let Stream {
            sender: mut tx,
            receiver: mut rx,
            ..
        } = client_b;
        let got = read_all(&mut rx).await?;
        client_mux
            .send_control(ControlMessage::Response(response_head(b_id, 200, false)))
            .await?;
        send_chunked(&mut tx, b"stream b done").await?;
        Ok::<_, StreamError>((got, tx, rx))
    });
    let mut b_rx = b.receiver;
    let head = within("stream B's response head", b_head)
        .await
        .expect("head sender kept")
        .expect("stream B answered");
    assert_eq!(head.stream_id, b_id);
    let got = within("stream B's response body", read_all(&mut b_rx))
        .await
        .expect("stream B's response");
    assert_eq!(got, b"stream b done");
    within("stream B's upload", upload_b)
        .await
        .expect("task")
        .expect("stream B's upload");
    let (got_b, _tx, _rx) = within("stream B's client side", client_b)
        .await
        .expect("task")
        .expect("stream B's client side");
    assert_same_body(&got_b, &body_b, "stream B");

    // A is still stalled, and still within one window.
    assert!(
        !upload_a.is_finished(),
        "stream A finished without a reader"
    );

    // Now the client reads A: everything arrives and the upload completes.
    let got_a = within("stream A's body", read_all(&mut client_a.receiver))
        .await
        .expect("stream A");
    assert_same_body(&got_a, &body_a, "stream A");
    within("stream A's upload", upload_a)
        .await
        .expect("task")
        .expect("stream A's upload");

    // The same holds in the other direction: the client's sender stalls on the server's
    // unread receiver.
    send_response(&pair.client, client_a.id, 200, false).await;
    let mut upload_back = spawn_upload(client_a.sender, pattern(4 * WINDOW as usize, 5));
    assert!(
        timeout(NOT_YET, &mut upload_back).await.is_err(),
        "the response body was sent although the server reads nothing"
    );
    let got = within("stream A's response", read_all(&mut a_rx))
        .await
        .expect("stream A's response");
    assert_same_body(
        &got,
        &pattern(4 * WINDOW as usize, 5),
        "stream A's response",
    );
    within("stream A's response upload", upload_back)
        .await
        .expect("task")
        .expect("stream A's response upload");
}

/// The client may answer without reading the request body: dropping its receiver discards the
/// rest but keeps returning credit, so the server's upload still completes and the stream ends
/// cleanly instead of being reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_may_answer_without_reading_the_request_body() {
    let mut pair = mux_pair(config()).await;
    let (server, head_rx, client) = open_pair(&mut pair, false).await;
    let id = server.id;
    let Stream {
        sender: mut client_tx,
        receiver: client_rx,
        ..
    } = client;
    let upload = spawn_upload(server.sender, pattern(6 * WINDOW as usize, 6));

    drop(client_rx);
    send_response(&pair.client, id, 413, false).await;
    within(
        "the response body",
        send_chunked(&mut client_tx, b"too large, not read"),
    )
    .await
    .expect("response body");

    let mut server_rx = server.receiver;
    let head = within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("answered");
    assert_eq!(head.status, 413);
    let got = within("the response body", read_all(&mut server_rx))
        .await
        .expect("response body");
    assert_eq!(got, b"too large, not read");
    let server_tx = within("the discarded upload", upload)
        .await
        .expect("task")
        .expect("the upload completes although nobody reads it");
    // Nothing was reset on either side.
    assert!(server_tx.cancelled().now_or_never().is_none());
    assert!(client_tx.cancelled().now_or_never().is_none());
    assert!(server_rx.is_end_received());
}

// ---------------------------------------------------------------------------------------------
// 3. Cancellation
// ---------------------------------------------------------------------------------------------

/// The public client goes away: the server drops its receiver before the response ended. The
/// stream is reset; the client side's `cancelled()` resolves and its sends fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_server_receiver_resets_the_stream() {
    let mut pair = mux_pair(config()).await;
    let (server, head_rx, client) = open_pair(&mut pair, false).await;
    let id = server.id;
    let Stream {
        sender: mut client_tx,
        receiver: mut client_rx,
        ..
    } = client;
    send_response(&pair.client, id, 200, false).await;
    within("a chunk", client_tx.send(Bytes::from_static(b"partial")))
        .await
        .expect("first chunk");

    let Stream {
        sender: mut server_tx,
        receiver: mut server_rx,
        ..
    } = server;
    within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("answered");
    let chunk = within("a chunk", server_rx.next())
        .await
        .expect("a chunk")
        .expect("not an error");
    assert_eq!(chunk, "partial");
    drop(server_rx);

    within("the client to see the reset", client_tx.cancelled()).await;
    let err = client_tx
        .send(Bytes::from_static(b"more"))
        .await
        .expect_err("a send after the reset fails");
    assert!(
        matches!(
            err,
            StreamError::Reset {
                code: ResetCode::Cancelled,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client_tx.failure(), err);
    assert!(client_tx.finish().await.is_err());
    let next = within("the request body", client_rx.next()).await;
    assert!(
        matches!(
            next,
            Some(Err(StreamError::Reset {
                code: ResetCode::Cancelled,
                ..
            }))
        ),
        "{next:?}"
    );

    // Locally, the server's own sender is cancelled too.
    let err = server_tx
        .send(Bytes::from_static(b"x"))
        .await
        .expect_err("the stream is gone");
    assert_eq!(err, StreamError::Cancelled);

    // Only that stream: the connection is fine.
    assert!(!pair.server.is_closed() && !pair.client.is_closed());
    let (_s, _h, _c) = open_pair(&mut pair, true).await;
}

/// The local service is down: the client resets with `local_connect_failed`, and the server's
/// head receiver says exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_reset_reaches_the_server_head_receiver() {
    let mut pair = mux_pair(config()).await;
    let (mut server, head_rx, client) = open_pair(&mut pair, false).await;
    client.sender.reset(
        ResetCode::LocalConnectFailed,
        "connection refused: 127.0.0.1:3000",
    );

    let res = within("the head receiver", head_rx)
        .await
        .expect("head sender kept");
    let want = StreamError::Reset {
        code: ResetCode::LocalConnectFailed,
        message: "connection refused: 127.0.0.1:3000".into(),
    };
    assert_eq!(res, Err(want.clone()));
    within("the server to see the reset", server.sender.cancelled()).await;
    assert_eq!(
        server.sender.send(Bytes::from_static(b"body")).await,
        Err(want.clone())
    );
    assert_eq!(
        within("the response body", server.receiver.next()).await,
        Some(Err(want))
    );
    // The resetting side fails locally with `Cancelled`.
    let mut client = client;
    within("local cancel", client.sender.cancelled()).await;
    assert_eq!(
        client.sender.send(Bytes::from_static(b"x")).await,
        Err(StreamError::Cancelled)
    );
}

/// Dropping a whole stream before its end cancels it on the other side, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_whole_stream_cancels_the_peer() {
    let mut pair = mux_pair(config()).await;

    // Server drops the stream (public client left before the response).
    let (server, _head_rx, client) = open_pair(&mut pair, false).await;
    drop(server);
    within("the client to see the cancel", client.sender.cancelled()).await;
    assert!(matches!(
        client.sender.failure(),
        StreamError::Reset {
            code: ResetCode::Cancelled,
            ..
        }
    ));
    drop(client);

    // Client drops the stream without answering.
    let (server, head_rx, client) = open_pair(&mut pair, false).await;
    drop(client);
    let res = within("the head receiver", head_rx)
        .await
        .expect("head sender kept");
    assert!(
        matches!(
            res,
            Err(StreamError::Reset {
                code: ResetCode::Cancelled,
                ..
            })
        ),
        "{res:?}"
    );
    within("the server to see the cancel", server.sender.cancelled()).await;
    assert_eq!(pair.client.open_streams(), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Connection loss
// ---------------------------------------------------------------------------------------------

/// Aborting one side fails every pending head receiver, body receiver and sender on the other
/// side (and on the aborted side) with `ConnectionClosed`, and closes both event channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_fails_everything_on_both_sides() {
    let mut pair = mux_pair(config()).await;

    // Stream 1: no response yet; the server uploads more than a window, so it waits for credit.
    let (s1, head1, mut c1) = open_pair(&mut pair, false).await;
    let mut upload1 = spawn_upload(s1.sender, pattern(4 * WINDOW as usize, 7));
    assert!(timeout(NOT_YET, &mut upload1).await.is_err());

    // Stream 2: response head received, response body pending.
    let (s2, head2, mut c2) = open_pair(&mut pair, true).await;
    send_response(&pair.client, s2.id, 200, false).await;
    within("stream 2's head", head2)
        .await
        .expect("head sender kept")
        .expect("answered");
    let mut s2_rx = s2.receiver;

    pair.client.abort("test abort");

    // The server side notices promptly.
    assert_eq!(
        within("stream 1's head", head1)
            .await
            .expect("head sender kept"),
        Err(StreamError::ConnectionClosed)
    );
    assert_eq!(
        within("stream 2's body", s2_rx.next()).await,
        Some(Err(StreamError::ConnectionClosed))
    );
    assert_eq!(
        within("stream 1's upload", upload1)
            .await
            .expect("task")
            .err(),
        Some(StreamError::ConnectionClosed)
    );
    within("the server mux to close", pair.server.closed()).await;
    assert!(within("the server's events", pair.server_events.recv())
        .await
        .is_none());
    assert!(pair.server.close_reason().is_some());
    assert!(matches!(
        pair.server.open_stream(),
        Err(StreamError::ConnectionClosed)
    ));

    // The aborted side fails its own streams the same way.
    assert!(pair.client.is_closed());
    assert_eq!(pair.client.close_reason().as_deref(), Some("test abort"));
    assert_eq!(
        within("stream 1's request body", c1.receiver.next()).await,
        Some(Err(StreamError::ConnectionClosed))
    );
    assert_eq!(
        c2.sender.send(Bytes::from_static(b"x")).await,
        Err(StreamError::ConnectionClosed)
    );
    assert!(within("the client's events", pair.client_events.recv())
        .await
        .is_none());
}

/// The transport vanishing under a mux (the peer process died) has the same effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_transport_fails_everything() {
    let (mux, mut events, mut raw) = mux_server_raw_client(config()).await;
    let (mut answered, answered_head) = raw_open(&mux, &mut raw).await;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(answered.id, 200, false)),
    )
    .await;
    within("the head", answered_head)
        .await
        .expect("head sender kept")
        .expect("answered");
    let (mut pending, pending_head) = raw_open(&mux, &mut raw).await;

    drop(raw);

    assert_eq!(
        within("the pending head", pending_head)
            .await
            .expect("head sender kept"),
        Err(StreamError::ConnectionClosed)
    );
    assert_eq!(
        within("the response body", answered.receiver.next()).await,
        Some(Err(StreamError::ConnectionClosed))
    );
    assert_eq!(
        pending.sender.send(Bytes::from_static(b"x")).await,
        Err(StreamError::ConnectionClosed)
    );
    within("the mux to close", mux.closed()).await;
    assert!(within("the events", events.recv()).await.is_none());
    assert!(mux.close_reason().is_some());
}

/// A goodbye from the peer reaches the owner as an event; a close ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn goodbye_and_close_reach_the_peer() {
    let mut pair = mux_pair(config()).await;
    pair.server
        .announce(GoodbyeReason::ServerShutdown, "restarting")
        .await;
    match within("the goodbye", pair.client_events.recv()).await {
        Some(Event::Goodbye { reason, message }) => {
            assert_eq!(reason, GoodbyeReason::ServerShutdown);
            assert_eq!(message, "restarting");
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
    assert!(!pair.client.is_closed());

    within(
        "close",
        pair.client.close(GoodbyeReason::ClientShutdown, "ctrl-c"),
    )
    .await;
    assert!(pair.client.is_closed());
    match within("the goodbye", pair.server_events.recv()).await {
        Some(Event::Goodbye { reason, message }) => {
            assert_eq!(reason, GoodbyeReason::ClientShutdown);
            assert_eq!(message, "ctrl-c");
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
    within("the server mux to close", pair.server.closed()).await;
    assert!(within("the server's events", pair.server_events.recv())
        .await
        .is_none());
    let reason = pair.server.close_reason().expect("a close reason");
    assert!(reason.contains("ctrl-c"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// 5. Misbehaving peer
// ---------------------------------------------------------------------------------------------

/// Data past the window resets that stream with `flow_control`; the connection survives and
/// late frames for the reset stream are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_beyond_the_window_resets_with_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let (mut stream, head_rx) = raw_open(&mux, &mut raw).await;
    let id = stream.id;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 200, false)),
    )
    .await;
    within("the head", head_rx)
        .await
        .expect("head sender kept")
        .expect("answered");

    // One window exactly is fine; one more frame is not (nobody reads, no credit comes back).
    for _ in 0..(WINDOW / FRAME) {
        raw_send_data(&mut raw, id, false, vec![1; FRAME as usize]).await;
    }
    raw_send_data(&mut raw, id, false, vec![2; 1]).await;

    let (reset, skipped) = raw_until(&mut raw, |m| is_reset_of(m, id)).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(
        matches!(
            reset,
            ControlMessage::Reset {
                code: ResetCode::FlowControl,
                ..
            }
        ),
        "{reset:?}"
    );
    // The buffered window is dropped and the local reader sees an error, not a short body.
    let next = within("the body", stream.receiver.next()).await;
    assert!(matches!(next, Some(Err(_))), "{next:?}");

    // Late frames for the reset stream are ignored, and do not earn a second reset.
    raw_send_data(&mut raw, id, false, vec![3; FRAME as usize]).await;
    raw_send_data(&mut raw, id, true, Vec::new()).await;
    let seen = probe(&mux, &mut raw).await;
    assert!(!seen.iter().any(|m| is_reset_of(m, id)), "{seen:?}");
}

/// A text frame that is not a control message ends the connection: the mux says goodbye with
/// `protocol_error`, sends a close frame, and fails everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_text_frame_closes_the_connection() {
    let (mux, mut events, mut raw) = mux_server_raw_client(config()).await;
    let (_stream, head_rx) = raw_open(&mux, &mut raw).await;

    within(
        "a raw send",
        raw.send(Message::text("{\"type\":\"window\",")),
    )
    .await
    .expect("raw send");

    expect_protocol_error_close(&mut raw).await;
    within("the mux to close", mux.closed()).await;
    assert_eq!(
        within("the head", head_rx).await.expect("head sender kept"),
        Err(StreamError::ConnectionClosed)
    );
    assert!(within("the events", events.recv()).await.is_none());
}

/// Each of these ends the connection with a `protocol_error` goodbye and a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_protocol_violations_close_the_connection() {
    let bad: Vec<(&str, Message)> = vec![
        ("not json", Message::text("hello?")),
        ("unknown type", Message::text(r#"{"type":"nope"}"#)),
        (
            "truncated data frame",
            Message::Binary(Bytes::from_static(&[0, 0, 1])),
        ),
        (
            "unknown data flags",
            Message::Binary(Bytes::from_static(&[0, 0, 0, 1, 0x40, b'x'])),
        ),
        (
            "data frame above max_frame_size",
            Message::Binary(
                DataFrame {
                    stream_id: 1,
                    end: false,
                    payload: vec![0; FRAME as usize + 1].into(),
                }
                .encode(),
            ),
        ),
        (
            "request head sent to the server",
            Frame::Control(ControlMessage::Request(request_head(1, true)))
                .into_message()
                .expect("encodes"),
        ),
        (
            "hello after the start",
            Frame::Control(ControlMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent: "test".into(),
            }))
            .into_message()
            .expect("encodes"),
        ),
    ];
    for (what, msg) in bad {
        let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
        within("a raw send", raw.send(msg)).await.expect(what);
        expect_protocol_error_close(&mut raw).await;
        within(what, mux.closed()).await;
    }
}

/// Data frames for streams that do not exist (never opened, id 0, far ahead) are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_for_unknown_streams_is_ignored() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let (_stream, _head) = raw_open(&mux, &mut raw).await;
    raw_send_data(&mut raw, 999, false, vec![1; 100]).await;
    raw_send_data(&mut raw, 0, true, Vec::new()).await;
    raw_send_data(&mut raw, u32::MAX, false, vec![1; FRAME as usize]).await;
    raw_send(
        &mut raw,
        ControlMessage::Window {
            stream_id: 4242,
            increment: 1,
        },
    )
    .await;
    raw_send(
        &mut raw,
        ControlMessage::Reset {
            stream_id: 4242,
            code: ResetCode::Cancelled,
            message: String::new(),
        },
    )
    .await;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(4242, 200, true)),
    )
    .await;
    let seen = probe(&mux, &mut raw).await;
    assert!(seen.is_empty(), "{seen:?}");
    // The probe's stream is gone again; the first one is untouched.
    assert_eq!(mux.open_streams(), 1);
}

/// A second response head for one stream resets that stream with `protocol_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_response_head_resets_with_protocol_error() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let (mut stream, head_rx) = raw_open(&mux, &mut raw).await;
    let id = stream.id;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 200, false)),
    )
    .await;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 500, false)),
    )
    .await;
    let head = within("the head", head_rx)
        .await
        .expect("head sender kept")
        .expect("the first head");
    assert_eq!(head.status, 200);
    let (reset, _) = raw_until(&mut raw, |m| is_reset_of(m, id)).await;
    assert!(
        matches!(
            reset,
            ControlMessage::Reset {
                code: ResetCode::ProtocolError,
                ..
            }
        ),
        "{reset:?}"
    );
    let next = within("the body", stream.receiver.next()).await;
    assert!(matches!(next, Some(Err(_))), "{next:?}");
    probe(&mux, &mut raw).await;
}

/// An absurd credit grant (`u32::MAX`, many times) resets the stream with `flow_control`
/// exactly once, without a panic, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_window_increment_resets_with_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let (stream, _head_rx) = raw_open(&mux, &mut raw).await;
    let id = stream.id;
    let Stream {
        sender: mut tx,
        receiver: _rx,
        ..
    } = stream;
    for _ in 0..200 {
        raw_send(
            &mut raw,
            ControlMessage::Window {
                stream_id: id,
                increment: u32::MAX,
            },
        )
        .await;
    }
    let (reset, skipped) = raw_until(&mut raw, |m| is_reset_of(m, id)).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(
        matches!(
            reset,
            ControlMessage::Reset {
                code: ResetCode::FlowControl,
                ..
            }
        ),
        "{reset:?}"
    );
    within("the local side to see the reset", tx.cancelled()).await;
    assert!(tx.send(Bytes::from_static(b"x")).await.is_err());

    // A grant that only adds up to too much is caught too.
    let (other, _other_head) = raw_open(&mux, &mut raw).await;
    let other_id = other.id;
    for _ in 0..3 {
        raw_send(
            &mut raw,
            ControlMessage::Window {
                stream_id: other_id,
                increment: 1 << 29,
            },
        )
        .await;
    }
    let (reset, _) = raw_until(&mut raw, |m| is_reset_of(m, other_id)).await;
    assert!(
        matches!(
            reset,
            ControlMessage::Reset {
                code: ResetCode::FlowControl,
                ..
            }
        ),
        "{reset:?}"
    );

    let seen = probe(&mux, &mut raw).await;
    assert!(
        !seen
            .iter()
            .any(|m| is_reset_of(m, id) || is_reset_of(m, other_id)),
        "a stream was reset twice: {seen:?}"
    );
}

/// The client role refuses streams past `max_streams` with a `refused` reset, and treats a
/// reused stream id as a protocol violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_refuses_streams_past_its_limit_and_reused_ids() {
    let cfg = MuxConfig {
        max_streams: 2,
        ..config()
    };
    let (_mux, mut events, mut raw) = mux_client_raw_server(cfg).await;
    for id in 1..=3 {
        raw_send(&mut raw, ControlMessage::Request(request_head(id, true))).await;
    }
    let (_, s1) = next_request(&mut events).await;
    let (_, s2) = next_request(&mut events).await;
    assert_eq!((s1.id, s2.id), (1, 2));
    let (reset, skipped) = raw_until(&mut raw, |m| is_reset_of(m, 3)).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(
        matches!(
            reset,
            ControlMessage::Reset {
                code: ResetCode::Refused,
                ..
            }
        ),
        "{reset:?}"
    );

    raw_send(&mut raw, ControlMessage::Request(request_head(1, true))).await;
    expect_protocol_error_close(&mut raw).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Keepalive
// ---------------------------------------------------------------------------------------------

/// A peer that never reads nor answers pings is declared dead after `dead_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_dropped() {
    let (mux_end, _peer_end) = tokio::io::duplex(1 << 20);
    let ws = ours(mux_end, Role::Server);
    let cfg = MuxConfig {
        ping_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(200),
        ..config()
    };
    let (mux, mut events) = mux::start(ws, cfg, mux::Role::Server);
    let (_stream, head_rx) = mux.open_stream().expect("open");

    within_for(
        Duration::from_secs(2),
        "the dead peer to be dropped",
        mux.closed(),
    )
    .await;
    let reason = mux.close_reason().expect("a close reason");
    assert!(reason.contains("pong"), "{reason}");
    assert_eq!(
        within("the head", head_rx).await.expect("head sender kept"),
        Err(StreamError::ConnectionClosed)
    );
    assert!(within("the events", events.recv()).await.is_none());
}

/// Two live muxes with the same aggressive keepalive stay connected while idle: pings are
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_live_peers_stay_connected() {
    let cfg = MuxConfig {
        ping_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(200),
        ..config()
    };
    let mut pair = mux_pair(cfg).await;
    // Negative check: several dead_after periods pass without either side closing.
    assert!(timeout(Duration::from_millis(800), pair.server.closed())
        .await
        .is_err());
    assert!(!pair.client.is_closed(), "{:?}", pair.client.close_reason());
    let (_s, _h, _c) = open_pair(&mut pair, true).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Stream limit
// ---------------------------------------------------------------------------------------------

/// With `max_streams` 2 the server refuses a third concurrent stream, and accepts one again
/// once a stream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_streams_past_its_limit() {
    let cfg = MuxConfig {
        max_streams: 2,
        ..config()
    };
    let pair = mux_pair(cfg).await;
    let first = pair.server.open_stream().expect("first stream");
    let _second = pair.server.open_stream().expect("second stream");
    match pair.server.open_stream() {
        Err(StreamError::Reset {
            code: ResetCode::Refused,
            ..
        }) => {}
        other => panic!("expected a refused reset, got {other:?}"),
    }
    assert_eq!(pair.server.open_streams(), 2);
    drop(first);
    let (third, _) = pair.server.open_stream().expect("room again");
    assert!(third.id > 2, "stream ids are never reused");
}

// ---------------------------------------------------------------------------------------------
// Defects (ignored until fixed)
// ---------------------------------------------------------------------------------------------

/// `close_reason()` should say why the connection ended. After a protocol violation it says
/// "closed locally": the writer task records that reason first (it stops after writing the
/// close frame the reader queued), and `shutdown` keeps only the first reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reason_names_the_protocol_error() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    within("a raw send", raw.send(Message::text("{")))
        .await
        .expect("raw send");
    within("the mux to close", mux.closed()).await;
    let reason = mux.close_reason().expect("a reason");
    assert!(
        reason.contains("protocol error"),
        "close_reason() = {reason:?}"
    );
}

/// The same first-reason-wins race loses the message given to `Mux::close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reason_names_the_local_close_message() {
    let pair = mux_pair(config()).await;
    within(
        "close",
        pair.client
            .close(GoodbyeReason::ClientShutdown, "user pressed ctrl-c"),
    )
    .await;
    let reason = pair.client.close_reason().expect("a reason");
    assert!(reason.contains("ctrl-c"), "close_reason() = {reason:?}");
}

/// When the peer sends past its window, the local owner of the stream is told
/// `StreamError::FlowControl` ("the peer sent more bytes than it had credit for"). Today the
/// variant is never constructed: `Shared::reset_local` always fails the stream with
/// `StreamError::Cancelled`, indistinguishable from our own cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_violation_is_reported_locally_as_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let (mut stream, head_rx) = raw_open(&mux, &mut raw).await;
    let id = stream.id;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 200, false)),
    )
    .await;
    within("the head", head_rx)
        .await
        .expect("head sender kept")
        .expect("answered");
    for _ in 0..=(WINDOW / FRAME) {
        raw_send_data(&mut raw, id, false, vec![1; FRAME as usize]).await;
    }
    raw_until(&mut raw, |m| is_reset_of(m, id)).await;
    assert_eq!(
        within("the body", stream.receiver.next()).await,
        Some(Err(StreamError::FlowControl))
    );
}

/// A server mux whose peer stopped reading: the writer task is blocked writing into a full
/// transport, and a stream's sender is blocked on the full writer queue.
struct StuckWriter {
    mux: Mux,
    /// The peer's end of the transport, never read.
    peer_end: DuplexStream,
    /// The blocked upload.
    upload: JoinHandle<Result<BodySender, StreamError>>,
    // Kept alive so that nothing but the test ends the connection or the stream.
    _events: mpsc::Receiver<Event>,
    _receiver: BodyReceiver,
    _head: HeadRx,
}

async fn mux_with_stuck_writer() -> StuckWriter {
    let (mux_end, peer_end) = tokio::io::duplex(16 * 1024);
    let ws = ours(mux_end, Role::Server);
    let cfg = MuxConfig {
        initial_window: 4 << 20,
        ..config()
    };
    let (mux, events) = mux::start(ws, cfg, mux::Role::Server);
    let (stream, head) = mux.open_stream().expect("open");
    let upload = spawn_upload(stream.sender, pattern(4 << 20, 8));
    // Wait until the sender stops making progress: the writer queue is full and the writer
    // is stuck on the transport. (Polling: there is no event to wait for.)
    let mut last = u64::MAX;
    within("the writer to get stuck", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (sent, _) = mux.bytes();
            if sent == last && sent > 0 {
                break;
            }
            last = sent;
        }
    })
    .await;
    assert!(!upload.is_finished());
    assert!(!mux.is_closed());
    StuckWriter {
        mux,
        peer_end,
        upload,
        _events: events,
        _receiver: stream.receiver,
        _head: head,
    }
}

/// After `abort()` (or keepalive giving up, or any other shutdown) every pending send must
/// fail with `ConnectionClosed`. A send waiting for room in the writer queue does not:
/// `BodySender::send_frame` (and `Mux::send_control`) await `shared.out.send()` without watching
/// the connection's cancellation, and the queue never drains because the writer is itself
/// stuck on the transport (see the next test), so the send hangs forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_blocked_on_a_stuck_writer_fail_after_abort() {
    let stuck = mux_with_stuck_writer().await;
    stuck.mux.abort("giving up on this peer");
    assert_eq!(
        within("the upload to fail", stuck.upload)
            .await
            .expect("task")
            .err(),
        Some(StreamError::ConnectionClosed)
    );
}

/// After a shutdown the mux should let go of the transport so the socket closes. The writer
/// task only watches for cancellation between messages, never while blocked in `feed`/`flush`,
/// so against a peer that stopped reading it stays blocked forever and keeps the socket (and
/// its buffers, and the queued messages) alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_releases_the_transport_even_if_the_peer_stopped_reading() {
    let mut stuck = mux_with_stuck_writer().await;
    stuck.mux.abort("giving up on this peer");
    // Once the mux dropped its end, writing to ours fails with BrokenPipe.
    let released = timeout(Duration::from_secs(2), async {
        while stuck.peer_end.write_all(&[0; 1024]).await.is_ok() {}
    })
    .await;
    assert!(
        released.is_ok(),
        "the mux still holds the transport 2s after abort()"
    );
}

/// `Mux::close` promises a bounded wait, but it first `send().await`s the goodbye into the
/// writer queue; with the queue full and the writer stuck on a peer that stopped reading, it
/// never returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_even_if_the_peer_stopped_reading() {
    let stuck = mux_with_stuck_writer().await;
    let closed = timeout(
        Duration::from_secs(5),
        stuck.mux.close(GoodbyeReason::ServerShutdown, "bye"),
    )
    .await;
    assert!(closed.is_ok(), "close() did not return within 5s");
    assert!(stuck.mux.is_closed());
}

#[tokio::test]
async fn send_last_ends_the_direction_on_its_final_frame() {
    let mut pair = mux_pair(config()).await;
    let (server_stream, head_rx, client_stream) = open_pair(&mut pair, true).await;
    let id = server_stream.id;
    send_response(&pair.client, id, 200, false).await;
    let Stream {
        sender: mut tx,
        receiver: client_rx,
        ..
    } = client_stream;
    // Larger than a frame and than the window: split, waits for credit, END on the last frame.
    let body = pattern(3 * WINDOW as usize + 17, 9);
    let sending = {
        let body = body.clone();
        tokio::spawn(async move {
            tx.send_last(bytes::Bytes::from(body)).await?;
            Ok::<_, StreamError>((tx, client_rx))
        })
    };
    within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("a response head");
    let Stream {
        sender: server_tx,
        receiver: mut server_rx,
        ..
    } = server_stream;
    let got = within("the body", read_all(&mut server_rx))
        .await
        .expect("a clean end");
    assert_same_body(&got, &body, "send_last body");
    // Both directions ended cleanly: dropping everything resets nothing.
    let (tx, rx) = within("the sender", sending)
        .await
        .expect("joined")
        .expect("sent");
    let mut client_events = pair.client_events;
    drop((tx, rx, server_tx, server_rx));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client_events.recv())
            .await
            .is_err(),
        "nothing further arrives"
    );
    assert_eq!(pair.server.open_streams(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Round-trip time and window auto-tuning
// ---------------------------------------------------------------------------------------------

/// The round-trip estimate comes from pongs that answer the mux's own latest ping, matched by
/// payload: unsolicited pongs (RFC 6455 allows them), pongs with another payload and repeated
/// pongs change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_comes_from_pongs_that_answer_our_ping() {
    let (s, raw) = tokio::io::duplex(1 << 20);
    let mut raw = WebSocketStream::from_raw_socket(raw, WsRole::Client, None).await;
    let (mux, _events) = mux::start(ours(s, Role::Server), config(), Role::Server);
    let ping = match within("the opening ping", raw.next()).await {
        Some(Ok(Message::Ping(payload))) => payload,
        other => panic!("expected the opening ping, got {other:?}"),
    };
    let read_ping_at = std::time::Instant::now();
    assert_eq!(ping.len(), 8, "a probe counter");
    let mut other = ping.to_vec();
    other[7] ^= 1;
    // Sending our own pong replaces the answer tungstenite queued for the ping, so the mux only
    // ever sees the pongs sent here.
    for pong in [other, Vec::new(), vec![1, 2, 3], vec![0; 9]] {
        within("a pong", raw.send(Message::Pong(pong.into())))
            .await
            .expect("pong sent");
    }
    // The probe's request and answer come after those pongs: once it is answered, they have
    // been read.
    probe(&mux, &mut raw).await;
    assert_eq!(mux.rtt(), None, "a pong that answers no ping of ours");

    let answered_after = read_ping_at.elapsed();
    within("the pong", raw.send(Message::Pong(ping.clone())))
        .await
        .expect("pong sent");
    let rtt = within("a round-trip estimate", async {
        loop {
            if let Some(rtt) = mux.rtt() {
                break rtt;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    // The ping was written before we read it, and answered `answered_after` later.
    assert!(rtt >= answered_after, "{rtt:?} < {answered_after:?}");
    assert!(rtt <= PROMPT, "{rtt:?}");

    // The same pong again is no new sample.
    within("the pong", raw.send(Message::Pong(ping)))
        .await
        .expect("pong sent");
    probe(&mux, &mut raw).await;
    assert_eq!(mux.rtt(), Some(rtt));
}

/// One-way delay of the delay line in the auto-tuning tests: a 40 ms round trip, like a laptop
/// far from its server.
const DELAY: Duration = Duration::from_millis(20);

/// Forwards everything read from `from` to `to`, each chunk held for `delay` first: latency
/// without a bandwidth cap, like a long network path. Ends when `from` ends or `to` fails.
fn delay_line(
    mut from: ReadHalf<DuplexStream>,
    mut to: WriteHalf<DuplexStream>,
    delay: Duration,
) -> JoinHandle<()> {
    // Bounded in chunks; what is in flight is bounded by the mux's windows anyway.
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Bytes)>(1 << 16);
    tokio::spawn(async move {
        let reader = async move {
            loop {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                match from.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let due = tokio::time::Instant::now() + delay;
                        if tx.send((due, buf.freeze())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        let writer = async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // The other end may be gone already; nothing to tell then.
            let _ = to.shutdown().await;
        };
        tokio::join!(reader, writer);
    })
}

/// A server mux and a client mux connected through a delay line of `delay` each way.
async fn delayed_mux_pair(cfg: MuxConfig, delay: Duration) -> Pair {
    let (server_io, server_relay) = tokio::io::duplex(1 << 20);
    let (client_io, client_relay) = tokio::io::duplex(1 << 20);
    let (server_relay_rd, server_relay_wr) = tokio::io::split(server_relay);
    let (client_relay_rd, client_relay_wr) = tokio::io::split(client_relay);
    delay_line(server_relay_rd, client_relay_wr, delay);
    delay_line(client_relay_rd, server_relay_wr, delay);
    let s = ours(server_io, Role::Server);
    let c = ours(client_io, Role::Client);
    let (server, server_events) = mux::start(s, cfg.clone(), mux::Role::Server);
    let (client, client_events) = mux::start(c, cfg, mux::Role::Client);
    Pair {
        server,
        server_events,
        client,
        client_events,
    }
}

/// Waits (polling: there is no event for it) until `mux` has a round-trip estimate.
async fn rtt_of(mux: &Mux) -> Duration {
    within("a round-trip estimate", async {
        loop {
            if let Some(rtt) = mux.rtt() {
                break rtt;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// Configuration of the auto-tuning tests: a small initial window, growth allowed to `max`.
fn tuning_config(max_window: u32) -> MuxConfig {
    MuxConfig {
        initial_window: WINDOW,
        max_window,
        max_frame_size: 64 * 1024,
        ..config()
    }
}

/// A response body streamed from the client mux to the server mux over one stream.
struct Download {
    pair: Pair,
    /// The server's receiving half.
    rx: BodyReceiver,
    /// The client's sending task (aborted when this is dropped, resetting the stream).
    upload: JoinHandle<Result<(), StreamError>>,
    /// What is sent.
    body: Bytes,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.upload.abort();
    }
}

/// Opens a stream over a delayed pair (once the server has a round-trip estimate) and has the
/// client send `body` as the response, as fast as credit allows.
async fn start_download(cfg: MuxConfig, body: Bytes) -> Download {
    let mut pair = delayed_mux_pair(cfg, DELAY).await;
    let rtt = rtt_of(&pair.server).await;
    assert!(
        rtt >= 2 * DELAY,
        "a round trip crosses the delay line twice: {rtt:?}"
    );
    let (server_stream, head_rx, client_stream) = open_pair(&mut pair, true).await;
    let id = server_stream.id;
    send_response(&pair.client, id, 200, false).await;
    within("the response head", head_rx)
        .await
        .expect("head sender kept")
        .expect("a response head");
    let mut tx = client_stream.sender;
    let sent = body.clone();
    let upload = tokio::spawn(async move {
        // In several sends, like a proxied body, the last one with the end marker.
        let mut rest = sent;
        while rest.len() > 256 * 1024 {
            tx.send(rest.split_to(256 * 1024)).await?;
        }
        tx.send_last(rest).await
    });
    Download {
        pair,
        rx: server_stream.receiver,
        upload,
        body,
    }
}

/// How far a download got.
#[derive(Debug)]
struct Progress {
    received: usize,
    elapsed: Duration,
    window: u32,
    rtt: Duration,
}

/// Reads the download as fast as possible until its end or `budget`, checking every byte.
async fn read_download(d: &mut Download, budget: Duration) -> Progress {
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let mut received = 0;
    loop {
        match tokio::time::timeout_at(deadline, d.rx.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(chunk)) => {
                let chunk = chunk.expect("no stream failure");
                let want = d.body.get(received..received + chunk.len());
                assert!(want == Some(&chunk[..]), "wrong bytes at {received}");
                received += chunk.len();
            }
        }
    }
    Progress {
        received,
        elapsed: started.elapsed(),
        window: d.rx.window(),
        rtt: d.pair.server.rtt().expect("measured before"),
    }
}

/// Over a 40 ms round trip, a 64 KiB window caps a stream at 64 KiB per round trip (1.6 MB/s).
/// With auto-tuning the receiver's window grows while its reader keeps up, and the same stream
/// moves far more bytes in the same time than with the window fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_grows_to_fill_a_long_path() {
    const TOTAL: usize = 16 << 20;
    const MAX: u32 = 4 << 20;
    let body = Bytes::from(pattern(TOTAL, 11));

    let mut tuned = start_download(tuning_config(MAX), body.clone()).await;
    assert_eq!(
        tuned.rx.window(),
        WINDOW,
        "every stream starts at the initial window"
    );
    let fast = read_download(&mut tuned, Duration::from_secs(6)).await;
    assert_eq!(
        fast.received, TOTAL,
        "the tuned download completes: {fast:?}"
    );
    within("the upload", &mut tuned.upload)
        .await
        .expect("task")
        .expect("upload");
    assert!(
        fast.window > WINDOW && fast.window <= MAX,
        "the window grew, within its bound: {fast:?}"
    );
    drop(tuned);

    // The same download with the window fixed, for as long as the tuned one took.
    let mut fixed = start_download(tuning_config(WINDOW), body).await;
    let slow = read_download(&mut fixed, fast.elapsed).await;
    assert_eq!(slow.window, WINDOW, "max == initial: no growth");
    let rate = |p: &Progress| p.received as f64 / p.elapsed.as_secs_f64() / 1e6;
    eprintln!(
        "auto-tuned: {} bytes in {:?} ({:.1} MB/s), window {} bytes, srtt {:?}; \
         fixed: {} bytes in {:?} ({:.1} MB/s), srtt {:?}",
        fast.received,
        fast.elapsed,
        rate(&fast),
        fast.window,
        fast.rtt,
        slow.received,
        slow.elapsed,
        rate(&slow),
        slow.rtt
    );
    assert!(
        slow.received * 2 < fast.received,
        "auto-tuning moved less than twice the bytes of a fixed window: {fast:?} vs {slow:?}"
    );
    // And the fixed window is indeed held to about one window per round trip.
    let bound = f64::from(WINDOW) * (slow.elapsed.as_secs_f64() / slow.rtt.as_secs_f64() + 1.0);
    assert!(
        (slow.received as f64) <= bound,
        "a fixed window moved more than one window per round trip: {slow:?}"
    );
}

/// A reader slower than one window per two round trips never grows its window, although each
/// time it reads it drains its full buffer in a burst (so its credit updates come close
/// together): a slow reader must not cost memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_the_initial_window() {
    const ROUNDS: usize = 6;
    let body = Bytes::from(pattern(4 << 20, 12));
    // Frames a quarter of the window: each burst is four chunks, and four credit updates.
    let cfg = MuxConfig {
        max_frame_size: FRAME,
        ..tuning_config(4 << 20)
    };
    let mut d = start_download(cfg, body).await;
    let rtt = d.pair.server.rtt().expect("measured");
    let mut consumed = 0u64;
    for round in 0..ROUNDS {
        // Wait (polling: there is no event for it) until the buffer holds a full window: the
        // sender is blocked on credit, the reader is the bottleneck.
        within("the buffer to fill", async {
            while d.pair.server.bytes().1 < consumed + u64::from(WINDOW) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert_eq!(
            d.pair.server.bytes().1,
            consumed + u64::from(WINDOW),
            "never more than a window buffered (round {round})"
        );
        // The reader's own slowness: it comes back only after a few round trips.
        tokio::time::sleep(3 * rtt).await;
        // Then drains the full window at once, passing each chunk on (a yield, like a socket
        // write with room in its buffer), so that the writer sends a credit update per chunk.
        let mut burst = 0;
        while burst < WINDOW as usize {
            let chunk = within("a chunk", d.rx.next())
                .await
                .expect("more body")
                .expect("no stream failure");
            burst += chunk.len();
            tokio::task::yield_now().await;
        }
        consumed += burst as u64;
        assert_eq!(d.rx.window(), WINDOW, "the window grew in round {round}");
    }
    assert!(!d.upload.is_finished(), "the sender is still held back");
}
