//! The body pump both sides use: an HTTP body into a stream, under flow control.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tokio::sync::mpsc;
use tunnel_protocol::mux::{pump, PumpError};
use tunnel_protocol::StreamError;

use crate::support::*;

type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// A body whose chunks the test feeds through a channel; it ends when the sender goes.
fn channel_body() -> (
    mpsc::Sender<Chunk>,
    impl http_body::Body<Data = Bytes, Error = std::io::Error>,
) {
    let (tx, mut rx) = mpsc::channel(4);
    let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, StreamBody::new(chunks))
}

/// A chunked body of several chunks crosses whole, the observer sees every chunk, and the
/// count returned is what the sender counted; a body that knows its last chunk (a `Full`)
/// ends the direction with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_crosses_whole_and_is_counted_once() {
    let mut pair = mux_pair(config()).await;
    let (mut opened, mut request) = open_pair(&mut pair, false).await;
    let mut sender = opened.sender();
    let data = pattern(3 * WINDOW as usize + 5, 21);
    let (tx, body) = channel_body();
    let chunks: Vec<Bytes> = data.chunks(50_000).map(Bytes::copy_from_slice).collect();
    let feed = tokio::spawn(async move {
        for c in chunks {
            if tx.send(Ok(Frame::data(c))).await.is_err() {
                break;
            }
        }
        // Trailers are not forwarded.
        let _ = tx.send(Ok(Frame::trailers(http::HeaderMap::new()))).await;
    });
    let mut seen = 0usize;
    let pumping = pump(body, &mut sender, |n| {
        seen += n;
        Ok::<_, Infallible>(())
    });
    let (pumped, got) = tokio::join!(
        within("the pump", pumping),
        within("the body", read_all(&mut request.body))
    );
    let sent = pumped.expect("pumped");
    feed.await.expect("fed");
    assert_same_body(&got.expect("a clean end"), &data, "pumped body");
    assert_eq!(sent, data.len() as u64);
    assert_eq!(seen, data.len());
    assert_eq!(sender.bytes_sent(), sent);
    assert_eq!(request.body.bytes_received(), sent);

    // A body that knows its end (the end marker rides on its one chunk).
    let mut back = respond(request.responder, 200, false)
        .await
        .expect("a body follows");
    let sent = within(
        "the pump",
        pump(Full::new(Bytes::from_static(b"done")), &mut back, |_| {
            Ok::<_, Infallible>(())
        }),
    )
    .await
    .expect("pumped");
    assert_eq!(sent, 4);
    let mut answer = response(opened.response).await.expect("answered");
    assert_eq!(
        within("the chunk", answer.body.next()).await,
        Some(Ok(Bytes::from_static(b"done")))
    );
    assert!(within("the end", answer.body.next()).await.is_none());
}

/// The observer can stop a body (a size limit), saying why: nothing of that chunk is sent,
/// and the caller decides how the stream ends. A failing body is reported as such, and a stream
/// reset while the pump waits for the body stops it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_failed_and_cancelled_bodies() {
    let mut pair = mux_pair(config()).await;

    let (mut opened, _request) = open_pair(&mut pair, false).await;
    let mut sender = opened.sender();
    let (tx, body) = channel_body();
    tx.send(Ok(Frame::data(Bytes::from_static(b"12345"))))
        .await
        .expect("fed");
    tx.send(Ok(Frame::data(Bytes::from_static(b"678"))))
        .await
        .expect("fed");
    let mut total = 0;
    let limited = pump(body, &mut sender, |n| {
        total += n;
        if total > 6 {
            Err("too large")
        } else {
            Ok(())
        }
    })
    .await;
    assert!(
        matches!(limited, Err(PumpError::Stopped("too large"))),
        "{limited:?}"
    );
    assert_eq!(
        sender.bytes_sent(),
        5,
        "the chunk past the limit was not sent"
    );

    let (mut opened, _request) = open_pair(&mut pair, false).await;
    let mut sender = opened.sender();
    let (tx, body) = channel_body();
    tx.send(Err(std::io::Error::other("public client went away")))
        .await
        .expect("fed");
    let failed = pump(body, &mut sender, |_| Ok::<_, Infallible>(())).await;
    assert!(
        matches!(&failed, Err(PumpError::Body(e)) if e.to_string() == "public client went away"),
        "{failed:?}"
    );

    let (mut opened, request) = open_pair(&mut pair, false).await;
    let mut sender = opened.sender();
    let (_tx, body) = channel_body(); // never yields
    let pumping = pump(body, &mut sender, |_| Ok::<_, Infallible>(()));
    request
        .responder
        .reset(tunnel_protocol::ResetCode::LocalError, "gone");
    let cancelled = within("the pump to give way", pumping).await;
    assert!(
        matches!(cancelled, Err(PumpError::Cancelled)),
        "{cancelled:?}"
    );
    assert!(matches!(sender.failure(), StreamError::Reset { .. }));
}
