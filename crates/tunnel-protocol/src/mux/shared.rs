//! The state every part of a connection shares: the stream table, the writer's queues, the
//! round-trip estimate, the close reason. The reader, the writer, the keepalive and every
//! stream handle hold one [`Shared`]; the methods here are the operations more than one of
//! them needs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::config::MuxConfig;
use super::error::StreamError;
use super::flow::{next_window, Rtt, Tuning};
use super::pipe::Pipe;
use crate::frame::DataFrame;
use crate::message::{ControlMessage, GoodbyeReason, ResetCode, ResponseHead, StreamId};
use crate::ws::Role;

/// WebSocket close code of a normal close (RFC 6455 §7.4.1).
pub(super) const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code after a protocol violation (RFC 6455 §7.4.1).
pub(super) const CLOSE_PROTOCOL: u16 = 1002;

/// What the writer is asked to write. Data frames keep their payload as is: the writer
/// formats them straight into its buffer, with no message built in between.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A control message, already JSON.
    Control(String),
    /// Body bytes.
    Data(DataFrame),
    /// A close frame, after which the writer stops.
    Close {
        /// The WebSocket close code.
        code: u16,
        /// Why, for the peer's logs.
        reason: String,
    },
}

/// What must go out ahead of queued data, queued from synchronous code (see the module doc).
#[derive(Debug)]
pub(super) enum Urgent {
    /// A stream's pending credit; the amount is taken when it is written.
    Credit(Weak<StreamState>),
    /// A reset or a refusal.
    Control(ControlMessage),
    /// The answer to a ping of the peer, echoing its payload.
    Pong(Bytes),
    /// A round-trip probe; its payload and send time are made when it is written.
    Ping,
}

/// The waiting opener of a stream: where its response head (or why none will come) goes.
pub(super) type HeadSender = oneshot::Sender<Result<ResponseHead, StreamError>>;

/// One connection's shared state.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) cfg: MuxConfig,
    pub(super) role: Role,
    pub(super) streams: Mutex<HashMap<StreamId, Arc<StreamState>>>,
    /// The id the next opened stream gets (server role).
    pub(super) next_id: AtomicU32,
    /// The writer's bounded queue, in order.
    pub(super) out: mpsc::Sender<Outgoing>,
    /// Credit, resets and pings, ahead of `out` (bounded, see [`Shared::push_urgent`]).
    pub(super) urgent: Mutex<VecDeque<Urgent>>,
    pub(super) urgent_notify: Notify,
    /// Cancelled once the connection ends, for whatever reason.
    pub(super) cancel: CancellationToken,
    close_reason: Mutex<Option<String>>,
    rtt: Mutex<Rtt>,
    /// Whether a [`Urgent::Ping`] is queued, so that at most one is.
    pub(super) ping_queued: AtomicBool,
    started: Instant,
    last_seen_ms: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    /// Set once a goodbye was sent without closing ([`super::Mux::announce`]): the peer was
    /// told to go, and this connection is on its way out.
    pub(super) going_away: AtomicBool,
    /// No new stream may be opened (the connection is closing). Checked under the `streams`
    /// lock, and set under it once the table is empty ([`Shared::wait_idle`]), so that a
    /// stream is either opened before, and waited for, or refused.
    pub(super) closing: AtomicBool,
    /// Whether someone waits for the stream table to empty (then `idle` is notified when it
    /// does; nobody pays for the notification otherwise).
    pub(super) idle_watched: AtomicBool,
    pub(super) idle: Notify,
    /// Streams wait before opening until the welcome is queued (server side, see
    /// [`super::Mux::hold_streams_until_welcome`]); `allowed` wakes them.
    pub(super) held: AtomicBool,
    allowed: Notify,
}

/// What to do when a stream's receiver is dropped before its end.
#[derive(Debug, Clone, Copy)]
pub(super) enum OnAbandon {
    /// Reset the whole stream (server: the public client left).
    Reset,
    /// Keep the stream; discard further bytes and keep returning credit (client: the local
    /// service answered without reading the whole request body).
    Discard,
}

