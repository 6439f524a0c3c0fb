//! A TCP connection carried on a WebSocket of its own: how a consumer's connection to a TCP
//! tunnel passes the server's HTTP front door (`tunnel-client connect` on one end, the
//! server's `/api/tunnels/{id}/tcp` endpoint on the other), through whatever speaks HTTP in
//! between (Traefik, Cloudflare), as `cloudflared access tcp` does.
//!
//! # On the wire
//! After the upgrade, each binary message carries the next bytes of the connection. An
//! **empty** binary message ends the sender's direction: its side of the TCP connection was
//! half-closed, and the other direction goes on (RFC 6455 has no half-close of its own; a
//! close frame ends both directions at once). Once both directions have ended, each side
//! sends a close frame (1000) and the WebSocket is done. A close frame or the end of the
//! connection before that, a text message, or bytes after an end abandon the connection.
//! Pings are answered; the consumer's end pings at an interval so that proxies which cut
//! silent WebSockets (Cloudflare: about 100 s) leave an idle connection alone.
//!
//! The consumer's end speaks first: a ping right after the upgrade
//! ([`CarryOptions::ping_first`]), and the server's end sends nothing before it heard a first
//! message ([`CarryOptions::wait_for_peer`]). A WebSocket client library reads the `101` in
//! chunks and may read past it; when it then hands over the socket, bytes it had read would
//! be lost. With this order none can be there yet, whatever the library or the proxies in
//! between do; the price is one round trip before the first byte of a protocol where the
//! server speaks first (SSH's banner), none for the others (Postgres, Redis, HTTP).
//!
//! # Flow control
//! The WebSocket is one TCP connection carrying one TCP connection: a slow reader on either
//! end backs the other up through the socket buffers, and each direction holds at most one
//! read's worth of bytes. The server joins its end to a multiplexer stream
//! ([`carry_stream`]), whose credit windows take over from there.
//!
//! # Why one WebSocket per TCP connection
//! Rather than many TCP connections multiplexed on one consumer WebSocket: each connection
//! then stands alone at every proxy on the way (their idle timeouts, connection limits and
//! load balancing see it as what it is), one slow connection cannot hold up another on a
//! shared socket, and the consumer keeps no session state. The price is the upgrade's round
//! trip (and a TLS handshake, behind HTTPS) per connection, measured in the benchmark.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::message::ResetCode;
use crate::mux::{Activity, BodyReceiver, BodySender, IoOp, StreamError};
use crate::ws::{Message, Reader, WebSocket, Writer, WsError};

/// Bytes read per call from the carried connection: one binary message each at most.
const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted from the peer (ours are at most [`READ_CHUNK`]; a proxy may only
/// split messages, never merge them).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// How long to wait for the peer's close frame once both directions ended.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// WebSocket close code of a normal close (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// How a carried connection behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct CarryOptions {
    /// Abandon the connection after this long without a byte either way (`None`: never).
    pub idle: Option<Duration>,
    /// Ping the peer this often (`None`: never; the peer's pings are answered regardless).
    pub ping_every: Option<Duration>,
    /// Ping the peer once at the start (the consumer's end, see the module documentation).
    pub ping_first: bool,
    /// Send nothing before the peer's first message (the server's end).
    pub wait_for_peer: bool,
}

/// Bytes each way of a carried connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarryStats {
    /// Bytes from the local end (socket or stream) onto the WebSocket.
    pub sent: u64,
    /// Bytes from the WebSocket to the local end.
    pub received: u64,
}

