//! The handles of one stream: a sending half ([`BodySender`]) and a receiving half
//! ([`BodyReceiver`]), usable from different tasks. When the last handle goes before both
//! directions ended, the stream is reset (see "Stream lifetime" in [`crate::mux`]).
//!
//! Each half counts the body bytes it moved: the one count of a stream's traffic, which
//! [`super::splice()`], [`super::pump()`] and their callers report from.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::error::StreamError;
use super::shared::{lock, OnAbandon, Outgoing, Shared, StreamState};
use crate::frame::DataFrame;
use crate::message::{ControlMessage, ResetCode, StreamId};

/// What each half of a stream holds; dropping the second one ends the stream.
///
/// Each half has its own (two reference counts more), where one shared `Arc` of both was an
/// allocation per stream; [`StreamState::halves`] says which drop is the last.
#[derive(Debug)]
struct StreamCore {
    state: Arc<StreamState>,
    shared: Arc<Shared>,
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        if self.state.halves.fetch_sub(1, Ordering::AcqRel) != 1 {
            return; // the other half still runs
        }
        let state = &self.state;
        let now_empty = {
            let mut streams = lock(&self.shared.streams);
            streams.remove(&state.id);
            streams.is_empty()
        };
        self.shared.stream_removed(now_empty);
        let clean = state.sent_end.load(Ordering::Acquire) && state.recv.end_received();
        if !clean && !state.reset.load(Ordering::Acquire) && !self.shared.cancel.is_cancelled() {
            self.shared
                .reset_local(state, ResetCode::Cancelled, "stream abandoned".into());
        }
        state.cancel.cancel();
    }
}

/// The two halves of a stream registered in `shared`'s table.
pub(super) fn halves(shared: Arc<Shared>, state: Arc<StreamState>) -> (BodySender, BodyReceiver) {
    state.halves.store(2, Ordering::Release);
    let sender = StreamCore {
        state: state.clone(),
        shared: shared.clone(),
    };
    (
        BodySender {
            core: sender,
            sent: 0,
        },
        BodyReceiver {
            core: StreamCore { state, shared },
            received: 0,
        },
    )
}

/// The sending half of a stream.
#[derive(Debug)]
pub struct BodySender {
    core: StreamCore,
    /// Body bytes sent so far.
    sent: u64,
}

