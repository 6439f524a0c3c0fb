//! Flow control: a slow reader stalls only its own stream, and buffering stays within one
//! window.

use futures_util::FutureExt;
use tokio::time::timeout;
use tunnel_protocol::mux::IncomingRequest;
use tunnel_protocol::StreamError;

use crate::support::*;

/// A receiver that does not read stalls its sender after one window, and only its own stream:
/// a second stream on the same connection completes meanwhile. Once the reader resumes,
/// everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flow_control_bounds_buffering_and_isolates_streams() {
    let mut pair = mux_pair(config()).await;
    let window = u64::from(WINDOW);

    // Stream A: the client does not read the request body.
    let (mut a, mut client_a) = open_pair(&mut pair, false).await;
    let body_a = pattern(4 * WINDOW as usize, 3);
    let mut upload_a = spawn_upload(a.sender(), body_a.clone());

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
    let (mut b, client_b) = open_pair(&mut pair, false).await;
    let b_id = b.id;
    let body_b = pattern(4 * WINDOW as usize + 3, 4);
    let upload_b = spawn_upload(b.sender(), body_b.clone());
    let client_b = tokio::spawn(async move {
        let IncomingRequest {
            body: mut rx,
            responder,
            ..
        } = client_b;
        let got = read_all(&mut rx).await?;
        let mut tx = responder.respond(response_parts(200)).await?;
        send_chunked(&mut tx, b"stream b done").await?;
        Ok::<_, StreamError>((got, tx, rx))
    });
    let answer = response(b.response).await.expect("stream B answered");
    assert_eq!(answer.head.stream_id, b_id);
    let mut b_rx = answer.body;
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
    let got_a = within("stream A's body", read_all(&mut client_a.body))
        .await
        .expect("stream A");
    assert_same_body(&got_a, &body_a, "stream A");
    within("stream A's upload", upload_a)
        .await
        .expect("task")
        .expect("stream A's upload");

    // The same holds in the other direction: the client's sender stalls on the server's
    // unread receiver.
    let back = respond(client_a.responder, 200, false)
        .await
        .expect("a body follows");
    let mut a_rx = response(a.response).await.expect("stream A answered").body;
    let mut upload_back = spawn_upload(back, pattern(4 * WINDOW as usize, 5));
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
    let (mut opened, request) = open_pair(&mut pair, false).await;
    let upload = spawn_upload(opened.sender(), pattern(6 * WINDOW as usize, 6));

    drop(request.body);
    let mut client_tx = respond(request.responder, 413, false)
        .await
        .expect("a body follows");
    within(
        "the response body",
        send_chunked(&mut client_tx, b"too large, not read"),
    )
    .await
    .expect("response body");

    let answer = response(opened.response).await.expect("answered");
    assert_eq!(answer.head.status, 413);
    let mut server_rx = answer.body;
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
