//! Control messages: JSON in WebSocket text frames, tagged by a `type` field.
//!
//! Body bytes never travel here (see [`crate::frame`]); only heads and signalling do. Unknown
//! fields are ignored so that a newer peer can add optional fields without a version bump.

use serde::{Deserialize, Serialize};

use crate::headers::WireHeaders;

/// Version of this protocol. Bumped on any incompatible change; both sides refuse a mismatch
/// with a message that tells the user what to upgrade.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies one stream on a client connection. Chosen by the server, never reused on a
/// connection, never 0.
pub type StreamId = u32;

/// A control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// First message of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Client software and version, for logs (e.g. `tunnel-client/0.1.0`).
    #[serde(default)]
    pub agent: String,
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
    pub headers: WireHeaders,
    /// True when the request has no body: no data frame follows.
    #[serde(default)]
    pub end_stream: bool,
}

/// The head of the local service's response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The stream this answers.
    pub stream_id: StreamId,
    /// HTTP status code.
    pub status: u16,
    /// Response headers, repeated names kept as separate entries.
    pub headers: WireHeaders,
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
    /// The server is restarting; reconnect with backoff.
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
            }),
            ControlMessage::Request(RequestHead {
                stream_id: 7,
                method: "POST".into(),
                target: "/a%2Fb?x=1&y".into(),
                headers: WireHeaders(vec![
                    ("content-type".into(), b"text/plain".to_vec().into()),
                    ("x-bin".into(), vec![0xff, 0x01, b'a'].into()),
                ]),
                end_stream: false,
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
    fn unknown_type_is_an_error() {
        assert!(serde_json::from_str::<ControlMessage>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ControlMessage>(r#"{"stream_id":1}"#).is_err());
        assert!(
            serde_json::from_str::<ControlMessage>(r#"{"type":"window","stream_id":"x"}"#).is_err()
        );
    }
}
