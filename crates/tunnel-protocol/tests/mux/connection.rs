//! The connection as a whole: loss, goodbye and close, keepalive, the stream limit, close
//! reasons, and a peer that stopped reading (these began as reproductions of defects found in
//! review: writer stuck on a non-reading peer, unbounded close, lost close reasons).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tunnel_protocol::mux::{
    self, BodySender, ClientEvent, Goodbye, MuxConfig, ResponseFuture, Role, ServerMux,
};
use tunnel_protocol::{ControlMessage, GoodbyeReason, ResetCode, StreamError};

use crate::raw::*;
use crate::support::*;

/// Aborting one side fails every pending head receiver, body receiver and sender on the other
/// side (and on the aborted side) with `ConnectionClosed`, and closes both event channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_fails_everything_on_both_sides() {
    let mut pair = mux_pair(config()).await;

    // Stream 1: no response yet; the server uploads more than a window, so it waits for credit.
    let (mut s1, mut c1) = open_pair(&mut pair, false).await;
    let mut upload1 = spawn_upload(s1.sender(), pattern(4 * WINDOW as usize, 7));
    assert!(timeout(NOT_YET, &mut upload1).await.is_err());

    // Stream 2: response head received, response body pending.
    let (s2, c2) = open_pair(&mut pair, true).await;
    let mut c2_tx = respond(c2.responder, 200, false)
        .await
        .expect("a body follows");
    let mut s2_rx = response(s2.response).await.expect("answered").body;

    pair.client.abort("test abort");

    // The server side notices promptly.
    assert_eq!(
        response(s1.response).await.err(),
        Some(StreamError::ConnectionClosed)
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
        pair.server.open_stream(request_parts()).await,
        Err(StreamError::ConnectionClosed)
    ));

    // The aborted side fails its own streams the same way.
    assert!(pair.client.is_closed());
    assert_eq!(pair.client.close_reason().as_deref(), Some("test abort"));
    assert_eq!(
        within("stream 1's request body", c1.body.next()).await,
        Some(Err(StreamError::ConnectionClosed))
    );
    assert_eq!(
        c2_tx.send(Bytes::from_static(b"x")).await,
        Err(StreamError::ConnectionClosed)
    );
    // Whoever waits for a stream's cancellation hears of the connection's end too (each
    // stream's own signal, set by the shutdown).
    within("stream 1's responder to hear", c1.responder.cancelled()).await;
    within("stream 2's sender to hear", c2_tx.cancelled()).await;
    assert!(within("the client's events", pair.client_events.recv())
        .await
        .is_none());
}

/// The transport vanishing under a mux (the peer process died) has the same effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_transport_fails_everything() {
    let (mux, mut events, mut raw) = mux_server_raw_client(config()).await;
    let answered = raw_open(&mux, &mut raw, true).await;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(answered.id, 200, false)),
    )
    .await;
    let mut answered_rx = response(answered.response).await.expect("answered").body;
    let mut pending = raw_open(&mux, &mut raw, false).await;
    let mut pending_tx = pending.sender();

    drop(raw);

    assert_eq!(
        response(pending.response).await.err(),
        Some(StreamError::ConnectionClosed)
    );
    assert_eq!(
        within("the response body", answered_rx.next()).await,
        Some(Err(StreamError::ConnectionClosed))
    );
    assert_eq!(
        pending_tx.send(Bytes::from_static(b"x")).await,
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
        Some(ClientEvent::Goodbye(Goodbye { reason, message })) => {
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
    let goodbye = within("the goodbye", pair.server_events.recv()).await;
    assert_eq!(
        goodbye,
        Some(Goodbye {
            reason: GoodbyeReason::ClientShutdown,
            message: "ctrl-c".into()
        })
    );
    within("the server mux to close", pair.server.closed()).await;
    assert!(within("the server's events", pair.server_events.recv())
        .await
        .is_none());
    let reason = pair.server.close_reason().expect("a close reason");
    assert!(reason.contains("ctrl-c"), "{reason}");
}

/// The server's GOAWAY: an announced goodbye marks the connection as going away, and a close
/// when idle lets the stream in flight finish (its response arrives) before the connection
/// closes with its goodbye; a stream opened after that is refused, nothing of it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_when_idle_lets_the_stream_in_flight_finish() {
    let mut pair = mux_pair(config()).await;
    assert!(!pair.server.is_going_away());
    pair.server
        .announce(GoodbyeReason::ServerShutdown, "restarting")
        .await;
    assert!(pair.server.is_going_away());
    match within("the goodbye", pair.client_events.recv()).await {
        Some(ClientEvent::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::ServerShutdown),
        other => panic!("expected a goodbye, got {other:?}"),
    }
    let (opened, request) = open_pair(&mut pair, true).await;
    let server = pair.server.clone();
    let closing = tokio::spawn(async move {
        let most = Duration::from_secs(30);
        server
            .close_when_idle(GoodbyeReason::Replaced, "moved", most)
            .await
    });
    assert!(timeout(NOT_YET, pair.server.closed()).await.is_err());
    respond(request.responder, 200, true).await;
    let answered = response(opened.response).await.expect("answered");
    assert_eq!(answered.head.status, 200);
    drop(answered);
    within("the close", closing).await.expect("task");
    assert!(pair.server.is_closed());
    assert!(matches!(
        pair.server.send_request(request_parts()).await,
        Err(StreamError::ConnectionClosed)
    ));
    match within("the goodbye", pair.client_events.recv()).await {
        Some(ClientEvent::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Replaced),
        other => panic!("expected a goodbye, got {other:?}"),
    }
}