/// One stream's state, shared by its handles, the reader (which routes frames to it) and the
/// writer (which sends its credit).
#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) id: StreamId,
    /// Bytes from the peer, bounded by the receive window.
    pub(super) recv: Pipe,
    /// Current receive window (starts at `initial_window`, only grows): the pipe's limit, and
    /// the basis of the credit-return threshold.
    pub(super) window: AtomicU32,
    pub(super) tuning: Mutex<Tuning>,
    /// Send credit: one permit per byte the peer lets us send.
    pub(super) credit: Semaphore,
    /// Total credit the peer granted, to catch absurd grants.
    pub(super) granted: AtomicU64,
    pub(super) cancel: StreamCancel,
    /// (Opening side) where the response head goes, until it came.
    pub(super) head_tx: Mutex<Option<HeadSender>>,
    pub(super) sent_end: AtomicBool,
    pub(super) reset: AtomicBool,
    failure: Mutex<Option<StreamError>>,
    /// Bytes consumed by our reader and not yet credited back to the peer.
    pub(super) pending_credit: AtomicU64,
    /// Whether a [`Urgent::Credit`] for this stream is queued, so that at most one is.
    pub(super) credit_queued: AtomicBool,
    pub(super) on_abandon: OnAbandon,
    /// How many of the stream's two halves are alive (see `stream::halves`): the last one to
    /// go takes the stream out of the table.
    pub(super) halves: AtomicU8,
}

/// A stream's "it is over" signal: set when the stream fails or its last handle goes.
///
/// A flag and a [`Notify`] inside the stream's state, where a child [`CancellationToken`] of
/// the connection's was one allocation per stream and a lock of the connection's token on
/// both its creation and its drop (to link and unlink it). The connection's end reaches every
/// stream anyway: [`Shared::shutdown`] cancels the connection's token, then fails each stream
/// of the table, where every stream that still has a handle is (a stream is created under the
/// table's lock only while the token is not cancelled).
#[derive(Debug, Default)]
pub(super) struct StreamCancel {
    done: AtomicBool,
    notify: Notify,
}

