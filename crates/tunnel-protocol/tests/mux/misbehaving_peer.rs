//! A misbehaving peer: every violation is contained to its stream, or ends the connection
//! with a goodbye and a close frame that say why.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_protocol::frame::{DataFrame, Frame};
use tunnel_protocol::mux::MuxConfig;
use tunnel_protocol::{ControlMessage, Hello, ResetCode, StreamError, PROTOCOL_VERSION};

use crate::raw::*;
use crate::support::*;

/// Data past the window resets that stream with `flow_control`; the connection survives and
/// late frames for the reset stream are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_beyond_the_window_resets_with_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let opened = raw_open(&mux, &mut raw, true).await;
    let id = opened.id;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 200, false)),
    )
    .await;
    let mut body = response(opened.response).await.expect("answered").body;

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
    let next = within("the body", body.next()).await;
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
    let opened = raw_open(&mux, &mut raw, true).await;

    within(
        "a raw send",
        raw.send(Message::text("{\"type\":\"window\",")),
    )
    .await
    .expect("raw send");

    expect_protocol_error_close(&mut raw).await;
    within("the mux to close", mux.closed()).await;
    assert_eq!(
        response(opened.response).await.err(),
        Some(StreamError::ConnectionClosed)
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
                features: Vec::new(),
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
    let _opened = raw_open(&mux, &mut raw, true).await;
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
    let opened = raw_open(&mux, &mut raw, true).await;
    let id = opened.id;
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
    let answer = response(opened.response).await.expect("the first head");
    assert_eq!(answer.head.status, 200);
    let mut body = answer.body;
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
    let next = within("the body", body.next()).await;
    assert!(matches!(next, Some(Err(_))), "{next:?}");
    probe(&mux, &mut raw).await;
}

/// An absurd credit grant (`u32::MAX`, many times) resets the stream with `flow_control`
/// exactly once, without a panic, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_window_increment_resets_with_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let mut opened = raw_open(&mux, &mut raw, false).await;
    let id = opened.id;
    let mut tx = opened.sender();
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
    let other = raw_open(&mux, &mut raw, true).await;
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
    let s1 = next_request(&mut events).await;
    let s2 = next_request(&mut events).await;
    assert_eq!((s1.responder.id(), s2.responder.id()), (1, 2));
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

/// When the peer sends past its window, the local owner of the stream is told
/// `StreamError::FlowControl` ("the peer sent more bytes than it had credit for"), not
/// `Cancelled`, which would be indistinguishable from our own cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_violation_is_reported_locally_as_flow_control() {
    let (mux, _events, mut raw) = mux_server_raw_client(config()).await;
    let opened = raw_open(&mux, &mut raw, true).await;
    let id = opened.id;
    raw_send(
        &mut raw,
        ControlMessage::Response(response_head(id, 200, false)),
    )
    .await;
    let mut body = response(opened.response).await.expect("answered").body;
    for _ in 0..=(WINDOW / FRAME) {
        raw_send_data(&mut raw, id, false, vec![1; FRAME as usize]).await;
    }
    raw_until(&mut raw, |m| is_reset_of(m, id)).await;
    assert_eq!(
        within("the body", body.next()).await,
        Some(Err(StreamError::FlowControl))
    );
}