/// Why a carried connection ended before both directions completed.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    /// No byte either way for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The carried TCP connection failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] WsError),
    /// The peer sent something this carriage does not allow.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer closed the WebSocket, or it ended, before both directions did.
    #[error("the other end went away")]
    ClosedEarly,
    /// The multiplexer stream failed (reset by the tunnel client, connection lost…).
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Carries `io` (a consumer's TCP connection) on `ws` until both directions are done.
pub async fn carry_io<W, IO>(
    ws: WebSocket<W>,
    io: IO,
    opts: CarryOptions,
) -> Result<CarryStats, CarryError>
where
    W: AsyncRead + AsyncWrite + Send,
    IO: AsyncRead + AsyncWrite + Send,
{
    let (rd, wr) = tokio::io::split(io);
    let mut source = IoSource {
        rd,
        buf: BytesMut::new(),
    };
    let mut sink = IoSink { wr };
    carry(ws, &mut source, &mut sink, opts).await
}

/// Joins `ws` (the server's end of a consumer's WebSocket) to a multiplexer stream until both
/// directions are done. On an idle timeout the stream is reset with
/// [`ResetCode::IdleTimeout`]; on any other failure the halves are dropped unfinished, which
/// resets it.
pub async fn carry_stream<W>(
    ws: WebSocket<W>,
    mut sender: BodySender,
    mut receiver: BodyReceiver,
    opts: CarryOptions,
) -> Result<CarryStats, CarryError>
where
    W: AsyncRead + AsyncWrite + Send,
{
    let result = carry(ws, &mut receiver, &mut sender, opts).await;
    if matches!(result, Err(CarryError::IdleTimeout)) {
        sender.reset(ResetCode::IdleTimeout, "no traffic for the idle timeout");
    }
    result
}

/// Where the bytes that go onto the WebSocket come from.
trait Source {
    /// The next bytes; `None` once this direction ended.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, CarryError>> + Send;
}

/// Where the bytes that come off the WebSocket go.
trait Sink {
    /// Writes all of `bytes`.
    fn write(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), CarryError>> + Send;
    /// Ends this direction.
    fn finish(&mut self) -> impl Future<Output = Result<(), CarryError>> + Send;
}

struct IoSource<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin + Send> Source for IoSource<R> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, CarryError> {
        self.buf.reserve(READ_CHUNK);
        // `read_buf` is cancel safe: a read interrupted by the select leaves nothing behind.
        let n = self
            .rd
            .read_buf(&mut self.buf)
            .await
            .map_err(|source| CarryError::Io {
                op: IoOp::Read,
                source,
            })?;
        Ok((n > 0).then(|| self.buf.split().freeze()))
    }
}

struct IoSink<W> {
    wr: W,
}

impl<W: AsyncWrite + Unpin + Send> Sink for IoSink<W> {
    async fn write(&mut self, bytes: Bytes) -> Result<(), CarryError> {
        self.wr
            .write_all(&bytes)
            .await
            .map_err(|source| CarryError::Io {
                op: IoOp::Write,
                source,
            })
    }

    async fn finish(&mut self) -> Result<(), CarryError> {
        self.wr.shutdown().await.map_err(|source| CarryError::Io {
            op: IoOp::Shutdown,
            source,
        })
    }
}

impl Source for BodyReceiver {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, CarryError> {
        Ok(self.next().await.transpose()?)
    }
}

impl Sink for BodySender {
    async fn write(&mut self, bytes: Bytes) -> Result<(), CarryError> {
        Ok(self.send(bytes).await?)
    }

    async fn finish(&mut self) -> Result<(), CarryError> {
        Ok(BodySender::finish(self).await?)
    }
}

/// What the reading direction asks of the writing one.
enum Signal {
    /// Answer a ping.
    Pong(Bytes),
    /// The peer ended its direction.
    PeerEnded,
    /// The peer's first message arrived.
    Heard,
}

async fn carry<W, S, K>(
    ws: WebSocket<W>,
    source: &mut S,
    sink: &mut K,
    opts: CarryOptions,
) -> Result<CarryStats, CarryError>
where
    W: AsyncRead + AsyncWrite + Send,
    S: Source,
    K: Sink,
{
    let WebSocket {
        mut reader,
        mut writer,
    } = ws;
    reader.set_max_message(MAX_MESSAGE);
    // At most one pong and one end signal are ever waiting: the reader waits for room.
    let (signals, mut signalled) = mpsc::channel(2);
    let activity = Activity::new();
    let counts = Counts::default();
    let result = {
        let up = pin!(up(
            source,
            &mut writer,
            &mut signalled,
            &activity,
            &counts,
            opts
        ));
        let down = pin!(down(&mut reader, sink, signals, &activity, &counts));
        let idle = pin!(activity.idle(opts.idle));
        both_ways(up, down, idle).await
    };
    if result.is_ok() {
        // Best effort: the close handshake is over, or the peer did not answer in time.
        let _ = writer.shutdown().await;
    }
    result.map(|()| CarryStats {
        sent: counts.sent.load(Ordering::Relaxed),
        received: counts.received.load(Ordering::Relaxed),
    })
}

