//! Property-based fuzzing of everything that decodes peer input: the frame codec, control
//! messages, header lists, and the multiplexer fed random frame sequences. Bounded case counts
//! keep it in the normal test run; `PROPTEST_CASES=100000 cargo test -p tunnel-protocol --test
//! fuzz --release` runs it longer. The seed corpus in `tests/corpus/` (files named `ok_*` or
//! `err_*`) is replayed every time; proptest writes regressions it finds to
//! `proptest-regressions/`, which is committed as part of the corpus.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::frame::{DataFrame, Frame};
use tunnel_protocol::headers::{WireHeaders, WireValue};
use tunnel_protocol::mux::{self, MuxConfig, RequestParts, Role};
use tunnel_protocol::ws::WebSocket;
use tunnel_protocol::{ControlMessage, GoodbyeReason};

const MAX_PAYLOAD: usize = 64 * 1024;

/// Case count: `default` in the normal test run, `PROPTEST_CASES` when set (longer runs).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seed_corpus_decodes_as_labelled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let msg = if name.ends_with(".json") {
            Message::text(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            Message::Binary(Bytes::from(bytes))
        };
        let result = Frame::decode(msg, MAX_PAYLOAD);
        if name.starts_with("ok_") {
            assert!(matches!(result, Ok(Some(_))), "{name}: {result:?}");
        } else {
            assert!(result.is_err(), "{name} decoded: {result:?}");
        }
        seen += 1;
    }
    assert!(seen >= 10, "corpus missing");
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        any::<String>(),
        Just("content-length".to_string()),
    ]
}

fn wire_headers() -> impl Strategy<Value = WireHeaders> {
    prop::collection::vec(
        (header_name(), prop::collection::vec(any::<u8>(), 0..40)),
        0..8,
    )
    .prop_map(|v| WireHeaders(v.into_iter().map(|(k, b)| (k, WireValue(b))).collect()))
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(stream_id, increment)| ControlMessage::Window {
            stream_id,
            increment
        }),
        (any::<u32>(), ".{0,20}", wire_headers(), any::<bool>()).prop_map(
            |(stream_id, target, headers, end_stream)| {
                ControlMessage::Request(tunnel_protocol::RequestHead {
                    stream_id,
                    method: "GET".into(),
                    target,
                    headers: headers.into(),
                    end_stream,
                    tcp: None,
                })
            }
        ),
        (any::<u32>(), any::<u16>(), wire_headers(), any::<bool>()).prop_map(
            |(stream_id, status, headers, end_stream)| {
                ControlMessage::Response(tunnel_protocol::ResponseHead {
                    stream_id,
                    status,
                    headers: headers.into(),
                    end_stream,
                })
            }
        ),
        (any::<u32>(), ".{0,30}").prop_map(|(stream_id, message)| ControlMessage::Reset {
            stream_id,
            code: tunnel_protocol::ResetCode::Cancelled,
            message
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn binary_frames_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some(Frame::Data(d))) = Frame::decode(Message::Binary(Bytes::from(bytes.clone())), MAX_PAYLOAD) {
            let encoded = d.encode();
            prop_assert_eq!(encoded.as_ref(), bytes.as_slice());
        }
    }

    #[test]
    fn text_frames_never_panic(text in any::<String>()) {
        let _ = Frame::decode(Message::text(text), MAX_PAYLOAD);
    }

    #[test]
    fn json_shaped_text_never_panics(
        ty in prop_oneof![
            Just("hello".to_string()), Just("welcome".to_string()), Just("request".to_string()),
            Just("response".to_string()), Just("window".to_string()), Just("reset".to_string()),
            Just("goodbye".to_string()), "[a-z]{0,8}",
        ],
        fields in prop::collection::vec((".{0,10}", prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            ".{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string()),
            Just("[[\"a\",{\"b64\":\"!!\"}]]".to_string()),
        ]), 0..6),
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
        let json = format!("{{\"type\":\"{ty}\"{}{}}}", if body.is_empty() { "" } else { "," }, body.join(","));
        let _ = Frame::decode(Message::text(json), MAX_PAYLOAD);
    }

    #[test]
    fn control_messages_round_trip(msg in control_message()) {
        let encoded = Frame::Control(msg.clone()).into_message().unwrap();
        prop_assert_eq!(Frame::decode(encoded, MAX_PAYLOAD).unwrap(), Some(Frame::Control(msg)));
    }

    #[test]
    fn header_conversion_never_panics_and_keeps_valid_headers(
        pairs in prop::collection::vec((header_name(), prop::collection::vec(any::<u8>(), 0..30)), 0..10)
    ) {
        let wire = WireHeaders(pairs.into_iter().map(|(k, v)| (k, WireValue(v))).collect());
        if let Ok(map) = wire.to_header_map() {
            // Every entry survives, and the values of one name keep their order (what matters
            // for Set-Cookie); a header map groups names, so order across names may change.
            let back = WireHeaders::from_header_map(&map);
            prop_assert_eq!(back.len(), wire.len());
            let values_of = |h: &WireHeaders, name: &str| -> Vec<Vec<u8>> {
                h.0.iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.0.clone())
                    .collect()
            };
            for (name, value) in &back.0 {
                prop_assert_eq!(name, &name.to_ascii_lowercase());
                prop_assert_eq!(values_of(&back, name), values_of(&wire, name));
                prop_assert!(!value.0.iter().any(|b| *b == b'\r' || *b == b'\n' || *b == 0));
            }
        }
    }
}

