//! Helpers of every multiplexer test: configurations, connected pairs, heads, bodies and
//! bounded waits.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::headers::WireHeaders;
use tunnel_protocol::mux::{
    self, BodyReceiver, BodySender, ClientEvent, ClientMux, Goodbye, IncomingRequest,
    IncomingResponse, MuxConfig, RequestParts, Responder, ResponseFuture, ResponseParts, Role,
    ServerMux,
};
use tunnel_protocol::ws::WebSocket;
use tunnel_protocol::{RequestHead, ResponseHead, StreamError, StreamId};

pub(crate) type Ws = WebSocketStream<DuplexStream>;

/// Credit per stream and direction in most tests: small, so that flow control kicks in often.
pub(crate) const WINDOW: u32 = 64 * 1024;
/// Largest data frame payload in most tests.
pub(crate) const FRAME: u32 = 16 * 1024;
/// How long anything that should happen "promptly" may take.
pub(crate) const PROMPT: Duration = Duration::from_secs(5);
/// How long a negative check waits for something that must not happen.
pub(crate) const NOT_YET: Duration = Duration::from_millis(200);

pub(crate) fn config() -> MuxConfig {
    MuxConfig {
        initial_window: WINDOW,
        // Auto-tuning off: these tests count bytes against a fixed window. The tests of
        // auto-tuning set their own.
        max_window: WINDOW,
        max_frame_size: FRAME,
        max_streams: 64,
        // Long enough that keepalive never interferes, except in the tests about it.
        ping_interval: Duration::from_secs(30),
        dead_after: Duration::from_secs(90),
    }
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Awaits `fut`, failing the test if it takes longer than [`PROMPT`].
pub(crate) async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(PROMPT, what, fut).await
}

/// Our framing on the mux's end of a pipe.
pub(crate) fn ours(
    io: tokio::io::DuplexStream,
    role: mux::Role,
) -> WebSocket<tokio::io::DuplexStream> {
    WebSocket::new(io, role, 1 << 20)
}

/// A server mux and a client mux connected to each other.
pub(crate) struct Pair {
    pub(crate) server: ServerMux,
    pub(crate) server_events: mpsc::Receiver<Goodbye>,
    pub(crate) client: ClientMux,
    pub(crate) client_events: mpsc::Receiver<ClientEvent>,
}

pub(crate) async fn mux_pair(cfg: MuxConfig) -> Pair {
    let (s, c) = tokio::io::duplex(1 << 20);
    let (server, server_events) = mux::start_server(ours(s, Role::Server), cfg.clone());
    let (client, client_events) = mux::start_client(ours(c, Role::Client), cfg);
    Pair {
        server,
        server_events,
        client,
        client_events,
    }
}

/// A server-role mux whose peer is a raw WebSocket driven by the test.
pub(crate) async fn mux_server_raw_client(
    cfg: MuxConfig,
) -> (ServerMux, mpsc::Receiver<Goodbye>, Ws) {
    let (s, c) = tokio::io::duplex(1 << 20);
    let mut c = WebSocketStream::from_raw_socket(c, WsRole::Client, None).await;
    let (mux, events) = mux::start_server(ours(s, Role::Server), cfg);
    answer_opening_ping(&mut c).await;
    (mux, events, c)
}

/// A client-role mux whose peer is a raw WebSocket driven by the test.
pub(crate) async fn mux_client_raw_server(
    cfg: MuxConfig,
) -> (ClientMux, mpsc::Receiver<ClientEvent>, Ws) {
    let (s, c) = tokio::io::duplex(1 << 20);
    let mut s = WebSocketStream::from_raw_socket(s, WsRole::Server, None).await;
    let (mux, events) = mux::start_client(ours(c, Role::Client), cfg);
    answer_opening_ping(&mut s).await;
    (mux, events, s)
}

/// A mux pings right after it starts (its first round-trip sample). The raw peer takes that
/// ping and sends the answer at once: left pending, the answer would go out with the peer's
/// next read, and on a connection the mux already closed (say after a protocol violation the
/// test provoked) that write fails and hides the goodbye and close frame still to be read.
pub(crate) async fn answer_opening_ping(raw: &mut Ws) {
    match within("the opening ping", raw.next()).await {
        Some(Ok(Message::Ping(payload))) => assert_eq!(payload.len(), 8, "a probe counter"),
        other => panic!("expected the opening ping, got {other:?}"),
    }
    within("the pong", raw.flush()).await.expect("pong sent");
}

/// The request every test sends: a body, binary header values, a query.
pub(crate) fn request_parts() -> RequestParts {
    RequestParts {
        method: "POST".into(),
        target: "/upload?x=1&y".into(),
        headers: WireHeaders(vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("x-bin".into(), vec![0xff, 0x00, b'a'].into()),
        ]),
    }
}

