//! Round-trip time and window auto-tuning, over a delay line.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::mux::{self, BodyReceiver, MuxConfig, Role, ServerMux};
use tunnel_protocol::StreamError;

use crate::raw::*;
use crate::support::*;

/// The round-trip estimate comes from pongs that answer the mux's own latest ping, matched by
/// payload: unsolicited pongs (RFC 6455 allows them), pongs with another payload and repeated
/// pongs change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_comes_from_pongs_that_answer_our_ping() {
    let (s, raw) = tokio::io::duplex(1 << 20);
    let mut raw = WebSocketStream::from_raw_socket(raw, WsRole::Client, None).await;
    let (mux, _events) = mux::start_server(ours(s, Role::Server), config());
    let ping = match within("the opening ping", raw.next()).await {
        Some(Ok(Message::Ping(payload))) => payload,
        other => panic!("expected the opening ping, got {other:?}"),
    };
    let read_ping_at = std::time::Instant::now();
    assert_eq!(ping.len(), 8, "a probe counter");
    let mut other = ping.to_vec();
    other[7] ^= 1;
    // Sending our own pong replaces the answer tungstenite queued for the ping, so the mux only
    // ever sees the pongs sent here.
    for pong in [other, Vec::new(), vec![1, 2, 3], vec![0; 9]] {
        within("a pong", raw.send(Message::Pong(pong.into())))
            .await
            .expect("pong sent");
    }
    // The probe's request and answer come after those pongs: once it is answered, they have
    // been read.
    probe(&mux, &mut raw).await;
    assert_eq!(mux.rtt(), None, "a pong that answers no ping of ours");

    let answered_after = read_ping_at.elapsed();
    within("the pong", raw.send(Message::Pong(ping.clone())))
        .await
        .expect("pong sent");
    let rtt = within("a round-trip estimate", async {
        loop {
            if let Some(rtt) = mux.rtt() {
                break rtt;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    // The ping was written before we read it, and answered `answered_after` later.
    assert!(rtt >= answered_after, "{rtt:?} < {answered_after:?}");
    assert!(rtt <= PROMPT, "{rtt:?}");

    // The same pong again is no new sample.
    within("the pong", raw.send(Message::Pong(ping)))
        .await
        .expect("pong sent");
    probe(&mux, &mut raw).await;
    assert_eq!(mux.rtt(), Some(rtt));
}

/// One-way delay of the delay line in the auto-tuning tests: a 40 ms round trip, like a laptop
/// far from its server.
const DELAY: Duration = Duration::from_millis(20);

/// Forwards everything read from `from` to `to`, each chunk held for `delay` first: latency
/// without a bandwidth cap, like a long network path. Ends when `from` ends or `to` fails.
fn delay_line(
    mut from: ReadHalf<DuplexStream>,
    mut to: WriteHalf<DuplexStream>,
    delay: Duration,
) -> JoinHandle<()> {
    // Bounded in chunks; what is in flight is bounded by the mux's windows anyway.
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Bytes)>(1 << 16);
    tokio::spawn(async move {
        let reader = async move {
            loop {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                match from.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let due = tokio::time::Instant::now() + delay;
                        if tx.send((due, buf.freeze())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        let writer = async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // The other end may be gone already; nothing to tell then.
            let _ = to.shutdown().await;
        };
        tokio::join!(reader, writer);
    })
}

/// A server mux and a client mux connected through a delay line of `delay` each way.
async fn delayed_mux_pair(cfg: MuxConfig, delay: Duration) -> Pair {
    let (server_io, server_relay) = tokio::io::duplex(1 << 20);
    let (client_io, client_relay) = tokio::io::duplex(1 << 20);
    let (server_relay_rd, server_relay_wr) = tokio::io::split(server_relay);
    let (client_relay_rd, client_relay_wr) = tokio::io::split(client_relay);
    delay_line(server_relay_rd, client_relay_wr, delay);
    delay_line(client_relay_rd, server_relay_wr, delay);
    let s = ours(server_io, Role::Server);
    let c = ours(client_io, Role::Client);
    let (server, server_events) = mux::start_server(s, cfg.clone());
    let (client, client_events) = mux::start_client(c, cfg);
    Pair {
        server,
        server_events,
        client,
        client_events,
    }
}

/// Waits (polling: there is no event for it) until `mux` has a round-trip estimate.
async fn rtt_of(mux: &ServerMux) -> Duration {
    within("a round-trip estimate", async {
        loop {
            if let Some(rtt) = mux.rtt() {
                break rtt;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// Configuration of the auto-tuning tests: a small initial window, growth allowed to `max`.
fn tuning_config(max_window: u32) -> MuxConfig {
    MuxConfig {
        initial_window: WINDOW,
        max_window,
        max_frame_size: 64 * 1024,
        ..config()
    }
}

/// A response body streamed from the client mux to the server mux over one stream.
struct Download {
    pair: Pair,
    /// The server's receiving half.
    rx: BodyReceiver,
    /// The client's sending task (aborted when this is dropped, resetting the stream).
    upload: JoinHandle<Result<(), StreamError>>,
    /// What is sent.
    body: Bytes,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.upload.abort();
    }
}

/// Opens a stream over a delayed pair (once the server has a round-trip estimate) and has the
/// client send `body` as the response, as fast as credit allows.
async fn start_download(cfg: MuxConfig, body: Bytes) -> Download {
    let mut pair = delayed_mux_pair(cfg, DELAY).await;
    let rtt = rtt_of(&pair.server).await;
    assert!(
        rtt >= 2 * DELAY,
        "a round trip crosses the delay line twice: {rtt:?}"
    );
    let (opened, request) = open_pair(&mut pair, true).await;
    let mut tx = respond(request.responder, 200, false)
        .await
        .expect("a body follows");
    let rx = response(opened.response)
        .await
        .expect("a response head")
        .body;
    let sent = body.clone();
    let upload = tokio::spawn(async move {
        // In several sends, like a proxied body, the last one with the end marker.
        let mut rest = sent;
        while rest.len() > 256 * 1024 {
            tx.send(rest.split_to(256 * 1024)).await?;
        }
        tx.send_last(rest).await
    });
    Download {
        pair,
        rx,
        upload,
        body,
    }
}

/// How far a download got.
#[derive(Debug)]
struct Progress {
    received: usize,
    elapsed: Duration,
    window: u32,
    rtt: Duration,
}

/// Reads the download as fast as possible until its end or `budget`, checking every byte.
async fn read_download(d: &mut Download, budget: Duration) -> Progress {
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let mut received = 0;
    loop {
        match tokio::time::timeout_at(deadline, d.rx.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(chunk)) => {
                let chunk = chunk.expect("no stream failure");
                let want = d.body.get(received..received + chunk.len());
                assert!(want == Some(&chunk[..]), "wrong bytes at {received}");
                received += chunk.len();
            }
        }
    }
    Progress {
        received,
        elapsed: started.elapsed(),
        window: d.rx.window(),
        rtt: d.pair.server.rtt().expect("measured before"),
    }
}

/// Over a 40 ms round trip, a 64 KiB window caps a stream at 64 KiB per round trip (1.6 MB/s).
/// With auto-tuning the receiver's window grows while its reader keeps up, and the same stream
/// moves far more bytes in the same time than with the window fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_grows_to_fill_a_long_path() {
    const TOTAL: usize = 16 << 20;
    const MAX: u32 = 4 << 20;
    let body = Bytes::from(pattern(TOTAL, 11));

    let mut tuned = start_download(tuning_config(MAX), body.clone()).await;
    assert_eq!(
        tuned.rx.window(),
        WINDOW,
        "every stream starts at the initial window"
    );
    let fast = read_download(&mut tuned, Duration::from_secs(6)).await;
    assert_eq!(
        fast.received, TOTAL,
        "the tuned download completes: {fast:?}"
    );
    within("the upload", &mut tuned.upload)
        .await
        .expect("task")
        .expect("upload");
    assert!(
        fast.window > WINDOW && fast.window <= MAX,
        "the window grew, within its bound: {fast:?}"
    );
    drop(tuned);

    // The same download with the window fixed, for as long as the tuned one took.
    let mut fixed = start_download(tuning_config(WINDOW), body).await;
    let slow = read_download(&mut fixed, fast.elapsed).await;
    assert_eq!(slow.window, WINDOW, "max == initial: no growth");
    let rate = |p: &Progress| p.received as f64 / p.elapsed.as_secs_f64() / 1e6;
    eprintln!(
        "auto-tuned: {} bytes in {:?} ({:.1} MB/s), window {} bytes, srtt {:?}; \
         fixed: {} bytes in {:?} ({:.1} MB/s), srtt {:?}",
        fast.received,
        fast.elapsed,
        rate(&fast),
        fast.window,
        fast.rtt,
        slow.received,
        slow.elapsed,
        rate(&slow),
        slow.rtt
    );
    assert!(
        slow.received * 2 < fast.received,
        "auto-tuning moved less than twice the bytes of a fixed window: {fast:?} vs {slow:?}"
    );
    // And the fixed window is indeed held to about one window per round trip.
    let bound = f64::from(WINDOW) * (slow.elapsed.as_secs_f64() / slow.rtt.as_secs_f64() + 1.0);
    assert!(
        (slow.received as f64) <= bound,
        "a fixed window moved more than one window per round trip: {slow:?}"
    );
}

/// A reader slower than one window per two round trips never grows its window, although each
/// time it reads it drains its full buffer in a burst (so its credit updates come close
/// together): a slow reader must not cost memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_the_initial_window() {
    const ROUNDS: usize = 6;
    let body = Bytes::from(pattern(4 << 20, 12));
    // Frames a quarter of the window: each burst is four chunks, and four credit updates.
    let cfg = MuxConfig {
        max_frame_size: FRAME,
        ..tuning_config(4 << 20)
    };
    let mut d = start_download(cfg, body).await;
    let rtt = d.pair.server.rtt().expect("measured");
    let mut consumed = 0u64;
    for round in 0..ROUNDS {
        // Wait (polling: there is no event for it) until the buffer holds a full window: the
        // sender is blocked on credit, the reader is the bottleneck.
        within("the buffer to fill", async {
            while d.pair.server.bytes().1 < consumed + u64::from(WINDOW) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert_eq!(
            d.pair.server.bytes().1,
            consumed + u64::from(WINDOW),
            "never more than a window buffered (round {round})"
        );
        // The reader's own slowness: it comes back only after a few round trips.
        tokio::time::sleep(3 * rtt).await;
        // Then drains the full window at once, passing each chunk on (a yield, like a socket
        // write with room in its buffer), so that the writer sends a credit update per chunk.
        let mut burst = 0;
        while burst < WINDOW as usize {
            let chunk = within("a chunk", d.rx.next())
                .await
                .expect("more body")
                .expect("no stream failure");
            burst += chunk.len();
            tokio::task::yield_now().await;
        }
        consumed += burst as u64;
        assert_eq!(d.rx.window(), WINDOW, "the window grew in round {round}");
    }
    assert!(!d.upload.is_finished(), "the sender is still held back");
}
