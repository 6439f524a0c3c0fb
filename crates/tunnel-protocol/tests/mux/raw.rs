//! A hand-driven "raw" peer (tungstenite speaking our wire format) for the tests where the
//! other end misbehaves on purpose.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tunnel_protocol::frame::{DataFrame, Frame};
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::{ControlMessage, GoodbyeReason, StreamId};

use crate::support::*;

pub(crate) async fn raw_send(raw: &mut Ws, msg: ControlMessage) {
    let m = Frame::Control(msg).into_message().expect("encodes");
    within("a raw send", raw.send(m)).await.expect("raw send");
}

pub(crate) async fn raw_send_data(raw: &mut Ws, stream_id: StreamId, end: bool, payload: Vec<u8>) {
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
pub(crate) async fn raw_recv(raw: &mut Ws) -> Option<Message> {
    loop {
        match within("a message from the mux", raw.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Next control message from the mux, skipping data frames.
pub(crate) async fn raw_control(raw: &mut Ws) -> ControlMessage {
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
pub(crate) async fn raw_until(
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

pub(crate) fn is_reset_of(m: &ControlMessage, id: StreamId) -> bool {
    matches!(m, ControlMessage::Reset { stream_id, .. } if *stream_id == id)
}

/// (Server mux, raw client) opens a stream and has the raw peer see its head.
pub(crate) async fn raw_open(mux: &ServerMux, raw: &mut Ws, end_stream: bool) -> Opened {
    let opened = open_request(mux, end_stream).await;
    let id = opened.id;
    let (_, skipped) = raw_until(
        raw,
        |m| matches!(m, ControlMessage::Request(h) if h.stream_id == id),
    )
    .await;
    assert!(skipped.is_empty(), "unexpected messages: {skipped:?}");
    opened
}

/// Proves a server mux with a raw client peer still works: a fresh stream gets its head
/// across and the raw peer's answer back. Returns control messages seen on the way.
pub(crate) async fn probe(mux: &ServerMux, raw: &mut Ws) -> Vec<ControlMessage> {
    let opened = open_request(mux, true).await;
    let id = opened.id;
    let (_, skipped) = raw_until(
        raw,
        |m| matches!(m, ControlMessage::Request(h) if h.stream_id == id),
    )
    .await;
    raw_send(raw, ControlMessage::Response(response_head(id, 204, true))).await;
    let answer = response(opened.response).await.expect("probe answered");
    assert_eq!(answer.head.status, 204);
    assert!(!mux.is_closed());
    skipped
}

/// Reads what a mux sends after a protocol violation: expects a goodbye with reason
/// `protocol_error`, then a close frame with code 1002, then the end of the connection.
pub(crate) async fn expect_protocol_error_close(raw: &mut Ws) {
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
