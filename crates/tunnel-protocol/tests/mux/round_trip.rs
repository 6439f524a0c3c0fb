//! Bodies cross intact in both directions at once, and streams end cleanly.

use std::time::Duration;

use futures_util::StreamExt;
use tunnel_protocol::mux::IncomingRequest;
use tunnel_protocol::StreamError;

use crate::support::*;

/// A 5 MiB request body and a 2 MiB response body cross a 64 KiB window intact, in both
/// directions at once, and both ends then see a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_large_bodies_then_clean_end() {
    let mut pair = mux_pair(config()).await;
    let request_body = pattern(5 << 20, 1);
    let response_body = pattern((2 << 20) + 12_345, 2);

    let (mut opened, request) = open_pair(&mut pair, false).await;
    let id = opened.id;
    let upload = spawn_upload(opened.sender(), request_body.clone());

    // The client answers while the request body is still arriving (full duplex).
    let body = response_body.clone();
    let client = tokio::spawn(async move {
        let IncomingRequest {
            body: mut rx,
            responder,
            ..
        } = request;
        let mut tx = responder.respond(response_parts(200)).await?;
        let (got, sent) = tokio::join!(read_all(&mut rx), send_chunked(&mut tx, &body));
        sent?;
        Ok::<_, StreamError>((got?, tx, rx))
    });

    let answer = response(opened.response).await.expect("a response head");
    assert_eq!(answer.head, response_head(id, 200, false));
    let mut server_rx = answer.body;
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
    // Each half counted what it moved.
    assert_eq!(server_tx.bytes_sent(), request_body.len() as u64);
    assert_eq!(client_rx.bytes_received(), request_body.len() as u64);
    assert_eq!(client_tx.bytes_sent(), response_body.len() as u64);
    assert_eq!(server_rx.bytes_received(), response_body.len() as u64);

    // Dropping finished streams forgets them on both sides and leaves the connection up.
    assert_eq!(pair.server.open_streams(), 1);
    drop((server_tx, server_rx, client_tx, client_rx));
    assert_eq!(pair.server.open_streams(), 0);
    assert_eq!(pair.client.open_streams(), 0);
    assert!(!pair.server.is_closed() && !pair.client.is_closed());

    // The connection still carries new streams, including bodiless ones: such a request has
    // no sender at all, and an empty answer none either.
    let (opened, mut request) = open_pair(&mut pair, true).await;
    assert!(opened.sender.is_none());
    assert!(within("empty request body", request.body.next())
        .await
        .is_none());
    assert!(respond(request.responder, 204, true).await.is_none());
    let mut answer = response(opened.response).await.expect("a response head");
    assert_eq!(answer.head.status, 204);
    assert!(answer.head.end_stream);
    assert!(within("empty response body", answer.body.next())
        .await
        .is_none());
}

#[tokio::test]
async fn send_last_ends_the_direction_on_its_final_frame() {
    let mut pair = mux_pair(config()).await;
    let (opened, request) = open_pair(&mut pair, true).await;
    let mut tx = respond(request.responder, 200, false)
        .await
        .expect("a body follows");
    let client_rx = request.body;
    // Larger than a frame and than the window: split, waits for credit, END on the last frame.
    let body = pattern(3 * WINDOW as usize + 17, 9);
    let sending = {
        let body = body.clone();
        tokio::spawn(async move {
            tx.send_last(bytes::Bytes::from(body)).await?;
            Ok::<_, StreamError>((tx, client_rx))
        })
    };
    let mut server_rx = response(opened.response)
        .await
        .expect("a response head")
        .body;
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
    drop((tx, rx, server_rx));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client_events.recv())
            .await
            .is_err(),
        "nothing further arrives"
    );
    assert_eq!(pair.server.open_streams(), 0);
}