/// [`request_parts`] as a raw peer sends it.
pub(crate) fn request_head(stream_id: StreamId, end_stream: bool) -> RequestHead {
    let RequestParts {
        method,
        target,
        headers,
    } = request_parts();
    RequestHead {
        stream_id,
        method,
        target,
        headers: headers.into(),
        end_stream,
        tcp: None,
    }
}

pub(crate) fn response_parts(status: u16) -> ResponseParts {
    ResponseParts {
        status,
        headers: WireHeaders(vec![("content-type".into(), "text/plain".into())]),
    }
}

/// [`response_parts`] as it arrives (or as a raw peer sends it).
pub(crate) fn response_head(stream_id: StreamId, status: u16, end_stream: bool) -> ResponseHead {
    let ResponseParts { status, headers } = response_parts(status);
    ResponseHead {
        stream_id,
        status,
        headers: headers.into(),
        end_stream,
    }
}

/// The server's end of an opened stream: the request body's sender (none for a bodiless
/// request) and the response to come.
pub(crate) struct Opened {
    pub(crate) id: StreamId,
    pub(crate) sender: Option<BodySender>,
    pub(crate) response: ResponseFuture,
}

impl Opened {
    /// The request body's sender; the request was opened with a body.
    pub(crate) fn sender(&mut self) -> BodySender {
        self.sender.take().expect("opened with a body")
    }
}

/// (Server mux) opens a stream with [`request_parts`], with or without a body.
pub(crate) async fn open_request(server: &ServerMux, end_stream: bool) -> Opened {
    let opening = async {
        if end_stream {
            server
                .send_request(request_parts())
                .await
                .map(|response| (None, response))
        } else {
            server
                .open_stream(request_parts())
                .await
                .map(|(sender, response)| (Some(sender), response))
        }
    };
    let (sender, response) = within("the request head to be queued", opening)
        .await
        .expect("open a stream");
    Opened {
        id: response.id(),
        sender,
        response,
    }
}

/// (Client mux) waits for the next request event.
pub(crate) async fn next_request(events: &mut mpsc::Receiver<ClientEvent>) -> IncomingRequest {
    match within("a request event", events.recv()).await {
        Some(ClientEvent::Request(request)) => request,
        other => panic!("expected a request event, got {other:?}"),
    }
}

/// Opens a stream on the server mux and accepts it on the client mux.
pub(crate) async fn open_pair(pair: &mut Pair, end_stream: bool) -> (Opened, IncomingRequest) {
    let opened = open_request(&pair.server, end_stream).await;
    let request = next_request(&mut pair.client_events).await;
    assert_eq!(
        request.head,
        request_head(opened.id, end_stream),
        "the request head arrives unchanged"
    );
    assert_eq!(request.responder.id(), opened.id);
    (opened, request)
}

/// (Client) answers with [`response_parts`]; returns the response body's sender unless the
/// response has none.
pub(crate) async fn respond(
    responder: Responder,
    status: u16,
    end_stream: bool,
) -> Option<BodySender> {
    let parts = response_parts(status);
    if end_stream {
        within(
            "the response head to be queued",
            responder.respond_empty(parts),
        )
        .await
        .expect("send the response head");
        None
    } else {
        let sender = within("the response head to be queued", responder.respond(parts))
            .await
            .expect("send the response head");
        Some(sender)
    }
}

/// (Server) waits for the response of an opened stream.
pub(crate) async fn response(response: ResponseFuture) -> Result<IncomingResponse, StreamError> {
    within("the response head", response).await
}

/// Deterministic pseudo-random bytes.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// 64-bit FNV-1a, enough to compare bodies without printing megabytes on failure.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Sends `data` in chunks of varying, frame-misaligned sizes, then the end marker.
pub(crate) async fn send_chunked(tx: &mut BodySender, data: &[u8]) -> Result<(), StreamError> {
    let sizes = [1usize, 1000, 65_537, 100_000, 7, 16_384, 200_003];
    let mut rest = Bytes::copy_from_slice(data);
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        tx.send(rest.split_to(n)).await?;
        i += 1;
    }
    tx.finish().await
}

/// Spawns [`send_chunked`] with owned arguments; the task gives the sender back.
pub(crate) fn spawn_upload(
    mut tx: BodySender,
    data: Vec<u8>,
) -> JoinHandle<Result<BodySender, StreamError>> {
    tokio::spawn(async move {
        send_chunked(&mut tx, &data).await?;
        Ok(tx)
    })
}

/// Reads a body to its end.
pub(crate) async fn read_all(rx: &mut BodyReceiver) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    while let Some(chunk) = rx.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

pub(crate) fn assert_same_body(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(fnv1a(got), fnv1a(want), "{what}: content hash");
}
