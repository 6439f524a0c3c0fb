//! The reader task: takes every frame off the WebSocket and routes it. Data goes to its
//! stream's pipe, credit to its stream's semaphore, heads to their waiting opener (server) or
//! to the owner as a [`super::ClientEvent`] (client). A violation of the protocol ends the connection,
//! with a goodbye and a close frame that say why.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::error::StreamError;
use super::events::Goodbye;
use super::exchange::{IncomingRequest, Responder};
use super::flow::MAX_WINDOW;
use super::pipe::Push;
use super::shared::{goodbye, lock, OnAbandon, Outgoing, Shared, Urgent, CLOSE_PROTOCOL};
use super::side::Side;
use super::stream::halves;
use crate::frame::{DataFrame, Frame};
use crate::message::{
    ControlMessage, GoodbyeReason, RequestHead, ResetCode, ResponseHead, StreamId,
};
use crate::ws::{self, Role};
use crate::ProtocolError;

/// Reads until the connection ends, then shuts it down with the reason.
pub(super) async fn read_loop<S: Side, R>(
    shared: Arc<Shared>,
    mut stream: ws::Reader<R>,
    events: mpsc::Sender<S::Event>,
) where
    R: AsyncRead + Unpin,
{
    let max_payload = shared.cfg.max_frame_size as usize;
    let reason = loop {
        let msg = tokio::select! {
            _ = shared.cancel.cancelled() => break "closed locally".to_string(),
            _ = events.closed() => break "the connection's owner went away".to_string(),
            m = stream.next() => m,
        };
        let msg = match msg {
            None => break "connection closed".to_string(),
            Some(Err(e)) => break format!("websocket error: {e}"),
            Some(Ok(m)) => m,
        };
        shared.touch();
        let result = match msg {
            ws::Message::Binary(bytes) => DataFrame::decode(bytes, max_payload).map(|d| {
                on_data(&shared, d);
            }),
            ws::Message::Text(text) => match Frame::decode_text(&text) {
                Ok(c) => on_control::<S>(&shared, c, &events).await,
                Err(e) => Err(e),
            },
            ws::Message::Ping(payload) => {
                shared.push_urgent(Urgent::Pong(payload));
                Ok(())
            }
            ws::Message::Pong(payload) => {
                shared.on_pong(&payload);
                Ok(())
            }
            ws::Message::Close(frame) => {
                break match frame {
                    Some(f) if !f.reason.is_empty() => format!("peer closed: {}", f.reason),
                    _ => "peer closed".to_string(),
                };
            }
        };
        if let Err(e) = result {
            break close_on_violation(&shared, &e).await;
        }
    };
    shared.shutdown(reason);
}

/// Tells the peer why the connection ends after its violation `e`, and gives the writer a
/// moment to send that; returns the close reason.
async fn close_on_violation(shared: &Shared, e: &ProtocolError) -> String {
    warn!(error = %e, "protocol violation, closing the client connection");
    let reason = format!("protocol error: {e}");
    shared.set_reason(reason.clone());
    // Best effort: tell the peer why before closing.
    let _ = shared
        .out
        .try_send(goodbye(GoodbyeReason::ProtocolError, &reason));
    let _ = shared.out.try_send(Outgoing::Close {
        code: CLOSE_PROTOCOL,
        reason: reason.clone(),
    });
    // Give the writer a moment to flush the reason; the connection is closed either way.
    let _ = tokio::time::timeout(Duration::from_secs(1), shared.cancel.cancelled()).await;
    reason
}

/// Body bytes (and maybe the end marker) for a stream.
fn on_data(shared: &Arc<Shared>, frame: DataFrame) {
    shared
        .bytes_received
        .fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
    let Some(state) = shared.get(frame.stream_id) else {
        // Frames for a stream that just ended or was reset are normal (they were in flight);
        // ones for a stream that never existed are logged.
        if shared.role == Role::Server && frame.stream_id >= shared.next_id.load(Ordering::Relaxed)
        {
            warn!(
                stream = frame.stream_id,
                "data for a stream that was never opened"
            );
        }
        return;
    };
    match state.recv.push(frame.payload, frame.end) {
        Push::Queued => {}
        Push::Discarded(n) => shared.consumed(&state, n),
        Push::Overflow => {
            warn!(stream = state.id, "peer exceeded its flow-control window");
            shared.reset_local(&state, ResetCode::FlowControl, "window exceeded".into());
        }
        Push::Closed => {
            if !state.reset.load(Ordering::Acquire) && !state.recv.failed() {
                warn!(stream = state.id, "data after the end of the stream");
                shared.reset_local(&state, ResetCode::ProtocolError, "data after end".into());
            }
        }
    }
}

