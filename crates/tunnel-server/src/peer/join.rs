//! Two upgraded connections joined: after a `101` through two pods, the public client's
//! connection and the one to the pod holding the tunnel's client pass bytes both ways.
//!
//! Half-close is kept (the end of one direction shuts down that direction's writer only), and
//! the join ends once both directions have, on the first error, or after `idle` without a
//! byte either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bytes moved by a join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Joined {
    /// From the first connection to the second (public client to local service).
    pub up: u64,
    /// From the second to the first.
    pub down: u64,
}

/// Why a join ended early.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No byte either way for the idle timeout.
    #[error("no traffic for the idle timeout")]
    IdleTimeout,
    /// A connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// When anything last moved, in milliseconds since the join began.
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Joins `a` and `b` until both directions ended. See the module documentation.
pub async fn join<A, B>(a: A, b: B, idle: Duration) -> Result<Joined, JoinError>
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
{
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let up = copy(&mut a_rd, &mut b_wr, &activity);
    let down = copy(&mut b_rd, &mut a_wr, &activity);
    let both = async { tokio::try_join!(up, down) };
    tokio::select! {
        r = both => {
            let (up, down) = r?;
            Ok(Joined { up, down })
        }
        _ = activity.idle(idle) => Err(JoinError::IdleTimeout),
    }
}

/// One direction, until end of input, then a shutdown of the writer (the half-close).
async fn copy<R, W>(rd: &mut R, wr: &mut W, activity: &Activity) -> Result<u64, std::io::Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = rd.read(&mut buf).await?;
        activity.touch();
        if n == 0 {
            wr.shutdown().await?;
            return Ok(total);
        }
        wr.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_pass_both_ways_and_half_close_is_kept() {
        let (a, mut a_far) = tokio::io::duplex(1024);
        let (b, mut b_far) = tokio::io::duplex(1024);
        let joined = tokio::spawn(join(a, b, Duration::from_secs(10)));
        a_far.write_all(b"hello").await.expect("write");
        a_far.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        b_far.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello");
        // The other direction still works after the first ended.
        b_far.write_all(b"world").await.expect("write");
        b_far.shutdown().await.expect("close");
        let mut back = Vec::new();
        a_far.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"world");
        let stats = joined.await.expect("task").expect("joined");
        assert_eq!(stats, Joined { up: 5, down: 5 });
    }

    #[tokio::test]
    async fn silence_ends_it() {
        let (a, _a_far) = tokio::io::duplex(1024);
        let (b, _b_far) = tokio::io::duplex(1024);
        let r = join(a, b, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(JoinError::IdleTimeout)));
    }
}
