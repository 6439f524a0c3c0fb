//! What the guard and the service that serves the connection tell each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::task::AtomicWaker;

use super::syntax::Refusal;

/// What the guard and the service tell each other about one connection.
///
/// Requests are numbered from 1 in the order their heads reach hyper, which is the order in
/// which hyper calls the service (it serves one request of a connection at a time). The
/// guard records refusals under a request's number; the service records, for each request,
/// whether its answer switched protocols.
#[derive(Debug, Default)]
pub struct FramingLink {
    /// Requests the service has begun.
    begun: AtomicU64,
    /// Highest request number whose answer is known.
    decided: AtomicU64,
    /// The request whose answer switched protocols (0: none).
    upgraded: AtomicU64,
    /// The one refusal of the connection, if any, and the request it belongs to.
    refusal: OnceLock<(u64, Refusal)>,
    /// The guard, waiting for a decision.
    waker: AtomicWaker,
}

/// One request's place on its connection, handed to the service with the request.
#[derive(Debug, Clone)]
pub struct RequestSlot {
    link: Arc<FramingLink>,
    index: u64,
}

impl FramingLink {
    /// A link for a new connection.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Called by the service for each request, in order.
    pub fn begin(self: &Arc<Self>) -> RequestSlot {
        let index = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        RequestSlot {
            link: self.clone(),
            index,
        }
    }

    pub(super) fn refuse(&self, index: u64, why: Refusal) {
        // Only the first refusal counts: nothing after it reaches hyper.
        let _first = self.refusal.set((index, why));
    }

    /// The request whose answer switched protocols (0: none).
    pub(super) fn switched(&self) -> u64 {
        self.upgraded.load(Ordering::Acquire)
    }

    /// Wakes the guard's task when a decision comes.
    pub(super) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Whether request `index` has been answered, and if so whether it switched protocols.
    pub(super) fn decision(&self, index: u64) -> Option<bool> {
        (self.decided.load(Ordering::Acquire) >= index)
            .then(|| self.upgraded.load(Ordering::Acquire) == index)
    }
}

impl RequestSlot {
    /// The refusal of this request's head, or of its body so far.
    pub fn refusal(&self) -> Option<Refusal> {
        self.link
            .refusal
            .get()
            .filter(|(i, _)| *i == self.index)
            .map(|(_, why)| *why)
    }

    /// Records the answer: `switched` when it was a `101` (or a `2xx` to `CONNECT`), after
    /// which the connection is no longer HTTP.
    pub fn answered(&self, switched: bool) {
        if switched {
            self.link.upgraded.store(self.index, Ordering::Release);
        }
        self.link.decided.fetch_max(self.index, Ordering::AcqRel);
        self.link.waker.wake();
    }
}