impl BodySender {
    /// Sends bytes, split into frames, waiting for credit as needed.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        let max = self.core.shared.cfg.max_frame_size as usize;
        while !data.is_empty() {
            let n = self.acquire(data.len().min(max)).await?;
            let chunk = data.split_to(n);
            self.send_frame(chunk, false).await?;
            self.sent += n as u64;
        }
        Ok(())
    }

    /// Sends the last bytes of this direction, with the end marker on the final frame: one
    /// message less per body than [`BodySender::send`] followed by [`BodySender::finish`].
    pub async fn send_last(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        let max = self.core.shared.cfg.max_frame_size as usize;
        while !data.is_empty() {
            let n = self.acquire(data.len().min(max)).await?;
            let chunk = data.split_to(n);
            let last = data.is_empty();
            self.send_frame(chunk, last).await?;
            self.sent += n as u64;
            if last {
                self.core.state.sent_end.store(true, Ordering::Release);
                return Ok(());
            }
        }
        self.finish().await
    }

    /// Sends the end marker: no more bytes in this direction (the other may go on).
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        if self.core.state.sent_end.load(Ordering::Acquire) {
            return Ok(());
        }
        self.send_frame(Bytes::new(), true).await?;
        self.core.state.sent_end.store(true, Ordering::Release);
        Ok(())
    }

    /// Records that this direction has no body at all (its head said `end_stream`).
    pub(super) fn mark_finished(&mut self) {
        self.core.state.sent_end.store(true, Ordering::Release);
    }

    /// Queues this stream's head behind everything queued before it: the one way a head
    /// leaves, used by [`super::Mux::open_stream`] and [`super::Responder`], so that it goes
    /// exactly once and before any body byte.
    pub(super) async fn send_head(&self, head: &ControlMessage) -> Result<(), StreamError> {
        self.core.shared.send_control(head).await
    }

    /// [`BodySender::send_head`] for a head already written as JSON ([`crate::head_json`]).
    pub(super) async fn send_head_json(&self, json: String) -> Result<(), StreamError> {
        self.core.shared.enqueue(Outgoing::Control(json)).await
    }

    /// Body bytes sent on this stream so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Resets the stream: the peer stops all work for it.
    pub fn reset(&self, code: ResetCode, message: &str) {
        self.core
            .shared
            .reset_local(&self.core.state, code, message.to_string());
    }

    /// Resets the stream *after* everything this side already queued for it (heads, data),
    /// so that the peer sees, say, a response head and then the failure of its body, never
    /// the failure first. [`BodySender::reset`] is for synchronous contexts, where order does
    /// not matter because the stream is being abandoned.
    pub async fn abort(&self, code: ResetCode, message: &str) {
        let state = &self.core.state;
        if state.reset.swap(true, Ordering::AcqRel) {
            return;
        }
        let msg = ControlMessage::Reset {
            stream_id: state.id,
            code,
            message: message.to_string(),
        };
        let _ = self.core.shared.send_control(&msg).await; // connection gone: the peer knows
        state.fail(StreamError::Cancelled);
    }

    /// Whether [`BodySender::cancelled`] would resolve now.
    pub(super) fn is_cancelled(&self) -> bool {
        self.core.state.cancel.is_cancelled()
    }

    /// Resolves when the stream is reset (by either side) or its connection ends.
    pub async fn cancelled(&self) {
        // The connection's end fails every stream in its table (`Shared::shutdown`), and a
        // stream with a handle is in it: its own signal covers both.
        self.core.state.cancel.cancelled().await
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> StreamError {
        self.core.state.failure()
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.core.state.id
    }

    /// Waits for credit for at least one byte; takes up to `want` bytes of it.
    async fn acquire(&self, want: usize) -> Result<usize, StreamError> {
        let credit = &self.core.state.credit;
        match credit.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(self.core.state.failure()),
        }
        let extra = credit.available_permits().min(want - 1);
        if extra > 0 {
            match credit.try_acquire_many(extra as u32) {
                Ok(p) => p.forget(),
                Err(_) => return Ok(1),
            }
        }
        Ok(1 + extra)
    }

    async fn send_frame(&self, payload: Bytes, end: bool) -> Result<(), StreamError> {
        let state = &self.core.state;
        if state.reset.load(Ordering::Acquire) || self.core.shared.cancel.is_cancelled() {
            return Err(state.failure());
        }
        let len = payload.len() as u64;
        let frame = DataFrame {
            stream_id: state.id,
            end,
            payload,
        };
        self.core.shared.enqueue(Outgoing::Data(frame)).await?;
        self.core
            .shared
            .bytes_sent
            .fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

/// The receiving half of a stream: a [`futures_util::Stream`] of body chunks that ends after
/// the peer's end marker, or yields the error that ended the stream.
#[derive(Debug)]
pub struct BodyReceiver {
    core: StreamCore,
    /// Body bytes handed out so far.
    received: u64,
}

impl BodyReceiver {
    /// Whether the peer's end marker has arrived.
    pub fn is_end_received(&self) -> bool {
        self.core.state.recv.end_received()
    }

    /// This direction's current receive window in bytes: `initial_window`, or more once
    /// auto-tuning grew it (never more than `max_window`).
    pub fn window(&self) -> u32 {
        self.core.state.window.load(Ordering::Acquire)
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.core.state.id
    }

    /// Body bytes handed out by this receiver so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }
}

impl futures_util::Stream for BodyReceiver {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let state = &this.core.state;
        let poll = state.recv.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            this.core.shared.consumed(state, chunk.len());
            this.received += chunk.len() as u64;
        }
        poll
    }
}

impl Drop for BodyReceiver {
    fn drop(&mut self) {
        let state = &self.core.state;
        let (unread, ended) = state.recv.close_reader();
        if ended || state.recv.failed() {
            return;
        }
        match state.on_abandon {
            OnAbandon::Reset => {
                self.core.shared.reset_local(
                    state,
                    ResetCode::Cancelled,
                    "reader went away".into(),
                );
            }
            OnAbandon::Discard => self.core.shared.consumed(state, unread),
        }
    }
}
