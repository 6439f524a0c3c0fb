//! The writer task: the one owner of the WebSocket's sending half. Everything else hands it
//! messages, through the bounded queue (heads, data, goodbyes, in order) or the urgent queue
//! (credit, resets, pings and pongs, ahead of data). It formats them into one buffer and
//! writes them in batches, one flush per batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::shared::{lock, Outgoing, Shared, Urgent};
use crate::message::ControlMessage;
use crate::ws;

/// Capacity of the writer's channel, in messages.
pub(super) const OUT_QUEUE: usize = 64;
/// Most messages the writer feeds before one flush.
const WRITE_BATCH: usize = 64;
/// Buffered bytes past which the writer writes out before taking more messages.
const WRITE_CHUNK: usize = 64 * 1024;
/// Below this many buffered bytes the writer yields once before writing, to gather more.
const YIELD_BELOW: usize = 4 * 1024;

/// Why the writer stopped on its own (the connection then shuts down with this reason).
#[derive(Debug, thiserror::Error)]
enum WriterEnd {
    /// Writing to the socket failed.
    #[error("websocket error: {0}")]
    Io(#[from] std::io::Error),
    /// A control message could not be encoded (a bug: every message serialises).
    #[error("cannot encode a control message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The close frame queued by [`super::Mux::close`] or the reader went out.
    #[error("closed locally")]
    Closed,
}

/// Writes until the connection is cancelled or the writer stops on its own.
pub(super) async fn write_loop<W>(
    shared: Arc<Shared>,
    mut sink: ws::Writer<W>,
    mut out: mpsc::Receiver<Outgoing>,
) where
    W: AsyncWrite + Unpin,
{
    let work = async {
        loop {
            let mut closing = false;
            // Woken for credit or a pong only: those go out at once, without yielding.
            let mut urgent_only = false;
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => return Ok(()),
                _ = shared.urgent_notify.notified() => urgent_only = true,
                m = out.recv() => match m {
                    Some(m) => closing = put(&mut sink, m),
                    None => return Ok(()),
                },
            }
            if !closing {
                closing = gather(&shared, &mut sink, &mut out, urgent_only).await?;
            }
            if !closing {
                feed_urgent(&shared, &mut sink)?;
            }
            sink.flush().await?;
            if out.is_empty() {
                sink.release_idle();
            }
            if closing {
                let _ = sink.shutdown().await; // the peer may be gone: closing anyway
                return Err(WriterEnd::Closed);
            }
        }
    };
    // Cancellation must win even while a write is blocked on a peer that stopped reading:
    // dropping the sink (and the reader dropping the stream) releases the socket.
    let result: Result<(), WriterEnd> = tokio::select! {
        r = work => r,
        _ = shared.cancel.cancelled() => Ok(()),
    };
    if let Err(end) = result {
        shared.shutdown(end.to_string());
    }
}

/// Adds what else is ready to the batch begun with one message: up to [`WRITE_BATCH`]
/// messages, urgent ones first, written out whenever a chunk's worth is buffered. Returns
/// whether a close frame was among them.
async fn gather<W: AsyncWrite + Unpin>(
    shared: &Shared,
    sink: &mut ws::Writer<W>,
    out: &mut mpsc::Receiver<Outgoing>,
    mut yielded: bool,
) -> Result<bool, WriterEnd> {
    let mut fed = 0;
    while fed < WRITE_BATCH {
        feed_urgent(shared, sink)?;
        // Many streams' frames share one write, but the buffer stays near one chunk.
        if sink.buffered() >= WRITE_CHUNK {
            sink.flush().await?;
        }
        match out.try_recv() {
            Ok(m) => {
                if put(sink, m) {
                    return Ok(true);
                }
                fed += 1;
            }
            Err(_) if !yielded && sink.buffered() < YIELD_BELOW => {
                // Let the tasks that are ready right now (other requests of the same
                // wake-up) run first: their frames join this write instead of each
                // costing a write and a wake-up of the peer. One scheduler pass, no
                // timer: nothing waits when nothing else is ready. Only for a small
                // batch of heads or data: large frames gain nothing from company.
                yielded = true;
                tokio::task::yield_now().await;
            }
            Err(_) => break,
        }
    }
    Ok(false)
}

/// Formats one outgoing item into the writer's buffer; true if it was a close frame.
fn put<W: AsyncWrite + Unpin>(sink: &mut ws::Writer<W>, item: Outgoing) -> bool {
    match item {
        Outgoing::Control(json) => sink.text(&json),
        Outgoing::Data(d) => sink.data(d.stream_id, d.end, &d.payload),
        Outgoing::Close { code, reason } => {
            sink.close(code, &reason);
            return true;
        }
    }
    false
}

/// Formats everything in the urgent queue.
fn feed_urgent<W: AsyncWrite + Unpin>(
    shared: &Shared,
    sink: &mut ws::Writer<W>,
) -> Result<(), WriterEnd> {
    loop {
        let next = lock(&shared.urgent).pop_front();
        let Some(item) = next else { return Ok(()) };
        let msg = match item {
            Urgent::Control(c) => c,
            Urgent::Ping => {
                shared.ping_queued.store(false, Ordering::Release);
                sink.ping(&shared.ping_payload());
                continue;
            }
            Urgent::Pong(payload) => {
                sink.pong(&payload);
                continue;
            }
            Urgent::Credit(weak) => {
                let Some(state) = weak.upgrade() else {
                    continue;
                };
                state.credit_queued.store(false, Ordering::Release);
                let inc = state.pending_credit.swap(0, Ordering::AcqRel);
                if inc == 0 || state.reset.load(Ordering::Acquire) {
                    continue;
                }
                let inc = inc + shared.grow_window(&state, inc);
                ControlMessage::Window {
                    stream_id: state.id,
                    increment: u32::try_from(inc).unwrap_or(u32::MAX),
                }
            }
        };
        let json = serde_json::to_string(&msg)?;
        sink.text(&json);
    }
}
