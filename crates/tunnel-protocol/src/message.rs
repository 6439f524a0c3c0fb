//! Control messages: JSON in WebSocket text frames, tagged by a `type` field.
//!
//! Body bytes never travel here (see [`crate::frame`]); only heads and signalling do. Unknown
//! fields are ignored so that a newer peer can add optional fields without a version bump.

use std::net::SocketAddr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::head_headers::HeadHeaders;

/// Version of this protocol. Bumped on any incompatible change; both sides refuse a mismatch
/// with a message that tells the user what to upgrade.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies one stream on a client connection. Chosen by the server, never reused on a
/// connection, never 0.
pub type StreamId = u32;

/// A control message.
///
/// Serialised with the `type` tag first. Decoding is hand-written (see the `Deserialize` impl)
/// so that the common case, `type` first, decodes in one pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Client → server, first message on a new connection.
    Hello(Hello),
    /// Server → client, the answer to an acceptable [`Hello`].
    Welcome(Welcome),
    /// Server → client: a public request arrived; opens stream `stream_id`.
    Request(RequestHead),
    /// Client → server: the local service answered the request of `stream_id`.
    Response(ResponseHead),
    /// Either way: the sender consumed `increment` more body bytes of `stream_id`, so the peer
    /// may send that many more.
    Window {
        /// The stream the credit is for.
        stream_id: StreamId,
        /// Bytes of additional credit.
        increment: u32,
    },
    /// Either way: abandon `stream_id` at once. Both directions stop; late frames for it are
    /// ignored.
    Reset {
        /// The stream to abandon.
        stream_id: StreamId,
        /// Why, in a form the peer can act on (e.g. map to an HTTP status).
        code: ResetCode,
        /// Detail for logs; never shown to public clients.
        #[serde(default)]
        message: String,
    },
    /// Either way: the sender is about to close the connection, and why. In-flight streams may
    /// still finish before the close.
    Goodbye {
        /// Why the connection ends; tells the client whether to reconnect.
        reason: GoodbyeReason,
        /// A human-readable explanation, printed by the client.
        #[serde(default)]
        message: String,
    },
}

/// The `type` tags of [`ControlMessage`].
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Hello,
    Welcome,
    Request,
    Response,
    Window,
    Reset,
    Goodbye,
}

#[derive(Deserialize)]
struct WindowFields {
    stream_id: StreamId,
    increment: u32,
}

#[derive(Deserialize)]
struct ResetFields {
    stream_id: StreamId,
    code: ResetCode,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct GoodbyeFields {
    reason: GoodbyeReason,
    #[serde(default)]
    message: String,
}

impl Kind {
    /// Decodes the fields of a message of this kind (the `type` entry is ignored if present).
    fn decode<'de, D: Deserializer<'de>>(self, fields: D) -> Result<ControlMessage, D::Error> {
        Ok(match self {
            Kind::Hello => ControlMessage::Hello(Hello::deserialize(fields)?),
            Kind::Welcome => ControlMessage::Welcome(Welcome::deserialize(fields)?),
            Kind::Request => ControlMessage::Request(RequestHead::deserialize(fields)?),
            Kind::Response => ControlMessage::Response(ResponseHead::deserialize(fields)?),
            Kind::Window => {
                let f = WindowFields::deserialize(fields)?;
                ControlMessage::Window {
                    stream_id: f.stream_id,
                    increment: f.increment,
                }
            }
            Kind::Reset => {
                let f = ResetFields::deserialize(fields)?;
                ControlMessage::Reset {
                    stream_id: f.stream_id,
                    code: f.code,
                    message: f.message,
                }
            }
            Kind::Goodbye => {
                let f = GoodbyeFields::deserialize(fields)?;
                ControlMessage::Goodbye {
                    reason: f.reason,
                    message: f.message,
                }
            }
        })
    }
}

/// The first key of a message object: `type` (the fast path) or anything else.
enum FirstKey {
    Type,
    Other(String),
}

impl<'de> Deserialize<'de> for FirstKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = FirstKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FirstKey, E> {
                Ok(if v == "type" {
                    FirstKey::Type
                } else {
                    FirstKey::Other(v.to_owned())
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Decodes a control message. serde's derived decoder for internally tagged enums first
/// buffers the whole object (every header name and value) into an intermediate tree, then
/// decodes that: a third of the JSON cost of a request head. Every peer of ours writes `type`
/// first, so when it is first the fields are decoded straight from the input; an object with
/// `type` elsewhere (hand-written, another implementation) takes the buffered path.
impl<'de> Deserialize<'de> for ControlMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = ControlMessage;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a control message object with a `type`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ControlMessage, A::Error> {
                let first = match map.next_key::<FirstKey>()? {
                    None => return Err(de::Error::missing_field("type")),
                    Some(FirstKey::Type) => {
                        let kind: Kind = map.next_value()?;
                        return kind.decode(de::value::MapAccessDeserializer::new(map));
                    }
                    Some(FirstKey::Other(name)) => name,
                };
                let mut object = serde_json::Map::new();
                object.insert(first, map.next_value()?);
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    object.insert(k, v);
                }
                let kind = object
                    .get("type")
                    .ok_or_else(|| de::Error::missing_field("type"))?;
                let kind = Kind::deserialize(kind).map_err(de::Error::custom)?;
                kind.decode(serde_json::Value::Object(object))
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_map(MessageVisitor)
    }
}

/// First message of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Client software and version, for logs (e.g. `tunnel-client/0.1.0`).
    #[serde(default)]
    pub agent: String,
    /// What the client can do beyond plain HTTP streams. A server opens a stream of a kind
    /// only on a connection whose client announced it, so that an older client (which sends
    /// none) never receives a stream it would misread. Absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Feature>,
}

/// Something a client announces it can do ([`Hello::features`]). Unknown names from a newer
/// client decode as [`Feature::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Raw TCP streams: request heads with [`RequestHead::tcp`] set.
    Tcp,
    /// A feature this version does not know.
    #[serde(other)]
    Other,
}