/// Runs both directions until both are done (the reading one given [`CLOSE_WAIT`] for the
/// peer's close frame once ours went), the first error, or the idle watch firing.
async fn both_ways(
    mut up: Pin<&mut impl Future<Output = Result<(), CarryError>>>,
    mut down: Pin<&mut impl Future<Output = Result<(), CarryError>>>,
    mut idle: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), CarryError> {
    let (mut up_done, mut down_done) = (false, false);
    while !up_done {
        tokio::select! {
            r = up.as_mut() => up_done = r.map(|()| true)?,
            r = down.as_mut(), if !down_done => down_done = r.map(|()| true)?,
            () = idle.as_mut() => return Err(CarryError::IdleTimeout),
        }
    }
    if !down_done {
        // Our close frame went: only the peer's is still to come.
        if let Ok(r) = tokio::time::timeout(CLOSE_WAIT, down.as_mut()).await {
            r?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
}

/// Source → WebSocket, then the end marker; answers pings meanwhile, and sends the close
/// frame once the peer's direction ended too.
async fn up<S: Source, W: AsyncWrite + Unpin>(
    source: &mut S,
    writer: &mut Writer<W>,
    signalled: &mut mpsc::Receiver<Signal>,
    activity: &Activity,
    counts: &Counts,
    opts: CarryOptions,
) -> Result<(), CarryError> {
    let (mut sent_end, mut peer_ended) = (false, false);
    let mut heard = !opts.wait_for_peer;
    if opts.ping_first {
        writer.ping(b"");
        writer.flush().await.map_err(WsError::Io)?;
    }
    let mut ping = opts.ping_every.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !(sent_end && peer_ended) {
        tokio::select! {
            chunk = source.next_chunk(), if !sent_end && heard => match chunk? {
                Some(bytes) => {
                    activity.touch();
                    writer.binary(&bytes);
                    counts.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                None => {
                    writer.binary(&[]);
                    sent_end = true;
                }
            },
            signal = signalled.recv() => match signal {
                Some(Signal::Pong(payload)) => writer.pong(&payload),
                Some(Signal::PeerEnded) => peer_ended = true,
                Some(Signal::Heard) => heard = true,
                // The reading direction is over: its result says how.
                None => return std::future::pending().await,
            },
            _ = tick(&mut ping) => writer.ping(b""),
        }
        writer.flush().await.map_err(WsError::Io)?;
    }
    writer.close(CLOSE_NORMAL, "");
    writer.flush().await.map_err(WsError::Io)?;
    Ok(())
}

/// The next tick of an optional interval; never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// WebSocket → sink, then the sink's end; then waits for the peer's close frame.
async fn down<R: AsyncRead + Unpin, K: Sink>(
    reader: &mut Reader<R>,
    sink: &mut K,
    signals: mpsc::Sender<Signal>,
    activity: &Activity,
    counts: &Counts,
) -> Result<(), CarryError> {
    let mut ended = false;
    let mut heard = false;
    loop {
        let message = reader.next().await;
        if !heard && matches!(message, Some(Ok(_))) {
            heard = true;
            // As below: the writing direction is gone only after an error of its own.
            let _ = signals.send(Signal::Heard).await;
        }
        match message {
            Some(Ok(Message::Binary(bytes))) if ended && !bytes.is_empty() => {
                return Err(CarryError::Protocol("bytes after the end of a direction"));
            }
            Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                if ended {
                    return Err(CarryError::Protocol("a direction ended twice"));
                }
                ended = true;
                sink.finish().await?;
                // The writing direction is gone only after an error of its own.
                let _ = signals.send(Signal::PeerEnded).await;
            }
            Some(Ok(Message::Binary(bytes))) => {
                activity.touch();
                counts
                    .received
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                sink.write(bytes).await?;
            }
            Some(Ok(Message::Ping(payload))) => {
                let _ = signals.send(Signal::Pong(payload)).await; // as above
            }
            Some(Ok(Message::Pong(_))) => {}
            Some(Ok(Message::Text(_))) => return Err(CarryError::Protocol("a text message")),
            Some(Ok(Message::Close(_))) | None if ended => return Ok(()),
            Some(Ok(Message::Close(_))) | None => return Err(CarryError::ClosedEarly),
            Some(Err(e)) => return Err(e.into()),
        }
    }
}
