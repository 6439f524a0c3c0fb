//! Change notifications of the capture store, for the page's live updates
//! (`GET /api/events`): a bounded log of changes that subscribers read at their own pace.
//!
//! What the tunnel's tasks pay per change:
//! - nobody subscribed (the usual case: no page open): one atomic load, nothing else;
//! - someone subscribed: a push into the bounded log under its own short lock (not the
//!   store's), and a wake-up only when a subscriber is actually asleep waiting for one. A
//!   subscriber that is busy sending what it already has gets no wake-ups: it reads every
//!   change that came meanwhile in one go (coalesced), so a burst of requests costs one
//!   wake-up per batch, not one per change.
//!
//! The log keeps the last [`FEED_LEN`] changes; a subscriber that falls further behind (a
//! stalled browser tab) is told how many it missed and goes on from the oldest kept. Nothing
//! here ever waits for a subscriber.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::record::EntryId;

/// Changes kept for subscribers that fall behind.
pub const FEED_LEN: usize = 1024;

/// A change subscribers hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new entry.
    Added(EntryId),
    /// An entry got its response head or ended.
    Updated(EntryId),
    /// An entry logged a message (its index).
    Message(EntryId, u64),
    /// Everything was deleted.
    Cleared,
}

/// What a subscriber gets when it asks for more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Every change since the last batch, oldest first (never empty).
    Changes(Vec<Change>),
    /// This many changes were dropped before the subscriber read them; the next batch goes
    /// on from the oldest kept.
    Lagged(u64),
}

#[derive(Debug, Default)]
struct Log {
    /// Sequence number of `changes[0]`.
    first: u64,
    changes: VecDeque<Change>,
}

/// The store's feed of changes.
#[derive(Debug, Default)]
pub struct Feed {
    subscribers: AtomicUsize,
    log: Mutex<Log>,
    /// Set by a subscriber about to sleep; whoever publishes next clears it and wakes it.
    asleep: AtomicBool,
    wake: Notify,
}

impl Feed {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding it leaves at worst a change half-pushed: the log is whole.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anyone listens (a change nobody hears need not even be built).
    pub fn listened(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Tells subscribers, if there are any; never waits.
    pub fn publish(&self, change: Change) {
        if !self.listened() {
            return;
        }
        {
            let mut log = self.log();
            if log.changes.len() == FEED_LEN {
                log.changes.pop_front();
                log.first += 1;
            }
            log.changes.push_back(change);
        }
        // After the push: a subscriber that set `asleep` before looking either saw the
        // change or is woken here.
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_waiters();
        }
    }

    /// Hears about changes from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let next = {
            let log = self.log();
            // Counted under the log's lock: no change is published between the count and
            // the position this subscriber starts from.
            self.subscribers.fetch_add(1, Ordering::Relaxed);
            log.first + log.changes.len() as u64
        };
        Subscription {
            feed: self.clone(),
            next,
        }
    }
}

/// One subscriber's place in the feed; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    feed: Arc<Feed>,
    /// Sequence number of the next change to read.
    next: u64,
}

impl Subscription {
    /// What came since the last call, if anything.
    pub fn try_next(&mut self) -> Option<Batch> {
        take(&self.feed, &mut self.next)
    }

    /// Waits for changes, then takes every one that came (one wake-up for a whole burst).
    pub async fn next(&mut self) -> Batch {
        let (feed, next) = (&*self.feed, &mut self.next);
        loop {
            let notified = feed.wake.notified();
            tokio::pin!(notified);
            // Registered as a waiter before looking: a publish after the look wakes it.
            notified.as_mut().enable();
            feed.asleep.store(true, Ordering::SeqCst);
            if let Some(batch) = take(feed, next) {
                return batch;
            }
            notified.await;
        }
    }
}

/// The changes of `feed` from sequence number `next` on, moving `next` past them.
fn take(feed: &Feed, next: &mut u64) -> Option<Batch> {
    let log = feed.log();
    if *next < log.first {
        let missed = log.first - *next;
        *next = log.first;
        return Some(Batch::Lagged(missed));
    }
    let end = log.first + log.changes.len() as u64;
    if *next == end {
        return None;
    }
    let skip = usize::try_from(*next - log.first).unwrap_or(usize::MAX);
    let changes: Vec<Change> = log.changes.iter().skip(skip).copied().collect();
    *next = end;
    Some(Batch::Changes(changes))
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nobody_listening_keeps_nothing() {
        let feed = Arc::new(Feed::default());
        for i in 0..10 {
            feed.publish(Change::Added(i));
        }
        assert!(feed.log().changes.is_empty());
        let mut sub = feed.subscribe();
        assert_eq!(sub.try_next(), None);
        feed.publish(Change::Added(11));
        assert_eq!(
            sub.try_next(),
            Some(Batch::Changes(vec![Change::Added(11)]))
        );
        drop(sub);
        assert!(!feed.listened());
    }

    #[tokio::test]
    async fn a_burst_comes_as_one_batch_and_a_laggard_hears_how_many_it_missed() {
        let feed = Arc::new(Feed::default());
        let mut fast = feed.subscribe();
        let mut slow = feed.subscribe();
        let waiting = tokio::spawn(async move { (fast.next().await, fast) });
        // Wait (bounded) until the task sleeps in `next`, then publish a burst.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !feed.asleep.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "never slept");
            tokio::task::yield_now().await;
        }
        for i in 0..3 {
            feed.publish(Change::Updated(i));
        }
        let (first, mut fast) = waiting.await.unwrap();
        let Batch::Changes(mut got) = first else {
            panic!("lagged")
        };
        // Woken by the first change; the rest may come in the same batch or the next.
        while got.len() < 3 {
            match fast.next().await {
                Batch::Changes(more) => got.extend(more),
                Batch::Lagged(n) => panic!("lagged {n}"),
            }
        }
        assert_eq!(got, (0..3).map(Change::Updated).collect::<Vec<_>>());
        for _ in 0..FEED_LEN + 10 {
            feed.publish(Change::Cleared);
        }
        assert_eq!(slow.next().await, Batch::Lagged(13));
        match slow.next().await {
            Batch::Changes(c) => assert_eq!(c.len(), FEED_LEN),
            Batch::Lagged(n) => panic!("lagged again {n}"),
        }
    }
}