impl StreamCancel {
    /// Sets the signal and wakes every waiter; later calls do nothing.
    pub(super) fn cancel(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Whether the signal is set.
    pub(super) fn is_cancelled(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the signal is set.
    pub(super) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a `cancel` between the two is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Locks `m`, recovering from poison.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks; recover rather than propagate poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StreamState {
    /// Ends the stream with `err`: every handle and waiter sees it (the first failure wins).
    pub(super) fn fail(&self, err: StreamError) {
        {
            let mut f = lock(&self.failure);
            if f.is_none() {
                *f = Some(err.clone());
            }
        }
        self.recv.fail(err.clone());
        self.credit.close();
        self.cancel.cancel();
        if let Some(tx) = lock(&self.head_tx).take() {
            let _ = tx.send(Err(err)); // the waiter may be gone; nothing to tell then
        }
    }

    /// Why the stream failed (`Cancelled` if it did not record why).
    pub(super) fn failure(&self) -> StreamError {
        lock(&self.failure)
            .clone()
            .unwrap_or(StreamError::Cancelled)
    }
}

/// A control message as the writer takes it.
pub(super) fn control(msg: &ControlMessage) -> Result<Outgoing, serde_json::Error> {
    serde_json::to_string(msg).map(Outgoing::Control)
}

/// A goodbye as the writer takes it.
pub(super) fn goodbye(reason: GoodbyeReason, message: &str) -> Outgoing {
    let msg = ControlMessage::Goodbye {
        reason,
        message: message.to_string(),
    };
    control(&msg)
        .unwrap_or_else(|_| Outgoing::Control(r#"{"type":"goodbye","reason":"other"}"#.into()))
}

impl Shared {
    /// The state of a connection whose writer takes messages from `out`.
    pub(super) fn new(cfg: MuxConfig, role: Role, out: mpsc::Sender<Outgoing>) -> Self {
        Self {
            cfg,
            role,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            out,
            urgent: Mutex::new(VecDeque::new()),
            urgent_notify: Notify::new(),
            cancel: CancellationToken::new(),
            close_reason: Mutex::new(None),
            rtt: Mutex::new(Rtt::default()),
            ping_queued: AtomicBool::new(false),
            started: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            going_away: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            idle_watched: AtomicBool::new(false),
            idle: Notify::new(),
            held: AtomicBool::new(false),
            allowed: Notify::new(),
        }
    }

    /// Queues something to go out ahead of the data.
    pub(super) fn push_urgent(&self, u: Urgent) {
        let len = {
            let mut q = lock(&self.urgent);
            q.push_back(u);
            q.len()
        };
        self.urgent_notify.notify_one();
        // Each stream queues at most one credit and one reset; far more means the peer floods
        // us with streams we refuse while not reading our answers.
        if len > 4 * self.cfg.max_streams + 1024 {
            self.shutdown("peer is not reading its control messages".into());
        }
    }

    /// Records why the connection ends, unless a reason is already recorded.
    pub(super) fn set_reason(&self, reason: String) {
        let mut r = lock(&self.close_reason);
        if r.is_none() {
            debug!(%reason, "client connection closing");
            *r = Some(reason);
        }
    }

    /// Why the connection ended, once it has.
    pub(super) fn close_reason(&self) -> Option<String> {
        lock(&self.close_reason).clone()
    }

    /// Queues a message for the writer, failing at once if the connection ends meanwhile.
    ///
    /// With room in the queue (nearly always) the message goes in at once, without the
    /// `select!` over a send future and the connection's end: two of those per small request
    /// on each side (its head, its body) were about 700 instructions each (callgrind). Room
    /// is only free when no sender waits for it (a freed slot goes to the first waiter), so
    /// this never passes a message queued before. A full queue waits as before.
    pub(super) async fn enqueue(&self, msg: Outgoing) -> Result<(), StreamError> {
        if self.cancel.is_cancelled() {
            return Err(StreamError::ConnectionClosed);
        }
        let msg = match self.out.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(StreamError::ConnectionClosed),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        tokio::select! {
            r = self.out.send(msg) => r.map_err(|_| StreamError::ConnectionClosed),
            _ = self.cancel.cancelled() => Err(StreamError::ConnectionClosed),
        }
    }

    /// Queues a control message behind everything queued before it.
    pub(super) async fn send_control(&self, msg: &ControlMessage) -> Result<(), StreamError> {
        let msg = control(msg).map_err(|_| StreamError::Cancelled)?;
        self.enqueue(msg).await
    }

    /// Records that the peer was heard from just now.
    pub(super) fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the peer was last heard from.
    pub(super) fn silent_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)))
    }

    /// The stream `id`, if it is open.
    pub(super) fn get(&self, id: StreamId) -> Option<Arc<StreamState>> {
        lock(&self.streams).get(&id).cloned()
    }

    /// Resets a stream from our side: tells the peer, and fails everything local.
    ///
    /// The reset is queued *behind* whatever was already queued (from a task, since this runs
    /// in synchronous code such as a drop), so that it never overtakes this stream's head or
    /// last data: a peer must not see "reset" before a response it was already sent.
    pub(super) fn reset_local(
        self: &Arc<Self>,
        state: &StreamState,
        code: ResetCode,
        message: String,
    ) {
        if state.reset.swap(true, Ordering::AcqRel) {
            return;
        }
        let msg = ControlMessage::Reset {
            stream_id: state.id,
            code,
            message,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let shared = self.clone();
                rt.spawn(async move {
                    let _ = shared.send_control(&msg).await; // connection gone: nothing to tell
                });
            }
            Err(_) => self.push_urgent(Urgent::Control(msg)),
        }
        state.fail(match code {
            ResetCode::FlowControl => StreamError::FlowControl,
            _ => StreamError::Cancelled,
        });
    }

    /// Our reader consumed `n` bytes of `state`: credit them back once enough is pending.
    pub(super) fn consumed(&self, state: &Arc<StreamState>, n: usize) {
        if n == 0 {
            return;
        }
        let pending = state.pending_credit.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        let threshold = u64::from(state.window.load(Ordering::Acquire) / 4).max(1);
        if pending >= threshold && !state.credit_queued.swap(true, Ordering::AcqRel) {
            self.push_urgent(Urgent::Credit(Arc::downgrade(state)));
        }
    }

    /// A new stream's state (not yet in the table).
    pub(super) fn new_stream(&self, id: StreamId, on_abandon: OnAbandon) -> Arc<StreamState> {
        Arc::new(StreamState {
            id,
            recv: Pipe::new(self.cfg.initial_window as usize),
            window: AtomicU32::new(self.cfg.initial_window),
            tuning: Mutex::new(Tuning::new()),
            credit: Semaphore::new(self.cfg.initial_window as usize),
            granted: AtomicU64::new(u64::from(self.cfg.initial_window)),
            cancel: StreamCancel::default(),
            head_tx: Mutex::new(None),
            sent_end: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            failure: Mutex::new(None),
            pending_credit: AtomicU64::new(0),
            credit_queued: AtomicBool::new(false),
            on_abandon,
            halves: AtomicU8::new(0),
        })
    }