/// Raw frames a hostile peer might send.
/// A request for the server mux to open.
fn request() -> RequestParts {
    RequestParts {
        method: "GET".into(),
        target: "/".into(),
        headers: WireHeaders::default(),
    }
}

/// Sends `frames` until the mux closes the connection (a legitimate outcome).
async fn hostile_peer<S>(raw_sink: &mut S, frames: Vec<Message>)
where
    S: futures_util::Sink<Message> + Unpin,
{
    for frame in frames {
        if raw_sink.send(frame).await.is_err() {
            break;
        }
    }
}

/// However it went, closing is bounded.
async fn close_bounded(close: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(5), close)
        .await
        .expect("close hung");
}

fn hostile_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        control_message().prop_map(|m| Frame::Control(m).into_message().unwrap()),
        (
            0u32..8,
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(stream_id, end, payload)| Message::Binary(
                DataFrame {
                    stream_id,
                    end,
                    payload: payload.into()
                }
                .encode()
            )),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Message::Binary(b.into())),
        ".{0,30}".prop_map(Message::text),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// Whatever a peer sends, the mux neither panics nor hangs: it either keeps serving or
    /// closes the connection, and a stream it opened ends one way or the other.
    #[test]
    fn the_mux_survives_random_frame_sequences(
        server_side in any::<bool>(),
        frames in prop::collection::vec(hostile_message(), 1..24),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (a, b) = tokio::io::duplex(1 << 20);
            // Server framing (the raw peer is a tungstenite client), whatever the mux role.
            let ws = WebSocket::new(a, Role::Server, 1 << 20);
            let raw = WebSocketStream::from_raw_socket(b, WsRole::Client, None).await;
            let (mut raw_sink, mut raw_stream) = raw.split();
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = raw_stream.next().await {} });
            let cfg = MuxConfig { initial_window: 4096, max_streams: 4, ..MuxConfig::default() };
            let consume = if server_side {
                let (mux, events) = mux::start_server(ws, cfg);
                let opened = mux.open_stream(request()).await.ok();
                let consume = tokio::spawn(async move {
                    let mut events = events;
                    while events.recv().await.is_some() {}
                });
                hostile_peer(&mut raw_sink, frames).await;
                close_bounded(mux.close(GoodbyeReason::Other, "done")).await;
                if let Some((sender, response)) = opened {
                    let answer = tokio::time::timeout(Duration::from_secs(5), response).await;
                    assert!(answer.is_ok(), "an opened stream never ended");
                    drop(sender);
                }
                consume
            } else {
                let (mux, events) = mux::start_client(ws, cfg);
                let consume = tokio::spawn(async move {
                    let mut events = events;
                    while events.recv().await.is_some() {}
                });
                hostile_peer(&mut raw_sink, frames).await;
                close_bounded(mux.close(GoodbyeReason::Other, "done")).await;
                consume
            };
            tokio::time::timeout(Duration::from_secs(5), consume).await.expect("events never ended").unwrap();
            drain.abort();
        });
    }
}

/// One message as our WebSocket writer can produce it.
#[derive(Debug, Clone)]
enum WsOut {
    Text(String),
    Binary(Vec<u8>),
    Data(u32, bool, Vec<u8>),
    Ping(Vec<u8>),
}

