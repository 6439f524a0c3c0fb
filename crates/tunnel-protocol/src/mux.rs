//! Many concurrent streams over one WebSocket.
//!
//! [`start_server`] or [`start_client`] splits a WebSocket into three tasks: a **reader** that routes every incoming frame
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
//! # Streams in types
//! The server opens a stream with its request head ([`Mux::open_stream`],
//! [`Mux::send_request`]) and gets the answer through a [`ResponseFuture`]; the client is
//! handed an [`IncomingRequest`] and answers it by consuming its [`Responder`]. So a head goes
//! exactly once and before its body, and which end may do what is in the handle's type
//! ([`ServerMux`], [`ClientMux`]). Both sides stream an HTTP body into a stream with
//! [`pump()`], and join an upgraded connection to one with [`splice()`].
//!
//! # Stream lifetime
//! A stream ends cleanly once both directions sent their end marker. When the last handle of a
//! stream is dropped before that, the stream is reset (`cancelled`) so that the peer stops work
//! for it at once: this is how a public client that goes away cancels the local request.
//!
//! # Going away
//! A server that restarts tells the client with a goodbye that does not close
//! ([`Mux::announce`]), as HTTP/2's GOAWAY: the client connects again elsewhere while this
//! connection goes on carrying streams. [`Mux::close_when_idle`] then closes it once its
//! streams are done, refusing new ones from that moment (so that a caller racing with the
//! close learns before anything was sent).
//!
//! # Layout
//! This file is the entry point ([`start_server`], [`start_client`], the [`Mux`] handle); the
//! parts, each depending only on the ones listed before it:
//! - `config`: [`MuxConfig`]; `error`: [`StreamError`].
//! - `flow`: the flow-control policy (round-trip estimate, when a window grows), pure
//!   bookkeeping.
//! - `pipe`: one stream direction's receive queue, bounded in bytes.
//! - `shared`: the state every part shares (stream table, queues, close reason) and the
//!   operations on it that several parts need.
//! - `stream`: a stream's handles, [`BodySender`] and [`BodyReceiver`], each counting its bytes.
//! - `exchange`: the order of heads ([`RequestParts`], [`ResponseFuture`], [`IncomingRequest`],
//!   [`Responder`]).
//! - `events`: what an owner is told ([`Goodbye`], [`ClientEvent`]); `side`: which end a
//!   handle is ([`Side`]).
//! - `reader`, `writer`, `keepalive`: the three tasks of a connection.
//! - `pump`: an HTTP body into a stream ([`pump()`]); `splice`: an upgraded connection joined
//!   to a stream ([`splice()`]).

mod config;
mod error;
mod events;
mod exchange;
mod flow;
mod keepalive;
mod pipe;
mod pump;
mod reader;
mod shared;
mod side;
mod splice;
mod stream;
mod writer;

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub use self::config::MuxConfig;
pub use self::error::StreamError;
pub use self::events::{ClientEvent, Goodbye};
pub use self::exchange::{
    IncomingRequest, IncomingResponse, IncomingTcp, RequestParts, Responder, ResponseFuture,
    ResponseParts, TCP_CONNECTED,
};
pub use self::pump::{pump, PumpError};
pub use self::side::{ClientSide, ServerSide, Side};
pub(crate) use self::splice::Activity;
pub use self::splice::{splice, IoOp, SpliceError, SpliceStats};
pub use self::stream::{BodyReceiver, BodySender};
pub use crate::ws::Role;

use self::exchange::tcp_head;
use self::flow::MAX_WINDOW;
use self::shared::{goodbye, lock, OnAbandon, Outgoing, Shared, StreamState, CLOSE_NORMAL};
use self::stream::halves;
use crate::head_json::HeaderList;
use crate::message::{
    ControlMessage, GoodbyeReason, ResetCode, ResponseHead, StreamId, TcpOpen, Welcome,
};
use crate::ws::WebSocket;

/// Capacity of the channel of events to the owner of the connection.
const EVENT_QUEUE: usize = 64;

/// Handle to a running connection; cheap to clone. `S` says which end it is.
#[derive(Debug)]
pub struct Mux<S: Side> {
    shared: Arc<Shared>,
    side: PhantomData<fn() -> S>,
}