/// Handles a control message; returns an error only for violations that end the connection.
async fn on_control<S: Side>(
    shared: &Arc<Shared>,
    msg: ControlMessage,
    events: &mpsc::Sender<S::Event>,
) -> Result<(), ProtocolError> {
    match msg {
        ControlMessage::Window {
            stream_id,
            increment,
        } => on_window(shared, stream_id, increment),
        ControlMessage::Reset {
            stream_id,
            code,
            message,
        } => on_reset(shared, stream_id, code, message),
        ControlMessage::Response(head) if S::ROLE == Role::Server => on_response(shared, head),
        // Only an end that takes streams has a way to hand them on.
        ControlMessage::Request(head) => match S::ACCEPT {
            Some(accept) => return on_request(shared, head, events, accept).await,
            None => return Err(ProtocolError::Unexpected("request not allowed here".into())),
        },
        ControlMessage::Goodbye { reason, message } => {
            let goodbye = S::goodbye(Goodbye { reason, message });
            let _ = events.send(goodbye).await; // owner gone: closing anyway
        }
        other => {
            return Err(ProtocolError::Unexpected(format!(
                "{} not allowed here",
                message_name(&other)
            )))
        }
    }
    Ok(())
}

/// The peer consumed `increment` more bytes of ours: that much more credit, unless the grant
/// is absurd (then the stream is reset).
fn on_window(shared: &Arc<Shared>, stream_id: StreamId, increment: u32) {
    let Some(state) = shared.get(stream_id) else {
        return;
    };
    let granted = state
        .granted
        .fetch_add(u64::from(increment), Ordering::AcqRel)
        + u64::from(increment);
    let available = state.credit.available_permits() as u64;
    if available + u64::from(increment) > MAX_WINDOW || granted > u64::MAX / 2 {
        warn!(stream = stream_id, "peer granted an absurd window");
        shared.reset_local(&state, ResetCode::FlowControl, "window too large".into());
    } else {
        state.credit.add_permits(increment as usize);
    }
}

/// The peer abandoned a stream.
fn on_reset(shared: &Shared, stream_id: StreamId, code: ResetCode, message: String) {
    if let Some(state) = shared.get(stream_id) {
        debug!(stream = stream_id, ?code, %message, "stream reset by peer");
        state.reset.store(true, Ordering::Release);
        state.fail(StreamError::Reset { code, message });
    }
}

/// (Server role) the client's response head: to the stream's waiting opener. A second head
/// for one stream resets it.
fn on_response(shared: &Arc<Shared>, head: ResponseHead) {
    let Some(state) = shared.get(head.stream_id) else {
        return;
    };
    let tx = lock(&state.head_tx).take();
    match tx {
        Some(tx) => {
            if head.end_stream {
                state.recv.push(Bytes::new(), true);
            }
            let _ = tx.send(Ok(head)); // the public request may have gone
        }
        None => {
            warn!(stream = state.id, "second response head for one stream");
            shared.reset_local(
                &state,
                ResetCode::ProtocolError,
                "second response head".into(),
            );
        }
    }
}

/// (Client role) the server opened a stream: registered, and handed to the owner, unless
/// there are too many (refused) or the id is in use (a violation).
async fn on_request<E>(
    shared: &Arc<Shared>,
    head: RequestHead,
    events: &mpsc::Sender<E>,
    accept: fn(IncomingRequest) -> E,
) -> Result<(), ProtocolError> {
    let id = head.stream_id;
    let state = {
        let mut streams = lock(&shared.streams);
        if shared.cancel.is_cancelled() {
            return Ok(());
        }
        if id == 0 || streams.contains_key(&id) {
            return Err(ProtocolError::Unexpected(format!(
                "request head reuses stream id {id}"
            )));
        }
        if streams.len() >= shared.cfg.max_streams {
            None
        } else {
            let state = shared.new_stream(id, OnAbandon::Discard);
            streams.insert(id, state.clone());
            Some(state)
        }
    };
    let Some(state) = state else {
        shared.push_urgent(Urgent::Control(ControlMessage::Reset {
            stream_id: id,
            code: ResetCode::Refused,
            message: "too many concurrent streams".into(),
        }));
        return Ok(());
    };
    if head.end_stream {
        state.recv.push(Bytes::new(), true);
    }
    let (sender, body) = halves(shared.clone(), state);
    let request = IncomingRequest {
        head,
        body,
        responder: Responder::new(sender),
    };
    if events.send(accept(request)).await.is_err() {
        debug!("request arrived while the client is shutting down");
    }
    Ok(())
}

fn message_name(m: &ControlMessage) -> &'static str {
    match m {
        ControlMessage::Hello(_) => "hello",
        ControlMessage::Welcome(_) => "welcome",
        ControlMessage::Request(_) => "request",
        ControlMessage::Response(_) => "response",
        ControlMessage::Window { .. } => "window",
        ControlMessage::Reset { .. } => "reset",
        ControlMessage::Goodbye { .. } => "goodbye",
    }
}
