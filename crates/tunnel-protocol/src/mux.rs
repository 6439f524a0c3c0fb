//! Many concurrent streams over one WebSocket.
//!
//! [`start`] splits a WebSocket into three tasks: a **reader** that routes every incoming frame
//! to its stream, a **writer** that owns the socket's sink (everything else hands it messages
//! through one bounded channel and it writes them in batches, one flush per batch), and a
//! **keepalive** that pings and drops a peer that went silent.
//!
//! # Flow control
//! Each stream has, per direction, a credit window that starts at [`MuxConfig::initial_window`]
//! bytes. A [`BodySender`] waits for credit before it sends; a [`BodyReceiver`] returns credit
//! (a [`ControlMessage::Window`]) only once its reader has *consumed* bytes, i.e. passed them on
//! to the public client or the local service. So at most one window per stream and direction is
//! ever buffered, whatever the speeds on either side, and a slow reader slows its own stream
//! only. A peer that sends past its credit gets that stream reset.
//!
//! ## Window auto-tuning
//! A fixed window caps a stream at one window per round trip (1 MiB over a 50 ms path: about
//! 20 MB/s), so the *receiver* grows a stream's window towards bandwidth × round-trip time, in
//! the way of QUIC's flow-control auto-tuning:
//! - both ends measure the round-trip time of the connection with WebSocket pings (one right
//!   after start, then every keepalive), smoothed like TCP's SRTT;
//! - each time a stream's reader has consumed a whole window, the receiver looks at how long
//!   that took. Under two round trips means the reader took everything the window let through:
//!   the window, not the reader, is the bottleneck, so it doubles, up to
//!   [`MuxConfig::max_window`], and the extra credit goes out with that credit update.
//!
//! A window never shrinks (granted credit cannot be taken back), and a reader slower than one
//! window per two round trips (1 MiB on a 50 ms path: 10 MB/s) never makes it grow, however
//! long the body, so a slow public client costs no more memory than before. The bound per
//! stream and direction is `max_window` bytes buffered, reached only by a reader that keeps up
//! on a path where the round trip is the limit. On loopback or a LAN (round trips well under a
//! millisecond) windows in practice stay at `initial_window`.
//!
//! Judging a whole window, rather than the time between two consecutive credit updates (as
//! QUIC implementations do), matters: a slow reader that wakes up after a pause drains its
//! full buffer in a burst, and the updates of that burst are close together although the
//! reader is slow.
//!
//! Credit returns, resets and pings must be sent from synchronous code (a body being polled, a
//! drop) or ahead of queued data, so they go through a small "urgent" queue instead of the
//! bounded channel. It stays bounded because each stream has at most one credit entry and one
//! reset queued at a time, and the connection at most one ping.
//!
//! # Stream lifetime
//! A stream ends cleanly once both directions sent their end marker. When the last handle of a
//! stream is dropped before that, the stream is reset (`cancelled`) so that the peer stops work
//! for it at once: this is how a public client that goes away cancels the local request.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::frame::{DataFrame, Frame};
use crate::message::{
    ControlMessage, GoodbyeReason, RequestHead, ResetCode, ResponseHead, StreamId,
};
use crate::pipe::{Pipe, Push};
use crate::ws::{self, WebSocket};
use crate::{ProtocolError, StreamError};

/// Upper bound on the credit a peer may grant on one stream; more is a protocol violation.
/// [`MuxConfig::max_window`] is capped to it, so that our own grants never trip a peer.
const MAX_WINDOW: u64 = 1 << 30;
/// Capacity of the writer's channel, in messages.
const OUT_QUEUE: usize = 64;
/// Capacity of the channel of [`Event`]s to the owner of the connection.
const EVENT_QUEUE: usize = 64;
/// Most messages the writer feeds before one flush.
const WRITE_BATCH: usize = 64;
/// Buffered bytes past which the writer writes out before taking more messages.
const WRITE_CHUNK: usize = 64 * 1024;
/// Below this many buffered bytes the writer yields once before writing, to gather more.
const YIELD_BELOW: usize = 4 * 1024;

