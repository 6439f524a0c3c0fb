//! Integration tests of the stream multiplexer ([`tunnel_protocol::mux`]), one module per
//! concern (one test binary: every file here shares its build).
//!
//! Every test runs over an in-memory `tokio::io::duplex` pipe wrapped in WebSocket framing on
//! both ends: either two muxes talking to each other, or one mux and a hand-driven "raw" peer
//! that speaks the wire format directly (to misbehave on purpose). Every wait is bounded by a
//! timeout; the only fixed delays are negative checks ("this has *not* happened after 200 ms").

mod raw;
mod support;

mod cancellation;
mod connection;
mod flow_control;
mod misbehaving_peer;
mod pump;
mod round_trip;
mod tcp;
mod tuning;
