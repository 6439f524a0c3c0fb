//! What the reader hands to the owner of the connection.

use super::stream::Stream;
use crate::message::{GoodbyeReason, RequestHead};

/// Something the owner of the connection has to act on.
#[derive(Debug)]
pub enum Event {
    /// (Client role) the server opened a stream for a public request.
    Request {
        /// The request head.
        head: RequestHead,
        /// The stream to read the request body from and send the response on.
        stream: Stream,
    },
    /// The peer said it is about to close the connection.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
        /// Human-readable detail.
        message: String,
    },
}