/// The server's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The tunnel this connection now serves.
    pub tunnel_id: String,
    /// Where the public reaches the tunnel, e.g. `https://tunnels.example.com/abc123/`.
    pub public_url: String,
    /// Initial credit, in bytes, each side has per stream and direction.
    pub initial_window: u32,
    /// Largest receive window, in bytes, either side may grow a stream to when the round trip
    /// limits it (flow-control auto-tuning). Absent (a server older than auto-tuning): equal to
    /// `initial_window`, i.e. fixed windows. Growing needs nothing from the sender (more credit
    /// is just credit), so this is the receiving side's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window: Option<u32>,
    /// Largest body payload allowed in one data frame.
    pub max_frame_size: u32,
    /// How often the server pings; the client treats a silence of a few intervals as a dead
    /// connection.
    pub ping_interval_secs: u32,
}

/// The head of a public request, as forwarded to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestHead {
    /// The new stream carrying this request.
    pub stream_id: StreamId,
    /// HTTP method, as sent by the public client.
    pub method: String,
    /// Origin-form target for the local service: path with the tunnel prefix removed, and the
    /// query, byte for byte as the public client sent them.
    pub target: String,
    /// Headers to send to the local service (hop-by-hop ones already removed, forwarding ones
    /// added).
    pub headers: HeadHeaders,
    /// True when the request has no body: no data frame follows.
    #[serde(default)]
    pub end_stream: bool,
    /// Set when the stream is a raw TCP connection, not an HTTP request: the client connects
    /// to its local TCP service and answers `200` once connected (or resets the stream with
    /// [`ResetCode::LocalConnectFailed`]); from then on the stream carries the connection's
    /// bytes both ways, each direction ended by its end marker (half-close). `method` is then
    /// `CONNECT`, `target` and `headers` empty. Sent only to a client that announced
    /// [`Feature::Tcp`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpOpen>,
}

/// Where a raw TCP stream ([`RequestHead::tcp`]) comes from: what the local service may be
/// told in a PROXY protocol header, and what the client's log line shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpOpen {
    /// The address of whoever opened the connection, as the server saw it (the real client
    /// behind trusted proxies, for the front door).
    pub peer: SocketAddr,
    /// The address that connection was made to on the server's side.
    pub local: SocketAddr,
    /// How it reached the server.
    pub via: TcpVia,
}