/// Tunables of one client connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Credit each stream starts with per direction, in bytes: what a stream's receiver buffers
    /// at most until auto-tuning finds the window is its bottleneck (see the module doc).
    pub initial_window: u32,
    /// Largest receive window auto-tuning may grow a stream to, in bytes: the most we ever
    /// buffer for one stream and direction. Equal to `initial_window` turns auto-tuning off;
    /// below it counts as equal, and it is capped at 1 GiB (what a peer accepts).
    pub max_window: u32,
    /// Largest payload of one data frame, in bytes.
    pub max_frame_size: u32,
    /// Most concurrent streams; the server answers 503 past it, the client refuses them.
    pub max_streams: usize,
    /// How often to ping the peer.
    pub ping_interval: Duration,
    /// A peer silent (no frame, no pong) for this long is considered dead.
    pub dead_after: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            initial_window: 1024 * 1024,
            max_window: 16 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_streams: 1024,
            ping_interval: Duration::from_secs(20),
            dead_after: Duration::from_secs(60),
        }
    }
}

/// Which end of the connection we are: the server opens streams, the client accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `tunnel-server`.
    Server,
    /// `tunnel-client`.
    Client,
}

/// Something the owner of the connection has to act on.
#[derive(Debug)]
pub enum Event {
    /// (Client role) the server opened a stream for a public request.
    Request {
        /// The request head.
        head: RequestHead,
        /// The stream to read the request body from and send the response on.
        stream: Stream,
    },
    /// The peer said it is about to close the connection.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
        /// Human-readable detail.
        message: String,
    },
}

/// Handle to a running connection; cheap to clone.
#[derive(Clone, Debug)]
pub struct Mux {
    shared: Arc<Shared>,
}

/// What the writer is asked to write. Data frames keep their payload as is: the writer
/// formats them straight into its buffer, with no message built in between.
#[derive(Debug)]
enum Outgoing {
    /// A control message, already JSON.
    Control(String),
    /// Body bytes.
    Data(DataFrame),
    /// A close frame, after which the writer stops.
    Close { code: u16, reason: String },
}

/// WebSocket close codes used here (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL: u16 = 1002;

#[derive(Debug)]
enum Urgent {
    Credit(Weak<StreamState>),
    Control(ControlMessage),
    /// The answer to a ping of the peer, echoing its payload.
    Pong(Bytes),
    /// A round-trip probe; its payload and send time are made when it is written.
    Ping,
}

/// Round-trip measurement with WebSocket pings. The peer's WebSocket answers a ping with a pong
/// carrying the same payload by itself, so this works whatever the peer's version.
#[derive(Debug, Default)]
struct Rtt {
    /// Payload of the next ping: a counter, so that a pong can be matched to its ping.
    next_probe: u64,
    /// The latest ping written (payload, when), until its pong arrives. Only the latest counts:
    /// the pong of an older one, or an unsolicited pong (RFC 6455 allows them), is ignored.
    in_flight: Option<(u64, Instant)>,
    /// Smoothed round-trip time, once a pong came back.
    srtt: Option<Duration>,
}

/// New smoothed round-trip time after one more sample: the first sample sets it, later ones
/// move it by an eighth (TCP's SRTT, RFC 6298), so that one delayed pong does not swing it.
fn smooth_rtt(srtt: Option<Duration>, sample: Duration) -> Duration {
    match srtt {
        None => sample,
        Some(srtt) => srtt.saturating_mul(7).saturating_add(sample) / 8,
    }
}

/// The receive window of a stream whose reader just consumed a whole `window` of bytes in
/// `elapsed`.
///
/// Under two smoothed round trips means the reader took everything the window allowed as fast
/// as it came: the window is the bottleneck, so it doubles, up to `max`. Anything slower (or no
/// round-trip estimate yet) keeps it: a slow reader must not cost memory. A window never
/// shrinks: credit already granted cannot be taken back.
fn next_window(elapsed: Duration, srtt: Option<Duration>, window: u32, max: u32) -> u32 {
    match srtt {
        Some(srtt) if window < max && elapsed < srtt.saturating_mul(2) => {
            window.saturating_mul(2).min(max)
        }
        _ => window,
    }
}

/// Auto-tuning bookkeeping of one stream's receive side, only touched by the writer task when
/// it sends the stream's credit.
#[derive(Debug)]
struct Tuning {
    /// Start of the current measurement: the stream's creation, or the credit update that ended
    /// the previous measurement.
    since: Instant,
    /// Bytes credited back to the peer since `since`.
    credited: u64,
}