/// A server mux holding its streams until the welcome: a request opened before the welcome
/// goes out behind it (a client waiting for its welcome takes anything else for a broken
/// handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_held_until_the_welcome_go_out_behind_it() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    mux.hold_streams_until_welcome();
    let opener = mux.clone();
    let mut opening = tokio::spawn(async move { open_request(&opener, true).await });
    assert!(timeout(NOT_YET, &mut opening).await.is_err());
    let welcome = tunnel_protocol::Welcome {
        protocol_version: tunnel_protocol::PROTOCOL_VERSION,
        tunnel_id: "abc".into(),
        public_url: "http://localhost/abc/".into(),
        initial_window: WINDOW,
        max_window: None,
        max_frame_size: FRAME,
        ping_interval_secs: 20,
    };
    mux.welcome(welcome).await.expect("welcome queued");
    assert!(matches!(
        raw_control(&mut raw).await,
        ControlMessage::Welcome(_)
    ));
    let opened = within("the held request", opening).await.expect("task");
    match raw_control(&mut raw).await {
        ControlMessage::Request(head) => assert_eq!(head.stream_id, opened.id),
        other => panic!("expected the request, got {other:?}"),
    }
}

/// A close when idle that waits too long cuts the streams still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_when_idle_cuts_what_outlasts_its_wait() {
    let mut pair = mux_pair(config()).await;
    let (opened, _request) = open_pair(&mut pair, true).await;
    let most = Duration::from_millis(100);
    within(
        "the close",
        pair.server
            .close_when_idle(GoodbyeReason::Replaced, "moved", most),
    )
    .await;
    assert_eq!(
        response(opened.response).await.err(),
        Some(StreamError::ConnectionClosed)
    );
}

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
    let (mux, mut events) = mux::start_server(ws, cfg);
    let opened = open_request(&mux, true).await;

    within_for(
        Duration::from_secs(2),
        "the dead peer to be dropped",
        mux.closed(),
    )
    .await;
    let reason = mux.close_reason().expect("a close reason");
    assert!(reason.contains("pong"), "{reason}");
    assert_eq!(
        response(opened.response).await.err(),
        Some(StreamError::ConnectionClosed)
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
    let (_opened, _request) = open_pair(&mut pair, true).await;
}

/// With `max_streams` 2 the server refuses a third concurrent stream, and accepts one again
/// once a stream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_streams_past_its_limit() {
    let cfg = MuxConfig {
        max_streams: 2,
        ..config()
    };
    let pair = mux_pair(cfg).await;
    let first = open_request(&pair.server, false).await;
    let _second = open_request(&pair.server, true).await;
    match pair.server.open_stream(request_parts()).await {
        Err(StreamError::Reset {
            code: ResetCode::Refused,
            ..
        }) => {}
        other => panic!("expected a refused reset, got {other:?}"),
    }
    assert_eq!(pair.server.open_streams(), 2);
    drop(first);
    let third = open_request(&pair.server, false).await;
    assert!(third.id > 2, "stream ids are never reused");
}

/// `close_reason()` says why the connection ended: after a protocol violation, that violation,
/// not the writer's "closed locally" once it has written the close frame the reader queued
/// (the first reason recorded wins, and the reader records its reason first).
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

/// Likewise the message given to `Mux::close` is the reason, not the writer's own.
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

/// A server mux whose peer stopped reading: the writer task is blocked writing into a full
/// transport, and a stream's sender is blocked on the full writer queue.
struct StuckWriter {
    mux: ServerMux,
    /// The peer's end of the transport, never read.
    peer_end: DuplexStream,
    /// The blocked upload.
    upload: JoinHandle<Result<BodySender, StreamError>>,
    // Kept alive so that nothing but the test ends the connection or the stream.
    _events: mpsc::Receiver<Goodbye>,
    _response: ResponseFuture,
}

async fn mux_with_stuck_writer() -> StuckWriter {
    let (mux_end, peer_end) = tokio::io::duplex(16 * 1024);
    let ws = ours(mux_end, Role::Server);
    let cfg = MuxConfig {
        initial_window: 4 << 20,
        ..config()
    };
    let (mux, events) = mux::start_server(ws, cfg);
    let mut opened = open_request(&mux, false).await;
    let upload = spawn_upload(opened.sender(), pattern(4 << 20, 8));
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
        _response: opened.response,
    }
}

/// After `abort()` (or keepalive giving up, or any other shutdown) every pending send fails
/// with `ConnectionClosed`, also a send waiting for room in the writer queue, which never
/// drains while the writer is stuck on the transport: every queueing watches the connection's
/// cancellation.
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

/// After a shutdown the mux lets go of the transport so the socket closes, even while its
/// writer is blocked writing to a peer that stopped reading: cancellation wins over a blocked
/// write, instead of the socket (and its buffers, and the queued messages) staying alive.
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

/// `Mux::close` waits a bounded time, even when the goodbye cannot even be queued (the queue
/// full, the writer stuck on a peer that stopped reading).
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