    /// Queues a round-trip probe, unless one is queued already.
    pub(super) fn request_ping(&self) {
        if !self.ping_queued.swap(true, Ordering::AcqRel) {
            self.push_urgent(Urgent::Ping);
        }
    }

    /// (Writer) the payload of a ping about to be written; records when it went out.
    pub(super) fn ping_payload(&self) -> Bytes {
        lock(&self.rtt).probe()
    }

    /// A pong arrived: if it answers our latest ping, one more round-trip sample.
    pub(super) fn on_pong(&self, payload: &[u8]) {
        lock(&self.rtt).on_pong(payload);
    }

    /// The smoothed round-trip time, once a ping was answered.
    pub(super) fn srtt(&self) -> Option<Duration> {
        lock(&self.rtt).srtt()
    }

    /// (Writer) `credited` bytes of credit are about to be returned on `state`: grows the
    /// stream's receive window if the reader consumed the last whole window within two round
    /// trips (see [`next_window`]). Returns the growth, to add to the credit sent; the pipe
    /// already accepts the larger window when this returns.
    pub(super) fn grow_window(&self, state: &StreamState, credited: u64) -> u64 {
        let window = state.window.load(Ordering::Acquire);
        let max = self.cfg.max_window;
        if window >= max {
            return 0; // grown to the limit, or auto-tuning off
        }
        let Some(elapsed) = lock(&state.tuning).window_consumed(credited, window) else {
            return 0;
        };
        let (srtt, probe_out) = {
            let rtt = lock(&self.rtt);
            (rtt.srtt(), rtt.probe_in_flight())
        };
        if srtt.is_none() && !probe_out {
            // No sample and no probe out (the opening one not written yet): ask for one, so
            // that the next window can be judged. A probe that is out is not replaced: over
            // TCP its pong comes, and a new probe would make that pong unmatched.
            self.request_ping();
        }
        let grown = next_window(elapsed, srtt, window, max);
        if grown <= window {
            return 0;
        }
        // Room first, credit after: the peer may use the new credit as soon as it arrives.
        state.recv.raise_limit(grown as usize);
        state.window.store(grown, Ordering::Release);
        debug!(
            stream = state.id,
            window = grown,
            ?elapsed,
            ?srtt,
            "receive window grew"
        );
        u64::from(grown - window)
    }

    /// Lets held streams open (the welcome is queued, ahead of their heads).
    pub(super) fn allow_streams(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.allowed.notify_waiters();
    }

    /// Waits while streams are held; `ConnectionClosed` if the connection ends first.
    pub(super) async fn streams_allowed(&self) -> Result<(), StreamError> {
        while self.held.load(Ordering::SeqCst) {
            let allowed = self.allowed.notified();
            tokio::pin!(allowed);
            allowed.as_mut().enable();
            if !self.held.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                () = allowed => {}
                () = self.cancel.cancelled() => return Err(StreamError::ConnectionClosed),
            }
        }
        Ok(())
    }

    /// A stream left the table, which `now_empty` says it left empty: wakes a waiter of
    /// [`Shared::wait_idle`], if there is one.
    pub(super) fn stream_removed(&self, now_empty: bool) {
        if now_empty && self.idle_watched.load(Ordering::SeqCst) {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no stream is open (or the connection ended), then refuses new streams
    /// from that moment on: a stream is either opened before, and waited for, or refused.
    pub(super) async fn wait_idle(&self) {
        self.idle_watched.store(true, Ordering::SeqCst);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let streams = lock(&self.streams);
                if streams.is_empty() || self.cancel.is_cancelled() {
                    self.closing.store(true, Ordering::SeqCst);
                    return;
                }
            }
            tokio::select! {
                () = notified => {}
                () = self.cancel.cancelled() => return,
            }
        }
    }

    /// Tears the connection down: every stream fails with `ConnectionClosed`.
    pub(super) fn shutdown(&self, reason: String) {
        self.set_reason(reason);
        // Cancel before collecting: stream creation checks the token under the streams lock,
        // so a stream is either collected here or never created.
        self.cancel.cancel();
        let streams: Vec<_> = lock(&self.streams).values().cloned().collect();
        for s in streams {
            s.fail(StreamError::ConnectionClosed);
        }
    }
}