#[derive(Debug)]
struct Shared {
    cfg: MuxConfig,
    role: Role,
    streams: Mutex<HashMap<StreamId, Arc<StreamState>>>,
    next_id: AtomicU32,
    out: mpsc::Sender<Outgoing>,
    urgent: Mutex<VecDeque<Urgent>>,
    urgent_notify: Notify,
    cancel: CancellationToken,
    close_reason: Mutex<Option<String>>,
    rtt: Mutex<Rtt>,
    ping_queued: AtomicBool,
    started: Instant,
    last_seen_ms: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

/// What to do when a stream's receiver is dropped before its end.
#[derive(Debug, Clone, Copy)]
enum OnAbandon {
    /// Reset the whole stream (server: the public client left).
    Reset,
    /// Keep the stream; discard further bytes and keep returning credit (client: the local
    /// service answered without reading the whole request body).
    Discard,
}

#[derive(Debug)]
struct StreamState {
    id: StreamId,
    recv: Pipe,
    /// Current receive window (starts at `initial_window`, only grows): the pipe's limit, and
    /// the basis of the credit-return threshold.
    window: AtomicU32,
    tuning: Mutex<Tuning>,
    credit: Semaphore,
    granted: AtomicU64,
    cancel: CancellationToken,
    head_tx: Mutex<Option<oneshot::Sender<Result<ResponseHead, StreamError>>>>,
    sent_end: AtomicBool,
    reset: AtomicBool,
    failure: Mutex<Option<StreamError>>,
    pending_credit: AtomicU64,
    credit_queued: AtomicBool,
    on_abandon: OnAbandon,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks; recover rather than propagate poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StreamState {
    fn fail(&self, err: StreamError) {
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

    fn failure(&self) -> StreamError {
        lock(&self.failure)
            .clone()
            .unwrap_or(StreamError::Cancelled)
    }
}

impl Shared {
    fn push_urgent(&self, u: Urgent) {
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
    fn set_reason(&self, reason: String) {
        let mut r = lock(&self.close_reason);
        if r.is_none() {
            debug!(%reason, "client connection closing");
            *r = Some(reason);
        }
    }

    /// Queues a message for the writer, failing at once if the connection ends meanwhile.
    async fn enqueue(&self, msg: Outgoing) -> Result<(), StreamError> {
        tokio::select! {
            r = self.out.send(msg) => r.map_err(|_| StreamError::ConnectionClosed),
            _ = self.cancel.cancelled() => Err(StreamError::ConnectionClosed),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)))
    }

    fn get(&self, id: StreamId) -> Option<Arc<StreamState>> {
        lock(&self.streams).get(&id).cloned()
    }

    /// Resets a stream from our side: tells the peer, and fails everything local.
    ///
    /// The reset is queued *behind* whatever was already queued (from a task, since this runs
    /// in synchronous code such as a drop), so that it never overtakes this stream's head or
    /// last data: a peer must not see "reset" before a response it was already sent.
    fn reset_local(self: &Arc<Self>, state: &StreamState, code: ResetCode, message: String) {
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
                    if let Ok(m) = control(&msg) {
                        let _ = shared.enqueue(m).await; // connection gone: nothing to tell
                    }
                });
            }
            Err(_) => self.push_urgent(Urgent::Control(msg)),
        }
        state.fail(match code {
            ResetCode::FlowControl => StreamError::FlowControl,
            _ => StreamError::Cancelled,
        });
    }

    fn consumed(&self, state: &Arc<StreamState>, n: usize) {
        if n == 0 {
            return;
        }
        let pending = state.pending_credit.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        let threshold = u64::from(state.window.load(Ordering::Acquire) / 4).max(1);
        if pending >= threshold && !state.credit_queued.swap(true, Ordering::AcqRel) {
            self.push_urgent(Urgent::Credit(Arc::downgrade(state)));
        }
    }

    fn new_stream(&self, id: StreamId, on_abandon: OnAbandon) -> Arc<StreamState> {
        Arc::new(StreamState {
            id,
            recv: Pipe::new(self.cfg.initial_window as usize),
            window: AtomicU32::new(self.cfg.initial_window),
            tuning: Mutex::new(Tuning {
                since: Instant::now(),
                credited: 0,
            }),
            credit: Semaphore::new(self.cfg.initial_window as usize),
            granted: AtomicU64::new(u64::from(self.cfg.initial_window)),
            cancel: self.cancel.child_token(),
            head_tx: Mutex::new(None),
            sent_end: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            failure: Mutex::new(None),
            pending_credit: AtomicU64::new(0),
            credit_queued: AtomicBool::new(false),
            on_abandon,
        })
    }

    /// Queues a round-trip probe, unless one is queued already.
    fn request_ping(&self) {
        if !self.ping_queued.swap(true, Ordering::AcqRel) {
            self.push_urgent(Urgent::Ping);
        }
    }

    /// (Writer) the payload of a ping about to be written; records when it went out.
    fn ping_payload(&self) -> Bytes {
        let mut rtt = lock(&self.rtt);
        let probe = rtt.next_probe;
        rtt.next_probe = probe.wrapping_add(1);
        rtt.in_flight = Some((probe, Instant::now()));
        Bytes::copy_from_slice(&probe.to_be_bytes())
    }

    /// A pong arrived: if it answers our latest ping, one more round-trip sample.
    fn on_pong(&self, payload: &[u8]) {
        let Ok(probe) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let probe = u64::from_be_bytes(probe);
        let mut rtt = lock(&self.rtt);
        if let Some((want, sent)) = rtt.in_flight {
            if want == probe {
                let srtt = smooth_rtt(rtt.srtt, sent.elapsed());
                rtt.srtt = Some(srtt);
                rtt.in_flight = None;
            }
        }
    }

    fn srtt(&self) -> Option<Duration> {
        lock(&self.rtt).srtt
    }

    /// (Writer) `credited` bytes of credit are about to be returned on `state`: grows the
    /// stream's receive window if the reader consumed the last whole window within two round
    /// trips (see [`next_window`]). Returns the growth, to add to the credit sent; the pipe
    /// already accepts the larger window when this returns.
    fn grow_window(&self, state: &StreamState, credited: u64) -> u64 {
        let window = state.window.load(Ordering::Acquire);
        let max = self.cfg.max_window;
        if window >= max {
            return 0; // grown to the limit, or auto-tuning off
        }
        let elapsed = {
            let mut tuning = lock(&state.tuning);
            tuning.credited += credited;
            if tuning.credited < u64::from(window) {
                return 0;
            }
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(tuning.since);
            tuning.since = now;
            tuning.credited = 0;
            elapsed
        };
        let srtt = self.srtt();
        if srtt.is_none() && lock(&self.rtt).in_flight.is_none() {
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

    /// Tears the connection down: every stream fails with `ConnectionClosed`.
    fn shutdown(&self, reason: String) {
        self.set_reason(reason);
        // Cancel before collecting: stream creation checks the token under the streams lock,
        // so a stream is either collected here or never created.
        self.cancel.cancel();
        let streams: Vec<_> = lock(&self.streams).values().cloned().collect();
        for s in streams {
            s.fail(StreamError::ConnectionClosed);
        }
    }

    fn on_data(self: &Arc<Self>, frame: DataFrame) {
        self.bytes_received
            .fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
        let Some(state) = self.get(frame.stream_id) else {
            // Frames for a stream that just ended or was reset are normal (they were in flight);
            // ones for a stream that never existed are logged.
            if self.role == Role::Server && frame.stream_id >= self.next_id.load(Ordering::Relaxed)
            {
                warn!(
                    stream = frame.stream_id,
                    "data for a stream that was never opened"
                );
            }
            return;
        };
        match state.recv.push(frame.payload, frame.end) {
            Push::Queued => {}
            Push::Discarded(n) => self.consumed(&state, n),
            Push::Overflow => {
                warn!(stream = state.id, "peer exceeded its flow-control window");
                self.reset_local(&state, ResetCode::FlowControl, "window exceeded".into());
            }
            Push::Closed => {
                if !state.reset.load(Ordering::Acquire) && !state.recv.failed() {
                    warn!(stream = state.id, "data after the end of the stream");
                    self.reset_local(&state, ResetCode::ProtocolError, "data after end".into());
                }
            }
        }
    }

    /// Handles a control message; returns an error only for violations that end the connection.
    async fn on_control(
        self: &Arc<Self>,
        msg: ControlMessage,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), ProtocolError> {
        match msg {
            ControlMessage::Window {
                stream_id,
                increment,
            } => {
                if let Some(state) = self.get(stream_id) {
                    let granted = state
                        .granted
                        .fetch_add(u64::from(increment), Ordering::AcqRel)
                        + u64::from(increment);
                    let available = state.credit.available_permits() as u64;
                    if available + u64::from(increment) > MAX_WINDOW || granted > u64::MAX / 2 {
                        warn!(stream = stream_id, "peer granted an absurd window");
                        self.reset_local(&state, ResetCode::FlowControl, "window too large".into());
                    } else {
                        state.credit.add_permits(increment as usize);
                    }
                }
            }
            ControlMessage::Reset {
                stream_id,
                code,
                message,
            } => {
                if let Some(state) = self.get(stream_id) {
                    debug!(stream = stream_id, ?code, %message, "stream reset by peer");
                    state.reset.store(true, Ordering::Release);
                    state.fail(StreamError::Reset { code, message });
                }
            }
            ControlMessage::Response(head) if self.role == Role::Server => {
                let Some(state) = self.get(head.stream_id) else {
                    return Ok(());
                };
                let tx = lock(&state.head_tx).take();
                match tx {
                    Some(tx) => {
                        if head.end_stream {
                            state.recv.push(Bytes::new(), true);
                        }
                        let _ = tx.send(Ok(head)); // the public request may have gone
                    }
                    None => {
                        warn!(stream = state.id, "second response head for one stream");
                        self.reset_local(
                            &state,
                            ResetCode::ProtocolError,
                            "second response head".into(),
                        );
                    }
                }
            }
            ControlMessage::Request(head) if self.role == Role::Client => {
                let id = head.stream_id;
                let (state, refused) = {
                    let mut streams = lock(&self.streams);
                    if self.cancel.is_cancelled() {
                        return Ok(());
                    }
                    if id == 0 || streams.contains_key(&id) {
                        return Err(ProtocolError::Unexpected(format!(
                            "request head reuses stream id {id}"
                        )));
                    }
                    if streams.len() >= self.cfg.max_streams {
                        (None, true)
                    } else {
                        let state = self.new_stream(id, OnAbandon::Discard);
                        streams.insert(id, state.clone());
                        (Some(state), false)
                    }
                };
                if refused {
                    self.push_urgent(Urgent::Control(ControlMessage::Reset {
                        stream_id: id,
                        code: ResetCode::Refused,
                        message: "too many concurrent streams".into(),
                    }));
                    return Ok(());
                }
                if let Some(state) = state {
                    if head.end_stream {
                        state.recv.push(Bytes::new(), true);
                    }
                    let stream = Stream::new(self.clone(), state);
                    if events.send(Event::Request { head, stream }).await.is_err() {
                        debug!("request arrived while the client is shutting down");
                    }
                }
            }
            ControlMessage::Goodbye { reason, message } => {
                let _ = events.send(Event::Goodbye { reason, message }).await; // owner gone: closing anyway
            }
            other => {
                return Err(ProtocolError::Unexpected(format!(
                    "{} not allowed here",
                    message_name(&other)
                )))
            }
        }
        Ok(())
    }
}

fn message_name(m: &ControlMessage) -> &'static str {
    match m {
        ControlMessage::Hello(_) => "hello",
        ControlMessage::Welcome(_) => "welcome",
        ControlMessage::Request(_) => "request",
        ControlMessage::Response(_) => "response",
        ControlMessage::Window { .. } => "window",
        ControlMessage::Reset { .. } => "reset",
        ControlMessage::Goodbye { .. } => "goodbye",
    }
}

