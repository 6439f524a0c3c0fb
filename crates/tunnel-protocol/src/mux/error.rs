//! Why a stream ended early: what every stream handle reports.

use crate::message::ResetCode;

/// Why a stream ended before both of its directions completed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// The peer reset the stream.
    #[error("stream reset by peer: {code:?} {message}")]
    Reset {
        /// The peer's reason.
        code: ResetCode,
        /// Free-form detail from the peer, for logs.
        message: String,
    },
    /// The client connection carrying the stream is gone.
    #[error("client connection closed")]
    ConnectionClosed,
    /// We cancelled the stream ourselves.
    #[error("stream cancelled")]
    Cancelled,
    /// The peer sent more bytes than it had credit for.
    #[error("peer exceeded its flow-control window")]
    FlowControl,
}