/// The server's end of a client connection: opens streams.
pub type ServerMux = Mux<ServerSide>;
/// The client's end: is handed the streams the server opens.
pub type ClientMux = Mux<ClientSide>;

impl<S: Side> Clone for Mux<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            side: PhantomData,
        }
    }
}

/// Starts the server's end on an established (and handshaken) WebSocket framed for
/// [`Role::Server`]. Returns the handle and the channel of goodbyes from the client; the
/// channel closes when the connection ends, for whatever reason ([`Mux::close_reason`] then
/// says which).
pub fn start_server<IO>(ws: WebSocket<IO>, cfg: MuxConfig) -> (ServerMux, mpsc::Receiver<Goodbye>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    start(ws, cfg)
}

/// Starts the client's end on a WebSocket framed for [`Role::Client`]. Returns the handle and
/// the channel of [`ClientEvent`]s, which closes when the connection ends.
pub fn start_client<IO>(
    ws: WebSocket<IO>,
    cfg: MuxConfig,
) -> (ClientMux, mpsc::Receiver<ClientEvent>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    start(ws, cfg)
}

fn start<S: Side, IO>(ws: WebSocket<IO>, mut cfg: MuxConfig) -> (Mux<S>, mpsc::Receiver<S::Event>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let cap = u32::try_from(MAX_WINDOW).unwrap_or(u32::MAX);
    cfg.max_window = cfg.max_window.min(cap).max(cfg.initial_window);
    let WebSocket {
        reader: mut stream,
        writer: sink,
    } = ws;
    stream.set_max_message(crate::frame::max_message(cfg.max_frame_size));
    let (out_tx, out_rx) = mpsc::channel(writer::OUT_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let shared = Arc::new(Shared::new(cfg, S::ROLE, out_tx));
    tokio::spawn(reader::read_loop::<S, _>(shared.clone(), stream, ev_tx).in_current_span());
    tokio::spawn(writer::write_loop(shared.clone(), sink, out_rx).in_current_span());
    tokio::spawn(keepalive::keepalive(shared.clone()).in_current_span());
    // A first round-trip sample, so that windows can grow from the first streams on.
    shared.request_ping();
    let side = PhantomData;
    (Mux { shared, side }, ev_rx)
}

impl Mux<ServerSide> {
    /// Opens a stream for a public request whose body follows (or, for an upgrade, whose
    /// direction stays open for the public client's bytes after a `101`): sends the head and
    /// returns the request body's sender and the response to come.
    pub async fn open_stream<H: HeaderList>(
        &self,
        request: RequestParts<H>,
    ) -> Result<(BodySender, ResponseFuture), StreamError> {
        self.open(|id| Ok(request.to_json(id, false)), false).await
    }

    /// Opens a stream for a public request without a body: the request direction ends with
    /// its head.
    pub async fn send_request<H: HeaderList>(
        &self,
        request: RequestParts<H>,
    ) -> Result<ResponseFuture, StreamError> {
        let (_finished, response) = self.open(|id| Ok(request.to_json(id, true)), true).await?;
        Ok(response)
    }

    /// Opens a raw TCP stream for a connection that came from `open`. Its answer is a
    /// `200` head ([`TCP_CONNECTED`]) once the client reached its local service, or a reset;
    /// then the halves carry the connection's bytes ([`splice()`]). Only for a client that
    /// announced [`crate::message::Feature::Tcp`]: an older one would take it for an HTTP
    /// `CONNECT`.
    pub async fn open_tcp(
        &self,
        open: TcpOpen,
    ) -> Result<(BodySender, ResponseFuture), StreamError> {
        let head = |id| {
            serde_json::to_string(&ControlMessage::Request(tcp_head(id, open)))
                .map_err(|_| StreamError::Cancelled)
        };
        self.open(head, false).await
    }

    /// Opens a stream whose head, as JSON, `head` writes for the stream's id.
    async fn open(
        &self,
        head: impl FnOnce(StreamId) -> Result<String, StreamError>,
        end_stream: bool,
    ) -> Result<(BodySender, ResponseFuture), StreamError> {
        self.shared.streams_allowed().await?;
        let (state, response_head) = self.register()?;
        let id = state.id;
        let (mut sender, body) = halves(self.shared.clone(), state);
        let response = ResponseFuture::new(response_head, body);
        sender.send_head_json(head(id)?).await?;
        if end_stream {
            sender.mark_finished();
        }
        Ok((sender, response))
    }

    /// Sends the welcome, the answer to the client's hello. The server starts its end before
    /// the welcome so that it can claim the tunnel with this handle first (with a shared
    /// registry a round trip that may fail): a client told it is online is online. Streams
    /// held until now ([`Mux::hold_streams_until_welcome`]) go out behind it.
    pub async fn welcome(&self, welcome: Welcome) -> Result<(), StreamError> {
        let sent = self
            .shared
            .send_control(&ControlMessage::Welcome(welcome))
            .await;
        self.shared.allow_streams();
        sent
    }

    /// Holds every stream opened from now on until the welcome is queued. The server makes
    /// this handle reachable (claims the tunnel with it) before it sends the welcome, and a
    /// request routed to it in between must not reach the client first: a client still
    /// waiting for its welcome takes any other message for a broken handshake.
    pub fn hold_streams_until_welcome(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    /// A new stream in the table, with the receiver of its response head.
    fn register(&self) -> Result<(Arc<StreamState>, HeadReceiver), StreamError> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 || id == u32::MAX {
            // 4 billion streams on one connection: refuse rather than reuse ids.
            return Err(StreamError::ConnectionClosed);
        }
        let state = shared.new_stream(id, OnAbandon::Reset);
        let (tx, rx) = oneshot::channel();
        *lock(&state.head_tx) = Some(tx);
        let mut streams = lock(&shared.streams);
        if shared.cancel.is_cancelled() || shared.closing.load(Ordering::SeqCst) {
            return Err(StreamError::ConnectionClosed);
        }
        if streams.len() >= shared.cfg.max_streams {
            return Err(StreamError::Reset {
                code: ResetCode::Refused,
                message: "too many concurrent streams".into(),
            });
        }
        streams.insert(id, state.clone());
        Ok((state, rx))
    }
}

/// Where an opened stream's response head arrives.
type HeadReceiver = oneshot::Receiver<Result<ResponseHead, StreamError>>;

impl<S: Side> Mux<S> {
    /// Sends a goodbye, then a close frame, then ends the connection; takes at most two
    /// seconds even if the peer stopped reading.
    pub async fn close(&self, reason: GoodbyeReason, message: &str) {
        let shared = &self.shared;
        // A stream opened from now on would queue its head behind the close frame: refuse it
        // at once instead (`ConnectionClosed` before anything was sent).
        shared.closing.store(true, Ordering::SeqCst);
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

    /// Sends a goodbye without closing: in-flight streams may still finish, and new ones may
    /// still be opened. The connection counts as going away from now on
    /// ([`Mux::is_going_away`]): this is HTTP/2's GOAWAY, the peer told to reconnect
    /// elsewhere while this connection finishes its work.
    pub async fn announce(&self, reason: GoodbyeReason, message: &str) {
        self.shared.going_away.store(true, Ordering::SeqCst);
        let _ = self.shared.enqueue(goodbye(reason, message)).await; // closed already: fine
    }

    /// Whether a goodbye was [announced](Mux::announce) on this connection.
    pub fn is_going_away(&self) -> bool {
        self.shared.going_away.load(Ordering::SeqCst)
    }

    /// [`Mux::close`] once no stream is open any more, or after `max_wait` (the streams still
    /// open then are cut). From the moment the last stream ends, opening one fails with
    /// [`StreamError::ConnectionClosed`], nothing of it sent: so a caller racing with the
    /// close either has its stream finish or knows it can send the request elsewhere.
    pub async fn close_when_idle(&self, reason: GoodbyeReason, message: &str, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.shared.wait_idle()).await; // cut after it
        self.close(reason, message).await;
    }

    /// Ends the connection at once, without telling the peer.
    pub fn abort(&self, reason: &str) {
        self.shared.shutdown(reason.to_string());
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Whether `other` is a handle of this same connection.
    pub fn same_connection(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Whether the connection refuses new streams: it has ended, or is closing ([`Mux::close`],
    /// or [`Mux::close_when_idle`] once idle). A stream opened now would fail with
    /// [`StreamError::ConnectionClosed`], nothing of it sent.
    pub fn refuses_streams(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst) || self.is_closed()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.close_reason()
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
