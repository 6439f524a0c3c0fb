//! Why peer input was refused: the one error type of the decoding layers (frames, messages,
//! headers), at the bottom of the crate.

/// Why a frame or message from the peer could not be accepted.
///
/// Every decoding path returns one of these instead of panicking: the peer is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A text frame that is not a valid control message.
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
    /// A frame larger than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the offending frame.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A binary frame shorter than its fixed header.
    #[error("data frame truncated: {0} bytes, the header alone is 5")]
    Truncated(usize),
    /// A binary frame with flag bits this version does not know.
    #[error("data frame has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// A header name that is not a valid HTTP token.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A header value with bytes HTTP forbids (CR, LF, NUL…).
    #[error("invalid value for header {0:?}")]
    InvalidHeaderValue(String),
    /// A header value whose base64 form does not decode.
    #[error("header value is not valid base64")]
    InvalidBase64,
    /// An HTTP method that is not a valid token.
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    /// An HTTP status outside 100..=999 (or otherwise not usable).
    #[error("invalid HTTP status {0}")]
    InvalidStatus(u16),
    /// A request target that is not an origin-form path.
    #[error("invalid request target {0:?}")]
    InvalidTarget(String),
    /// A message that is valid on its own but not allowed at this point of the conversation.
    #[error("unexpected message: {0}")]
    Unexpected(String),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: peer speaks {peer}, we speak {ours}")]
    VersionMismatch {
        /// The version the peer announced.
        peer: u32,
        /// Our version.
        ours: u32,
    },
}
