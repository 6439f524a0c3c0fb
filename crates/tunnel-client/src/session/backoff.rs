//! Waiting: the backoff between attempts, and every wait raced against shutdown so that
//! Ctrl-C acts at once in every state.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter: 250 ms doubling to `max`, each wait drawn from
/// [half, full] of the current step so that many clients do not reconnect in lockstep.
pub(super) struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    pub(super) fn new(max: Duration) -> Self {
        Self {
            step: Self::FIRST.min(max),
            max,
        }
    }

    pub(super) fn next(&mut self) -> Duration {
        let full = self.step;
        self.step = (self.step * 2).min(self.max);
        let ms = full.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }

    pub(super) fn reset(&mut self) {
        self.step = Self::FIRST.min(self.max);
    }
}

/// Waits `d` unless shutdown comes first; true if it did.
pub(super) async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    or_shutdown(shutdown, tokio::time::sleep(d)).await.is_none()
}

/// `work`'s output, or `None` if shutdown came first (`work` is dropped: a request to the
/// server is abandoned, not waited for).
pub(super) async fn or_shutdown<F: Future>(
    shutdown: &CancellationToken,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        out = work => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let waits: Vec<Duration> = (0..6).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(125) && waits[0] <= Duration::from_millis(250));
        assert!(waits[5] >= Duration::from_secs(1) && waits[5] <= Duration::from_secs(2));
        b.reset();
        assert!(b.next() <= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn shutdown_cuts_a_pending_wait() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let never = std::future::pending::<()>();
        assert!(or_shutdown(&shutdown, never).await.is_none());
        assert!(pause(Duration::from_secs(3600), &shutdown).await);
    }
}
