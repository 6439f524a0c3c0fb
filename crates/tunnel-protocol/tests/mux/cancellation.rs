//! Cancellation: whichever side gives up on a stream, the other learns it at once.

use bytes::Bytes;
use futures_util::StreamExt;
use tunnel_protocol::{ResetCode, StreamError};

use crate::support::*;

fn is_cancelled_by_peer(e: &StreamError) -> bool {
    matches!(
        e,
        StreamError::Reset {
            code: ResetCode::Cancelled,
            ..
        }
    )
}

/// The public client goes away: the server drops its receiver before the response ended. The
/// stream is reset; the client side's `cancelled()` resolves and its sends fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_server_receiver_resets_the_stream() {
    let mut pair = mux_pair(config()).await;
    let (mut opened, request) = open_pair(&mut pair, false).await;
    let mut client_rx = request.body;
    let mut client_tx = respond(request.responder, 200, false)
        .await
        .expect("a body follows");
    within("a chunk", client_tx.send(Bytes::from_static(b"partial")))
        .await
        .expect("first chunk");

    let mut server_tx = opened.sender();
    let mut server_rx = response(opened.response).await.expect("answered").body;
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
    assert!(is_cancelled_by_peer(&err), "{err:?}");
    assert_eq!(client_tx.failure(), err);
    assert!(client_tx.finish().await.is_err());
    let next = within("the request body", client_rx.next()).await;
    assert!(
        matches!(&next, Some(Err(e)) if is_cancelled_by_peer(e)),
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
    let (_opened, _request) = open_pair(&mut pair, true).await;
}

/// The local service is down: the client refuses the request with `local_connect_failed`,
/// and the server's response future says exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_reset_reaches_the_server_head_receiver() {
    let mut pair = mux_pair(config()).await;
    let (mut opened, request) = open_pair(&mut pair, false).await;
    let mut client_rx = request.body;
    request.responder.reset(
        ResetCode::LocalConnectFailed,
        "connection refused: 127.0.0.1:3000",
    );

    let mut server_tx = opened.sender();
    let res = response(opened.response).await;
    let want = StreamError::Reset {
        code: ResetCode::LocalConnectFailed,
        message: "connection refused: 127.0.0.1:3000".into(),
    };
    assert_eq!(res.err(), Some(want.clone()));
    within("the server to see the reset", server_tx.cancelled()).await;
    assert_eq!(server_tx.send(Bytes::from_static(b"body")).await, Err(want));
    // The resetting side fails locally with `Cancelled`.
    assert_eq!(
        within("the request body", client_rx.next()).await,
        Some(Err(StreamError::Cancelled))
    );
}

/// Dropping a whole stream before its end cancels it on the other side, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_whole_stream_cancels_the_peer() {
    let mut pair = mux_pair(config()).await;

    // Server drops the stream (public client left before the response).
    let (opened, mut request) = open_pair(&mut pair, false).await;
    drop(opened);
    within(
        "the client to see the cancel",
        request.responder.cancelled(),
    )
    .await;
    let next = within("the request body", request.body.next()).await;
    assert!(
        matches!(&next, Some(Err(e)) if is_cancelled_by_peer(e)),
        "{next:?}"
    );
    drop(request);

    // Client drops the stream without answering.
    let (mut opened, request) = open_pair(&mut pair, false).await;
    drop(request);
    let server_tx = opened.sender();
    let res = response(opened.response).await;
    assert!(matches!(&res, Err(e) if is_cancelled_by_peer(e)), "{res:?}");
    within("the server to see the cancel", server_tx.cancelled()).await;
    assert_eq!(pair.client.open_streams(), 0);
}