fn ws_out() -> impl Strategy<Value = WsOut> {
    prop_oneof![
        ".{0,40}".prop_map(WsOut::Text),
        prop::collection::vec(any::<u8>(), 0..70_000).prop_map(WsOut::Binary),
        (
            any::<u32>(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(id, end, p)| WsOut::Data(id, end, p)),
        prop::collection::vec(any::<u8>(), 0..125).prop_map(WsOut::Ping),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// Arbitrary bytes on the wire, in arbitrary pieces: the frame reader returns messages,
    /// a typed error or the end, never panics, and never asks for more than its limit.
    #[test]
    fn the_websocket_reader_survives_arbitrary_bytes(
        server_side in any::<bool>(),
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use tokio::io::AsyncWriteExt;
            let (a, mut b) = tokio::io::duplex(1 << 16);
            let role = if server_side { Role::Server } else { Role::Client };
            let mut reader = tunnel_protocol::ws::Reader::new(a, role, 4096);
            let writer = tokio::spawn(async move {
                for p in pieces {
                    if b.write_all(&p).await.is_err() {
                        return;
                    }
                }
            });
            let read = async {
                let mut total = 0usize;
                while let Some(m) = reader.next().await {
                    match m {
                        Ok(tunnel_protocol::ws::Message::Binary(b) | tunnel_protocol::ws::Message::Text(b)) => {
                            total += b.len();
                            assert!(b.len() <= 4096);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                total
            };
            tokio::time::timeout(Duration::from_secs(5), read).await.expect("the reader ends");
            drop(reader);
            let _ = writer.await;
        });
    }

    /// Whatever our writer produces (client role, masked), our reader (server role) gives
    /// back unchanged, in order.
    #[test]
    fn our_frames_round_trip(messages in prop::collection::vec(ws_out(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut client = WebSocket::new(a, Role::Client, 1 << 20);
            let mut server = WebSocket::new(b, Role::Server, 1 << 20);
            let sent = messages.clone();
            let write = tokio::spawn(async move {
                for m in &sent {
                    match m {
                        WsOut::Text(t) => client.writer.text(t),
                        WsOut::Binary(b) => client.writer.binary(b),
                        WsOut::Data(id, end, p) => client.writer.data(*id, *end, p),
                        WsOut::Ping(p) => client.writer.ping(p),
                    }
                    client.writer.flush().await.unwrap();
                }
                client
            });
            use tunnel_protocol::ws::Message as M;
            for m in messages {
                let got = server.reader.next().await.unwrap().unwrap();
                match (m, got) {
                    (WsOut::Text(t), M::Text(b)) => assert_eq!(b, t.as_bytes()),
                    (WsOut::Binary(v), M::Binary(b)) => assert_eq!(b, v),
                    (WsOut::Data(id, end, p), M::Binary(b)) => {
                        let d = DataFrame::decode(b, 1 << 20).unwrap_or_else(|e| {
                            // An empty payload without END is not a valid data frame.
                            assert!(p.is_empty() && !end, "{e}");
                            DataFrame { stream_id: id, end, payload: Bytes::new() }
                        });
                        assert_eq!((d.stream_id, d.end, d.payload.as_ref()), (id, end, p.as_slice()));
                    }
                    (WsOut::Ping(p), M::Ping(b)) => assert_eq!(b, p),
                    (m, got) => panic!("sent {m:?}, got {got:?}"),
                }
            }
            drop(write.await.unwrap());
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    /// Valid frame streams with a few bytes changed, or cut short: nearer to the parser's edge
    /// cases than random bytes (lengths, masks, fragments). The reader never panics and ends.
    #[test]
    fn the_websocket_reader_survives_damaged_streams(
        messages in prop::collection::vec(ws_out(), 1..6),
        fragment in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // Produce a valid client stream (masked) with our writer.
            let (a, mut sink) = tokio::io::duplex(1 << 22);
            let mut w = tunnel_protocol::ws::Writer::new(a, Role::Client);
            for m in &messages {
                match m {
                    WsOut::Text(t) => w.text(t),
                    WsOut::Binary(b) => w.binary(b),
                    WsOut::Data(id, end, p) => w.data(*id, *end, p),
                    WsOut::Ping(p) => w.ping(p),
                }
            }
            w.flush().await.unwrap();
            w.shutdown().await.unwrap();
            drop(w);
            let mut bytes = Vec::new();
            sink.read_to_end(&mut bytes).await.unwrap();
            if fragment && bytes.len() > 2 {
                // Clear FIN on the first frame: the rest must now continue a message.
                bytes[0] &= 0x7F;
            }
            for (i, v) in &flips {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] ^= v;
                }
            }
            let keep = cut.index(bytes.len() + 1);
            bytes.truncate(keep);
            let (r, mut feed) = tokio::io::duplex(1 << 16);
            let mut reader = tunnel_protocol::ws::Reader::new(r, Role::Server, 1 << 17);
            let writer = tokio::spawn(async move {
                let _ = feed.write_all(&bytes).await;
            });
            let read = async {
                while let Some(m) = reader.next().await {
                    if m.is_err() {
                        break;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(5), read).await.expect("the reader ends");
            // A reader that stopped at an error leaves bytes unread: release the writer.
            drop(reader);
            let _ = writer.await;
        });
    }
}
