//! What the reader hands to the owner of the connection.

use super::exchange::{IncomingRequest, IncomingTcp};
use crate::message::GoodbyeReason;

/// The peer said it is about to close the connection (in-flight streams may still finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
    /// Human-readable detail.
    pub message: String,
}

/// Something the owner of a client connection has to act on.
#[derive(Debug)]
pub enum ClientEvent {
    /// The server opened a stream for a public request.
    Request(IncomingRequest),
    /// The server opened a raw TCP stream (only after this client announced
    /// [`crate::message::Feature::Tcp`]).
    Tcp(IncomingTcp),
    /// The server is about to close the connection.
    Goodbye(Goodbye),
}
