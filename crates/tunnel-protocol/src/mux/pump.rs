//! The one body pump: an HTTP body (the public request's on the server, the local service's
//! response on the client) streamed into a stream, chunk by chunk, under flow control.

use std::convert::Infallible;
use std::task::Poll;

use bytes::Bytes;
use http_body::Body;

use super::error::StreamError;
use super::stream::BodySender;

/// Why a [`pump`] stopped before the body's end went out: `E` is the body's error, `S` why
/// the chunk observer stopped it (by default [`Infallible`]: an observer that never stops).
#[derive(Debug, thiserror::Error)]
pub enum PumpError<E, S = Infallible> {
    /// The stream was reset (by either side) or its connection ended while the body was
    /// being read.
    #[error("stream cancelled")]
    Cancelled,
    /// The chunk observer said stop (a size limit); that chunk was not sent.
    #[error("stopped: {0}")]
    Stopped(S),
    /// Sending body bytes failed.
    #[error("stream ended: {0}")]
    Send(StreamError),
    /// Sending the end marker after the last chunk failed.
    #[error("end of body not delivered: {0}")]
    Finish(StreamError),
    /// The body itself failed.
    #[error("body failed: {0}")]
    Body(E),
}

/// Streams `body` into `sender` and ends the direction; returns the bytes sent.
///
/// `on_chunk` sees each chunk's length before it is sent, to count it, or to stop a body past
/// a limit with an `Err` (then nothing more is sent and the caller decides how to end the
/// stream).
/// Trailers are dropped. A body that knows its last chunk (a `Content-Length` body) ends the
/// direction on that chunk's frame instead of with an empty frame after it. Waiting for the
/// body gives way at once when the stream is cancelled. On any error the direction is left
/// unfinished: the caller resets or aborts the stream as fits its side.
pub async fn pump<B, S>(
    body: B,
    sender: &mut BodySender,
    mut on_chunk: impl FnMut(usize) -> Result<(), S>,
) -> Result<u64, PumpError<B::Error, S>>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let start = sender.bytes_sent();
    loop {
        if sender.is_cancelled() {
            return Err(PumpError::Cancelled);
        }
        // A chunk that is ready is taken without the `select!`: waiting for the cancellation
        // registers with the stream's token and deregisters again, about 700 instructions
        // of a small response's (callgrind), only to find the chunk there. When both were
        // ready the `select!` picked either, so taking the chunk is what it could do too.
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(match body.as_mut().poll_frame(cx) {
                Poll::Ready(f) => Some(f),
                Poll::Pending => None,
            })
        })
        .await;
        let frame = match ready {
            Some(f) => f,
            None => tokio::select! {
                f = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)) => f,
                _ = sender.cancelled() => return Err(PumpError::Cancelled),
            },
        };
        let data = match frame {
            None => {
                sender.finish().await.map_err(PumpError::Finish)?;
                return Ok(sender.bytes_sent() - start);
            }
            Some(Err(e)) => return Err(PumpError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers are not forwarded
            },
        };
        on_chunk(data.len()).map_err(PumpError::Stopped)?;
        if body.is_end_stream() {
            sender.send_last(data).await.map_err(PumpError::Send)?;
            return Ok(sender.bytes_sent() - start);
        }
        sender.send(data).await.map_err(PumpError::Send)?;
    }
}