/// How a TCP connection reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpVia {
    /// A WebSocket through the server's HTTP endpoint (`tunnel-client connect`).
    FrontDoor,
    /// The tunnel's public TCP port.
    Port,
    /// A way this version does not know.
    #[serde(other)]
    Other,
}

impl TcpVia {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpVia::FrontDoor => "front_door",
            TcpVia::Port => "port",
            TcpVia::Other => "other",
        }
    }
}

/// The head of the local service's response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The stream this answers.
    pub stream_id: StreamId,
    /// HTTP status code.
    pub status: u16,
    /// Response headers, repeated names kept as separate entries.
    pub headers: HeadHeaders,
    /// True when the response has no body: no data frame follows.
    #[serde(default)]
    pub end_stream: bool,
}

/// Why a stream was reset. Unknown codes from a newer peer decode as [`ResetCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetCode {
    /// The other end (public client or local service) went away; nothing is wrong.
    Cancelled,
    /// The client could not connect to the local service (refused, unreachable).
    LocalConnectFailed,
    /// The local service failed mid-request or sent something unusable.
    LocalError,
    /// A frame or head for this stream broke the protocol.
    ProtocolError,
    /// More bytes arrived than the window allowed.
    FlowControl,
    /// The receiver will not take this stream (too many streams, shutting down…).
    Refused,
    /// The stream was silent for longer than the idle timeout.
    IdleTimeout,
    /// A code this version does not know.
    #[serde(other)]
    Other,
}

