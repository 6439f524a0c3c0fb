//! The wire protocol between `tunnel-server` and `tunnel-client`, and the stream multiplexer
//! both sides run on top of it.
//!
//! # Layout
//! From the bottom up; each module depends only on the ones before it (checked by
//! `ci/check-layout.py`):
//! - `error`: [`ProtocolError`], why peer input was refused.
//! - [`json_scan`]: the bytes a JSON string must escape, found eight at a time (heads and
//!   log lines).
//! - [`headers`]: HTTP header lists as they travel on the wire, with validation on the way in.
//! - [`head_headers`]: a head's headers as decoded, checked and packed into one buffer while
//!   the JSON is read (a header map only for the end that needs one).
//! - [`message`]: the JSON control messages (hello, request/response heads, flow-control credit,
//!   resets, goodbye). Every variant is documented there.
//! - [`head_json`]: request and response heads written as JSON straight from a header map
//!   (the text serde would write, without copying the headers into a [`headers::WireHeaders`]).
//! - `head_read`: request and response heads read back from the exact text `head_json`
//!   writes, without serde (any other text goes to serde).
//! - [`frame`]: how a WebSocket message maps to a [`frame::Frame`]: text frames carry one
//!   [`message::ControlMessage`], binary frames carry body bytes behind a fixed 5-byte header
//!   (encoded in one place, [`frame::data_header`]).
//! - [`ws`]: the WebSocket framing itself (RFC 6455), read and written without intermediate
//!   copies once the upgrade handshake is done; it owns [`ws::Role`], which decides masking.
//! - [`mux`]: many concurrent streams over one WebSocket, with per-stream credit windows so that a
//!   slow reader only slows its own stream and memory per stream stays bounded. A folder of
//!   parts: configuration, shared state, the reader/writer/keepalive tasks, the flow-control
//!   policy, stream handles, the order of heads in types, the receive pipe, the body pump
//!   both sides use, splice (see its own layout section).
//! - [`carrier`]: a TCP connection carried on a WebSocket of its own, the way consumers of a
//!   TCP tunnel pass the server's HTTP front door (binary messages, an empty one for
//!   half-close); the server's end joins a multiplexer stream.
//! - [`heap`]: allocator settings for the processes that carry traffic.
//! - [`name`]: the rule for tunnel names (a lowercase DNS label), and a valid name close to
//!   a bad one.
//! - [`dev_key`]: where a dev-mode server keeps its generated API key, so that a restart keeps
//!   it and a client on the same machine finds it.
//!
//! # Glossary
//! - **client connection**: the one WebSocket a `tunnel-client` holds open to the server.
//! - **tunnel**: a registered id (`/<tunnel_id>/…`) with a token; at most one live client
//!   connection serves it at a time.
//! - **public request**: an HTTP request from the internet to `/<tunnel_id>/…`.
//! - **stream**: one public request and its response (or, after an upgrade, one raw
//!   bidirectional byte stream) multiplexed on a client connection under a numeric id.
//! - **TCP tunnel**: a tunnel whose streams are raw TCP connections (a head with
//!   [`message::RequestHead::tcp`]) instead of HTTP requests; reached through a public port
//!   of the server or through its HTTP front door ([`carrier`]).
//! - **window / credit**: how many body bytes a side may still send on a stream before the
//!   receiver says it consumed some ([`message::ControlMessage::Window`]).

pub mod carrier;
pub mod dev_key;
pub mod frame;
pub mod head_headers;
pub mod head_json;
mod head_read;
pub mod headers;
pub mod heap;
pub mod json_scan;
pub mod message;
pub mod mux;
pub mod name;
pub mod ws;

mod error;

pub use error::ProtocolError;
pub use message::{
    ControlMessage, Feature, GoodbyeReason, Hello, RequestHead, ResetCode, ResponseHead, StreamId,
    TcpOpen, TcpVia, Welcome, PROTOCOL_VERSION,
};
pub use mux::StreamError;