/// Starts the reader, writer and keepalive tasks on an established (and handshaken) WebSocket.
///
/// Returns the handle and the channel of [`Event`]s; the channel closes when the connection
/// ends, for whatever reason ([`Mux::close_reason`] then says which).
pub fn start<S>(ws: WebSocket<S>, mut cfg: MuxConfig, role: Role) -> (Mux, mpsc::Receiver<Event>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let cap = u32::try_from(MAX_WINDOW).unwrap_or(u32::MAX);
    cfg.max_window = cfg.max_window.min(cap).max(cfg.initial_window);
    let WebSocket {
        reader: mut stream,
        writer: sink,
    } = ws;
    stream.set_max_message(crate::frame::max_message(cfg.max_frame_size));
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let shared = Arc::new(Shared {
        cfg,
        role,
        streams: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
        out: out_tx,
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
    });
    tokio::spawn(read_loop(shared.clone(), stream, ev_tx).in_current_span());
    tokio::spawn(write_loop(shared.clone(), sink, out_rx).in_current_span());
    tokio::spawn(keepalive(shared.clone()).in_current_span());
    // A first round-trip sample, so that windows can grow from the first streams on.
    shared.request_ping();
    (Mux { shared }, ev_rx)
}

async fn read_loop<R>(shared: Arc<Shared>, mut stream: ws::Reader<R>, events: mpsc::Sender<Event>)
where
    R: AsyncRead + Unpin,
{
    let max_payload = shared.cfg.max_frame_size as usize;
    let reason = loop {
        let msg = tokio::select! {
            _ = shared.cancel.cancelled() => break "closed locally".to_string(),
            _ = events.closed() => break "the connection's owner went away".to_string(),
            m = stream.next() => m,
        };
        let msg = match msg {
            None => break "connection closed".to_string(),
            Some(Err(e)) => break format!("websocket error: {e}"),
            Some(Ok(m)) => m,
        };
        shared.touch();
        let result = match msg {
            ws::Message::Binary(bytes) => DataFrame::decode(bytes, max_payload).map(|d| {
                shared.on_data(d);
            }),
            ws::Message::Text(text) => match Frame::decode_text(&text) {
                Ok(c) => shared.on_control(c, &events).await,
                Err(e) => Err(e),
            },
            ws::Message::Ping(payload) => {
                shared.push_urgent(Urgent::Pong(payload));
                Ok(())
            }
            ws::Message::Pong(payload) => {
                shared.on_pong(&payload);
                Ok(())
            }
            ws::Message::Close(frame) => {
                break match frame {
                    Some(f) if !f.reason.is_empty() => format!("peer closed: {}", f.reason),
                    _ => "peer closed".to_string(),
                };
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "protocol violation, closing the client connection");
            let reason = format!("protocol error: {e}");
            shared.set_reason(reason.clone());
            // Best effort: tell the peer why before closing.
            let _ = shared
                .out
                .try_send(goodbye(GoodbyeReason::ProtocolError, &reason));
            let _ = shared.out.try_send(Outgoing::Close {
                code: CLOSE_PROTOCOL,
                reason: reason.clone(),
            });
            // Give the writer a moment to flush the reason; the connection is closed either way.
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.cancel.cancelled()).await;
            break reason;
        }
    };
    shared.shutdown(reason);
}

