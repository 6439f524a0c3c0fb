//! Joining an upgraded connection (a WebSocket after `101 Switching Protocols`) to a stream.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::StreamError;
use super::stream::{BodyReceiver, BodySender};
use crate::message::ResetCode;

/// Bytes read per call from the upgraded connection.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes each way of a [`splice`]d stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Bytes read from `io` and sent to the peer.
    pub sent: u64,
    /// Bytes received from the peer and written to `io`.
    pub received: u64,
}

/// Which operation on the upgraded connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Reading from it.
    Read,
    /// Writing to it.
    Write,
    /// Shutting its write side down after the peer's end marker.
    Shutdown,
}

impl std::fmt::Display for IoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Shutdown => "shutdown",
        })
    }
}

/// Why a [`splice`] ended before both directions completed.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// No byte either way for the idle timeout; the stream was reset with
    /// [`ResetCode::IdleTimeout`].
    #[error("idle timeout")]
    IdleTimeout,
    /// The upgraded connection failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The stream failed (reset by the peer, connection lost…).
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl SpliceError {
    fn io(op: IoOp) -> impl FnOnce(std::io::Error) -> Self {
        move |source| SpliceError::Io { op, source }
    }
}

/// Joins an upgraded connection (a WebSocket after `101 Switching Protocols`) to a stream:
/// bytes pass unchanged both ways until both directions have ended.
///
/// Half-close is kept: end of input on `io` sends the stream's end marker while bytes may still
/// flow the other way, and the peer's end marker shuts down `io`'s write side only. Any error,
/// or `idle` without a byte either way, abandons the stream (the peer sees a reset).
pub async fn splice<IO>(
    io: IO,
    mut sender: BodySender,
    mut receiver: BodyReceiver,
    idle: Option<Duration>,
) -> Result<SpliceStats, SpliceError>
where
    IO: AsyncRead + AsyncWrite + Send,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let before = (sender.bytes_sent(), receiver.bytes_received());
    let activity = Activity::new();
    // Pinned here and lent to `both_ways`: futures passed by value into an async fn would be
    // stored twice in its state (its argument and its pinned local), and this state is part
    // of every forward task's future, copied at each spawn.
    let result = {
        let up = pin!(copy_up(&mut rd, &mut sender, &activity));
        let down = pin!(copy_down(&mut receiver, &mut wr, &activity));
        let idle = pin!(activity.idle(idle));
        both_ways(up, down, idle).await
    };
    if matches!(result, Err(SpliceError::IdleTimeout)) {
        sender.reset(ResetCode::IdleTimeout, "no traffic for the idle timeout");
    }
    // On error the halves are dropped unfinished, which resets the stream for the peer.
    result.map(|()| SpliceStats {
        sent: sender.bytes_sent() - before.0,
        received: receiver.bytes_received() - before.1,
    })
}

/// Runs both directions until both are done, the first error, or the idle watch firing.
async fn both_ways(
    mut up: Pin<&mut impl Future<Output = Result<(), SpliceError>>>,
    mut down: Pin<&mut impl Future<Output = Result<(), SpliceError>>>,
    mut idle: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), SpliceError> {
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            r = up.as_mut(), if !up_done => up_done = r.map(|()| true)?,
            r = down.as_mut(), if !down_done => down_done = r.map(|()| true)?,
            () = idle.as_mut() => return Err(SpliceError::IdleTimeout),
        }
        if up_done && down_done {
            return Ok(());
        }
    }
}

/// `io` → peer, then the end marker.
async fn copy_up<R: AsyncRead + Unpin>(
    rd: &mut R,
    sender: &mut BodySender,
    activity: &Activity,
) -> Result<(), SpliceError> {
    let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = rd
            .read_buf(&mut buf)
            .await
            .map_err(SpliceError::io(IoOp::Read))?;
        activity.touch();
        if n == 0 {
            return Ok(sender.finish().await?);
        }
        sender.send(buf.split().freeze()).await?;
    }
}

/// Peer → `io`, then `io`'s write side shut down.
async fn copy_down<W: AsyncWrite + Unpin>(
    receiver: &mut BodyReceiver,
    wr: &mut W,
    activity: &Activity,
) -> Result<(), SpliceError> {
    while let Some(chunk) = receiver.next().await {
        let chunk = chunk?;
        activity.touch();
        wr.write_all(&chunk)
            .await
            .map_err(SpliceError::io(IoOp::Write))?;
    }
    wr.shutdown().await.map_err(SpliceError::io(IoOp::Shutdown))
}

/// When a byte last passed either way: the idle watch of [`splice`] and of
/// [`crate::carrier`].
pub(crate) struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing passed for `idle`; never without a limit.
    pub(crate) async fn idle(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending::<()>().await;
        };
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = tokio::time::Instant::from_std(self.started + last + idle);
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