/// Why a connection is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// Another client authenticated for the same tunnel and took over. Do not reconnect.
    Replaced,
    /// The tunnel was deleted through the API. Do not reconnect.
    Deleted,
    /// The tunnel's lifetime ended. Do not reconnect.
    Expired,
    /// The server is restarting; reconnect. Sent without closing it is a GOAWAY: the
    /// connection goes on carrying the requests the server still sends on it (until the
    /// client's new session elsewhere replaced it and they finished), so a client reconnects
    /// at once beside it, make-before-break.
    ServerShutdown,
    /// The client speaks another protocol version; upgrade it.
    VersionMismatch,
    /// The peer broke the protocol.
    ProtocolError,
    /// The client is going away (Ctrl-C).
    ClientShutdown,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl GoodbyeReason {
    /// Whether a client that receives this should try to connect again.
    pub fn should_reconnect(self) -> bool {
        matches!(
            self,
            Self::ServerShutdown | Self::ProtocolError | Self::Other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::WireHeaders;

    #[test]
    fn messages_round_trip_through_json() {
        let msgs = vec![
            ControlMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent: "test/1".into(),
                features: vec![Feature::Tcp],
            }),
            ControlMessage::Request(RequestHead {
                stream_id: 7,
                method: "POST".into(),
                target: "/a%2Fb?x=1&y".into(),
                headers: WireHeaders(vec![
                    ("content-type".into(), b"text/plain".to_vec().into()),
                    ("x-bin".into(), vec![0xff, 0x01, b'a'].into()),
                ])
                .into(),
                end_stream: false,
                tcp: None,
            }),
            ControlMessage::Request(RequestHead {
                stream_id: 9,
                method: "CONNECT".into(),
                target: String::new(),
                headers: HeadHeaders::default(),
                end_stream: false,
                tcp: Some(TcpOpen {
                    peer: "[2001:db8::1]:40000".parse().expect("address"),
                    local: "10.0.0.1:20001".parse().expect("address"),
                    via: TcpVia::Port,
                }),
            }),
            ControlMessage::Window {
                stream_id: 7,
                increment: 65536,
            },
            ControlMessage::Reset {
                stream_id: 7,
                code: ResetCode::LocalConnectFailed,
                message: "refused".into(),
            },
            ControlMessage::Goodbye {
                reason: GoodbyeReason::Replaced,
                message: String::new(),
            },
        ];
        for m in msgs {
            let json = serde_json::to_string(&m).expect("serializes");
            let back: ControlMessage = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, m, "{json}");
        }
    }

    #[test]
    fn welcome_max_window_is_optional() {
        let mut welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            tunnel_id: "abc".into(),
            public_url: "http://localhost:8989/abc/".into(),
            initial_window: 1 << 20,
            max_window: Some(16 << 20),
            max_frame_size: 1 << 16,
            ping_interval_secs: 20,
        };
        let json = serde_json::to_string(&ControlMessage::Welcome(welcome.clone())).expect("ok");
        assert!(json.contains(r#""max_window":16777216"#), "{json}");
        let back: ControlMessage = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ControlMessage::Welcome(welcome.clone()));
        // What a server older than auto-tuning sends.
        welcome.max_window = None;
        let json = serde_json::to_string(&ControlMessage::Welcome(welcome.clone())).expect("ok");
        assert!(!json.contains("max_window"), "{json}");
        let back: ControlMessage = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ControlMessage::Welcome(welcome));
    }

    #[test]
    fn unknown_codes_decode_as_other() {
        let m: ControlMessage =
            serde_json::from_str(r#"{"type":"reset","stream_id":1,"code":"brand_new"}"#)
                .expect("parses");
        assert_eq!(
            m,
            ControlMessage::Reset {
                stream_id: 1,
                code: ResetCode::Other,
                message: String::new()
            }
        );
    }

    #[test]
    fn tcp_fields_are_optional_both_ways() {
        // What a client before TCP tunnels sends: no features.
        let m: ControlMessage =
            serde_json::from_str(r#"{"type":"hello","protocol_version":1,"agent":"old"}"#)
                .expect("parses");
        assert!(matches!(m, ControlMessage::Hello(h) if h.features.is_empty()));
        // A newer client's features this version does not know.
        let m: ControlMessage = serde_json::from_str(
            r#"{"type":"hello","protocol_version":1,"features":["tcp","teleport"]}"#,
        )
        .expect("parses");
        assert!(
            matches!(m, ControlMessage::Hello(h) if h.features == [Feature::Tcp, Feature::Other])
        );
        // An HTTP request head carries no `tcp` key at all, so older clients see what they
        // always saw.
        let head = RequestHead {
            stream_id: 1,
            method: "GET".into(),
            target: "/".into(),
            headers: HeadHeaders::default(),
            end_stream: true,
            tcp: None,
        };
        let json = serde_json::to_string(&ControlMessage::Request(head)).expect("ok");
        assert!(!json.contains("tcp"), "{json}");
        let json = r#"{"type":"request","stream_id":2,"method":"CONNECT","target":"","headers":[],
            "tcp":{"peer":"192.0.2.7:5000","local":"127.0.0.1:1","via":"carrier_pigeon"}}"#;
        let m: ControlMessage = serde_json::from_str(json).expect("parses");
        assert!(
            matches!(m, ControlMessage::Request(h) if h.tcp.as_ref().is_some_and(|t| t.via == TcpVia::Other))
        );
    }

    #[test]
    fn type_anywhere_in_the_object_decodes_the_same() {
        let first = r#"{"type":"reset","stream_id":1,"code":"refused","message":"m"}"#;
        let last = r#"{"stream_id":1,"code":"refused","message":"m","type":"reset"}"#;
        let a: ControlMessage = serde_json::from_str(first).expect("type first");
        let b: ControlMessage = serde_json::from_str(last).expect("type last");
        assert_eq!(a, b);
        let head = r#"{"stream_id":3,"type":"response","status":204,"headers":[["a","b"]]}"#;
        let m: ControlMessage = serde_json::from_str(head).expect("type second");
        assert!(
            matches!(m, ControlMessage::Response(h) if h.status == 204 && h.headers.len() == 1)
        );
        // A repeated `type` after the first is ignored, as unknown fields are.
        let twice = r#"{"type":"window","stream_id":1,"increment":5,"type":"hello"}"#;
        assert!(matches!(
            serde_json::from_str::<ControlMessage>(twice),
            Ok(ControlMessage::Window { increment: 5, .. })
        ));
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(serde_json::from_str::<ControlMessage>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ControlMessage>(r#"{"stream_id":1}"#).is_err());
        assert!(
            serde_json::from_str::<ControlMessage>(r#"{"type":"window","stream_id":"x"}"#).is_err()
        );
        for bad in [
            "{}",
            "[]",
            "1",
            r#"{"stream_id":1}"#,
            r#"{"type":3}"#,
            r#"{"a":1,"type":"x"}"#,
        ] {
            assert!(
                serde_json::from_str::<ControlMessage>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
