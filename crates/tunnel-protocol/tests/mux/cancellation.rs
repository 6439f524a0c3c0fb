//! Cancellation: whichever side gives up on a stream, the other learns it at once.

use bytes::Bytes;
use futures_util::StreamExt;
use tunnel_protocol::mux::Stream;
use tunnel_protocol::{ResetCode, StreamError};

use crate::support::*;

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