/// A control message as the writer takes it.
fn control(msg: &ControlMessage) -> Result<Outgoing, serde_json::Error> {
    serde_json::to_string(msg).map(Outgoing::Control)
}

fn goodbye(reason: GoodbyeReason, message: &str) -> Outgoing {
    let msg = ControlMessage::Goodbye {
        reason,
        message: message.to_string(),
    };
    control(&msg)
        .unwrap_or_else(|_| Outgoing::Control(r#"{"type":"goodbye","reason":"other"}"#.into()))
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

async fn write_loop<W>(
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
            let mut fed = 0;
            let mut yielded = urgent_only;
            while !closing && fed < WRITE_BATCH {
                feed_urgent(&shared, &mut sink)?;
                // Many streams' frames share one write, but the buffer stays near one chunk.
                if sink.buffered() >= WRITE_CHUNK {
                    sink.flush()
                        .await
                        .map_err(|e| format!("websocket error: {e}"))?;
                }
                match out.try_recv() {
                    Ok(m) => {
                        closing = put(&mut sink, m);
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
            if !closing {
                feed_urgent(&shared, &mut sink)?;
            }
            sink.flush()
                .await
                .map_err(|e| format!("websocket error: {e}"))?;
            if out.is_empty() {
                sink.release_idle();
            }
            if closing {
                let _ = sink.shutdown().await; // the peer may be gone: closing anyway
                return Err("closed locally".to_string());
            }
        }
    };
    // Cancellation must win even while a write is blocked on a peer that stopped reading:
    // dropping the sink (and the reader dropping the stream) releases the socket.
    let result: Result<(), String> = tokio::select! {
        r = work => r,
        _ = shared.cancel.cancelled() => Ok(()),
    };
    if let Err(reason) = result {
        shared.shutdown(reason);
    }
}

fn feed_urgent<W: AsyncWrite + Unpin>(
    shared: &Shared,
    sink: &mut ws::Writer<W>,
) -> Result<(), String> {
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
        let json = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        sink.text(&json);
    }
}

async fn keepalive(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let silent = shared.silent_for();
        if silent > shared.cfg.dead_after {
            warn!(
                silent_secs = silent.as_secs(),
                "peer stopped answering pings"
            );
            shared.shutdown(format!("no pong for {:.1}s", silent.as_secs_f64()));
            return;
        }
        // Through the urgent queue, ahead of queued data: the pong also refreshes the round-trip
        // estimate, which queueing on our side would inflate.
        shared.request_ping();
    }
}

impl Mux {
    /// (Server role) opens a new stream for a public request. The returned receiver yields the
    /// client's response head (or why none will come). Send the [`RequestHead`] with
    /// [`Mux::send_control`] before any body bytes.
    pub fn open_stream(
        &self,
    ) -> Result<(Stream, oneshot::Receiver<Result<ResponseHead, StreamError>>), StreamError> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 || id == u32::MAX {
            // 4 billion streams on one connection: refuse rather than reuse ids.
            return Err(StreamError::ConnectionClosed);
        }
        let state = shared.new_stream(id, OnAbandon::Reset);
        let (tx, rx) = oneshot::channel();
        *lock(&state.head_tx) = Some(tx);
        {
            let mut streams = lock(&shared.streams);
            if shared.cancel.is_cancelled() {
                return Err(StreamError::ConnectionClosed);
            }
            if streams.len() >= shared.cfg.max_streams {
                return Err(StreamError::Reset {
                    code: ResetCode::Refused,
                    message: "too many concurrent streams".into(),
                });
            }
            streams.insert(id, state.clone());
        }
        Ok((Stream::new(shared.clone(), state), rx))
    }

    /// Queues a control message behind everything queued before it.
    pub async fn send_control(&self, msg: ControlMessage) -> Result<(), StreamError> {
        let msg = control(&msg).map_err(|_| StreamError::Cancelled)?;
        self.shared.enqueue(msg).await
    }

    /// Sends a goodbye, then a close frame, then ends the connection; takes at most two
    /// seconds even if the peer stopped reading.
    pub async fn close(&self, reason: GoodbyeReason, message: &str) {
        let shared = &self.shared;
        shared.set_reason(format!("closed: {message}"));
        let graceful = async {
            if shared.enqueue(goodbye(reason, message)).await.is_ok()
                && shared
                    .enqueue(Outgoing::Close {
                        code: CLOSE_NORMAL,
                        reason: message.to_string(),
                    })
                    .await
                    .is_ok()
            {
                // The writer shuts the connection down once the close frame is flushed.
                shared.cancel.cancelled().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful).await;
        shared.shutdown(format!("closed: {message}"));
    }

    /// Sends a goodbye without closing: in-flight streams may still finish.
    pub async fn announce(&self, reason: GoodbyeReason, message: &str) {
        let _ = self.shared.enqueue(goodbye(reason, message)).await; // closed already: fine
    }

    /// Ends the connection at once, without telling the peer.
    pub fn abort(&self, reason: &str) {
        self.shared.shutdown(reason.to_string());
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        lock(&self.shared.close_reason).clone()
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        lock(&self.shared.streams).len()
    }

    /// Smoothed round-trip time of the connection, once a ping was answered.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.srtt()
    }

    /// Body bytes sent and received on this connection so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.bytes_sent.load(Ordering::Relaxed),
            self.shared.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// The configuration in force.
    pub fn config(&self) -> &MuxConfig {
        &self.shared.cfg
    }
}

/// One stream: a sending half and a receiving half, usable from different tasks.
#[derive(Debug)]
pub struct Stream {
    /// The stream id.
    pub id: StreamId,
    /// Sends body bytes to the peer.
    pub sender: BodySender,
    /// Body bytes from the peer.
    pub receiver: BodyReceiver,
}

#[derive(Debug)]
struct StreamCore {
    state: Arc<StreamState>,
    shared: Arc<Shared>,
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        let state = &self.state;
        lock(&self.shared.streams).remove(&state.id);
        let clean = state.sent_end.load(Ordering::Acquire) && state.recv.end_received();
        if !clean && !state.reset.load(Ordering::Acquire) && !self.shared.cancel.is_cancelled() {
            self.shared
                .reset_local(state, ResetCode::Cancelled, "stream abandoned".into());
        }
        state.cancel.cancel();
    }
}

