//! The receive side of one stream direction: a queue of body chunks bounded in bytes.
//!
//! The peer only sends what our credit allows, so the queue never legitimately holds more than
//! the window; a push past it is a flow-control violation, reported to the caller rather than
//! buffered. Unlike a channel bounded in *messages*, this bounds *bytes*, whatever the chunk size.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::error::StreamError;

/// What happened to pushed bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued for the reader.
    Queued,
    /// The reader is gone; the bytes were dropped and their credit should be returned at once.
    Discarded(usize),
    /// The push exceeded the window.
    Overflow,
    /// The pipe already ended (END seen, or failed); the bytes were dropped.
    Closed,
}

#[derive(Debug)]
struct State {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    limit: usize,
    /// `Some(Ok)` once END arrived, `Some(Err)` once the stream failed.
    done: Option<Result<(), StreamError>>,
    reader_gone: bool,
    waker: Option<Waker>,
}

/// A byte-bounded single-reader queue.
#[derive(Debug)]
pub(crate) struct Pipe {
    state: Mutex<State>,
}

impl Pipe {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                buffered: 0,
                limit,
                done: None,
                reader_gone: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, which no code path here can cause
        // (no user code runs under the lock); recover the data rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds bytes (and maybe the end marker) from the peer.
    pub(crate) fn push(&self, data: Bytes, end: bool) -> Push {
        let mut st = self.lock();
        if st.done.is_some() {
            return Push::Closed;
        }
        let len = data.len();
        if st.reader_gone {
            if end {
                st.done = Some(Ok(()));
            }
            return Push::Discarded(len);
        }
        if st.buffered + len > st.limit {
            return Push::Overflow;
        }
        if len > 0 {
            st.buffered += len;
            st.chunks.push_back(data);
        }
        if end {
            st.done = Some(Ok(()));
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        Push::Queued
    }

    /// Raises the byte limit to `limit` (never lowers it): the receive window grew, and the
    /// peer may now have that much in flight. Called *before* the extra credit is granted, so
    /// that no push within the new credit can overflow.
    pub(crate) fn raise_limit(&self, limit: usize) {
        let mut st = self.lock();
        st.limit = st.limit.max(limit);
    }

    /// Ends the pipe with an error, unless it already ended. Queued bytes are dropped: a failed
    /// stream's partial data must not be mistaken for a complete body. A pipe whose end marker
    /// already arrived is complete, and a later reset (the peer abandoning the *other*
    /// direction) leaves its data alone.
    pub(crate) fn fail(&self, err: StreamError) {
        let mut st = self.lock();
        if st.done.is_some() {
            return;
        }
        st.chunks.clear();
        st.buffered = 0;
        st.done = Some(Err(err));
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// True once the END marker arrived (whether or not the reader drained everything).
    pub(crate) fn end_received(&self) -> bool {
        matches!(self.lock().done, Some(Ok(())))
    }

    /// True once the pipe failed.
    pub(crate) fn failed(&self) -> bool {
        matches!(self.lock().done, Some(Err(_)))
    }

    /// Polls for the next chunk. `Ready(None)` after END once drained.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, StreamError>>> {
        let mut st = self.lock();
        if let Some(chunk) = st.chunks.pop_front() {
            st.buffered -= chunk.len();
            return Poll::Ready(Some(Ok(chunk)));
        }
        match &st.done {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e.clone()))),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Marks the reader as gone. Returns the number of bytes that were queued and never read
    /// (their credit is owed to the peer) and whether the pipe had ended cleanly.
    pub(crate) fn close_reader(&self) -> (usize, bool) {
        let mut st = self.lock();
        st.reader_gone = true;
        let unread = st.buffered;
        st.chunks.clear();
        st.buffered = 0;
        (unread, matches!(st.done, Some(Ok(()))))
    }

    /// Bytes queued and not yet read.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.lock().buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(p: &Pipe) -> Poll<Option<Result<Bytes, StreamError>>> {
        p.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn bounded_in_bytes() {
        let p = Pipe::new(10);
        assert_eq!(p.push(Bytes::from_static(b"12345"), false), Push::Queued);
        assert_eq!(p.push(Bytes::from_static(b"12345"), false), Push::Queued);
        assert_eq!(p.push(Bytes::from_static(b"1"), false), Push::Overflow);
        assert_eq!(p.buffered(), 10);
        assert!(matches!(poll(&p), Poll::Ready(Some(Ok(b))) if b == "12345"));
        assert_eq!(p.push(Bytes::from_static(b"abc"), true), Push::Queued);
        assert!(matches!(poll(&p), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&p), Poll::Ready(Some(Ok(b))) if b == "abc"));
        assert!(matches!(poll(&p), Poll::Ready(None)));
        assert_eq!(p.push(Bytes::from_static(b"late"), false), Push::Closed);
    }

    #[test]
    fn the_limit_only_rises() {
        let p = Pipe::new(4);
        assert_eq!(p.push(Bytes::from_static(b"12345"), false), Push::Overflow);
        p.raise_limit(8);
        assert_eq!(p.push(Bytes::from_static(b"12345"), false), Push::Queued);
        p.raise_limit(2);
        assert_eq!(p.push(Bytes::from_static(b"678"), false), Push::Queued);
        assert_eq!(p.push(Bytes::from_static(b"9"), false), Push::Overflow);
    }

    #[test]
    fn failure_drops_partial_data() {
        let p = Pipe::new(10);
        p.push(Bytes::from_static(b"12"), false);
        assert!(matches!(poll(&p), Poll::Ready(Some(Ok(_)))));
        assert!(poll(&p).is_pending());
        p.push(Bytes::from_static(b"34"), false);
        p.fail(StreamError::ConnectionClosed);
        assert!(matches!(
            poll(&p),
            Poll::Ready(Some(Err(StreamError::ConnectionClosed)))
        ));
        assert!(p.failed());
    }

    #[test]
    fn a_reset_after_the_end_keeps_the_complete_data() {
        let p = Pipe::new(10);
        p.push(Bytes::from_static(b"done"), true);
        p.fail(StreamError::Cancelled);
        assert!(matches!(poll(&p), Poll::Ready(Some(Ok(b))) if b == "done"));
        assert!(matches!(poll(&p), Poll::Ready(None)));
    }

    #[test]
    fn gone_reader_discards_and_owes_credit() {
        let p = Pipe::new(10);
        p.push(Bytes::from_static(b"1234"), false);
        assert_eq!(p.close_reader(), (4, false));
        assert_eq!(p.push(Bytes::from_static(b"567"), true), Push::Discarded(3));
        assert!(p.end_received());
    }
}