impl Stream {
    fn new(shared: Arc<Shared>, state: Arc<StreamState>) -> Self {
        let core = Arc::new(StreamCore { state, shared });
        Self {
            id: core.state.id,
            sender: BodySender { core: core.clone() },
            receiver: BodyReceiver { core },
        }
    }
}

/// The sending half of a stream.
#[derive(Debug)]
pub struct BodySender {
    core: Arc<StreamCore>,
}

impl BodySender {
    /// Sends bytes, split into frames, waiting for credit as needed.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        let max = self.core.shared.cfg.max_frame_size as usize;
        while !data.is_empty() {
            let n = self.acquire(data.len().min(max)).await?;
            let chunk = data.split_to(n);
            self.send_frame(chunk, false).await?;
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
            if data.is_empty() {
                self.send_frame(chunk, true).await?;
                self.core.state.sent_end.store(true, Ordering::Release);
                return Ok(());
            }
            self.send_frame(chunk, false).await?;
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

    /// Records that this direction has no body at all (the head said `end_stream`).
    pub fn mark_finished(&mut self) {
        self.core.state.sent_end.store(true, Ordering::Release);
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
        if let Ok(m) = control(&msg) {
            let _ = self.core.shared.enqueue(m).await; // connection gone: the peer knows
        }
        state.fail(StreamError::Cancelled);
    }

    /// Resolves when the stream is reset (by either side) or its connection ends.
    pub async fn cancelled(&self) {
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
    core: Arc<StreamCore>,
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
}

impl futures_util::Stream for BodyReceiver {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let state = &self.core.state;
        let poll = state.recv.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.core.shared.consumed(state, chunk.len());
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

/// Bytes each way of a [`splice`]d stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Bytes read from `io` and sent to the peer.
    pub sent: u64,
    /// Bytes received from the peer and written to `io`.
    pub received: u64,
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
) -> Result<SpliceStats, String>
where
    IO: AsyncRead + AsyncWrite + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut rd, mut wr) = tokio::io::split(io);
    let activity = AtomicU64::new(0);
    let started = Instant::now();
    let touch = || activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let result: Result<(), String> = {
        let up = async {
            let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
            loop {
                buf.reserve(16 * 1024);
                let n = rd
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                touch();
                if n == 0 {
                    return sender.finish().await.map_err(|e| e.to_string());
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                sender
                    .send(buf.split().freeze())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        };
        let down = async {
            while let Some(chunk) = receiver.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                touch();
                received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                wr.write_all(&chunk)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            wr.shutdown().await.map_err(|e| format!("shutdown: {e}"))
        };
        let idle_watch = async {
            let Some(idle) = idle else {
                return std::future::pending::<()>().await;
            };
            loop {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                let deadline = tokio::time::Instant::from_std(started + last + idle);
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        };
        tokio::pin!(up, down, idle_watch);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(e) => break Err(e),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(e) => break Err(e),
                },
                _ = &mut idle_watch => break Err("idle timeout".to_string()),
            }
            if up_done && down_done {
                break Ok(());
            }
        }
    };
    if matches!(&result, Err(e) if e == "idle timeout") {
        sender.reset(ResetCode::IdleTimeout, "no traffic for the idle timeout");
    }
    let stats = SpliceStats {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
    };
    // On error the halves are dropped unfinished, which resets the stream for the peer.
    result.map(|()| stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_rtt_sample_sets_the_estimate_and_later_ones_move_it_by_an_eighth() {
        assert_eq!(smooth_rtt(None, 40 * MS), 40 * MS);
        assert_eq!(smooth_rtt(Some(40 * MS), 120 * MS), 50 * MS);
        assert_eq!(smooth_rtt(Some(80 * MS), Duration::ZERO), 70 * MS);
        // Converges on a steady sample.
        let mut srtt = Some(200 * MS);
        for _ in 0..100 {
            srtt = Some(smooth_rtt(srtt, 10 * MS));
        }
        let srtt = srtt.expect("set");
        assert!(srtt >= 10 * MS && srtt < 11 * MS, "{srtt:?}");
        // No overflow on absurd samples.
        assert_eq!(
            smooth_rtt(Some(Duration::MAX), Duration::MAX),
            Duration::MAX / 8
        );
    }

    #[test]
    fn window_doubles_when_the_reader_drained_it_within_two_round_trips() {
        let srtt = Some(40 * MS);
        assert_eq!(next_window(30 * MS, srtt, 64 << 10, 4 << 20), 128 << 10);
        assert_eq!(next_window(79 * MS, srtt, 64 << 10, 4 << 20), 128 << 10);
        // Capped at the maximum, never past it.
        assert_eq!(next_window(MS, srtt, 3 << 20, 4 << 20), 4 << 20);
        assert_eq!(next_window(MS, srtt, 4 << 20, 4 << 20), 4 << 20);
        assert_eq!(next_window(MS, srtt, u32::MAX - 1, u32::MAX), u32::MAX);
    }

    #[test]
    fn window_stays_for_a_slow_reader_without_an_estimate_or_when_tuning_is_off() {
        let srtt = Some(40 * MS);
        // Two round trips or more: the reader, not the window, is the limit.
        assert_eq!(next_window(80 * MS, srtt, 64 << 10, 4 << 20), 64 << 10);
        assert_eq!(next_window(10_000 * MS, srtt, 64 << 10, 4 << 20), 64 << 10);
        // No round-trip sample yet: no basis for growth.
        assert_eq!(
            next_window(Duration::ZERO, None, 64 << 10, 4 << 20),
            64 << 10
        );
        // max == initial disables auto-tuning; a window above max (never set so) is kept.
        assert_eq!(
            next_window(Duration::ZERO, srtt, 64 << 10, 64 << 10),
            64 << 10
        );
        assert_eq!(
            next_window(Duration::ZERO, srtt, 128 << 10, 64 << 10),
            128 << 10
        );
        // A zero estimate (impossible in practice) never means "infinitely fast".
        assert_eq!(
            next_window(Duration::ZERO, Some(Duration::ZERO), 64 << 10, 4 << 20),
            64 << 10
        );
    }
}
