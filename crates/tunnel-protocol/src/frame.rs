//! How WebSocket messages map to protocol frames.
//!
//! - A **text** message is one JSON [`ControlMessage`].
//! - A **binary** message is one [`DataFrame`]: a fixed 5-byte header — the stream id as a
//!   big-endian `u32`, then one flags byte — followed by raw body bytes. Bytes are never base64
//!   encoded and never sent whole: a body of any size travels as a sequence of data frames, the
//!   last one carrying [`FLAG_END`].

use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Message;

use crate::head_read;
use crate::message::{ControlMessage, StreamId};
use crate::ProtocolError;

/// Length of the data frame header.
pub const DATA_HEADER_LEN: usize = 5;
/// Flag: this is the last data frame of the stream in this direction (half-close).
pub const FLAG_END: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_END;

/// Largest control message accepted, in bytes of JSON. Heads are limited to this too, which
/// bounds the total size of a request's headers on the wire.
pub const MAX_CONTROL_LEN: usize = 256 * 1024;

/// A chunk of body bytes for one stream and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// The stream the bytes belong to.
    pub stream_id: StreamId,
    /// Whether this is the last frame in this direction.
    pub end: bool,
    /// The bytes; may be empty only when `end` is set.
    pub payload: Bytes,
}

/// The fixed header of a data frame: the stream id as a big-endian `u32`, then the flags.
///
/// The one place the header is encoded: [`DataFrame::encode`] (for `tungstenite` peers) and
/// the multiplexer's writer ([`crate::ws::Writer::data`], which formats it straight into its
/// write buffer) both use it.
pub fn data_header(stream_id: StreamId, end: bool) -> [u8; DATA_HEADER_LEN] {
    let id = stream_id.to_be_bytes();
    [id[0], id[1], id[2], id[3], if end { FLAG_END } else { 0 }]
}

impl DataFrame {
    /// Encodes into a binary message body (one copy of the payload).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + self.payload.len());
        buf.put_slice(&data_header(self.stream_id, self.end));
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// Decodes a binary message body; the payload shares the message's buffer (no copy).
    pub fn decode(mut bytes: Bytes, max_payload: usize) -> Result<Self, ProtocolError> {
        if bytes.len() < DATA_HEADER_LEN {
            return Err(ProtocolError::Truncated(bytes.len()));
        }
        let payload_len = bytes.len() - DATA_HEADER_LEN;
        if payload_len > max_payload {
            return Err(ProtocolError::TooLarge {
                len: payload_len,
                max: max_payload,
            });
        }
        let header = bytes.split_to(DATA_HEADER_LEN);
        let stream_id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let flags = header[4];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ProtocolError::UnknownFlags(flags));
        }
        let end = flags & FLAG_END != 0;
        if !end && bytes.is_empty() {
            return Err(ProtocolError::Unexpected(
                "empty data frame without the end flag".into(),
            ));
        }
        Ok(Self {
            stream_id,
            end,
            payload: bytes,
        })
    }
}

/// A decoded WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A control message (text frame).
    Control(ControlMessage),
    /// Body bytes (binary frame).
    Data(DataFrame),
}

impl Frame {
    /// Turns the frame into a WebSocket message.
    pub fn into_message(self) -> Result<Message, ProtocolError> {
        Ok(match self {
            Frame::Control(msg) => Message::text(serde_json::to_string(&msg)?),
            Frame::Data(data) => Message::Binary(data.encode()),
        })
    }

    /// Decodes the payload of a text message: one control message.
    pub fn decode_text(text: &[u8]) -> Result<ControlMessage, ProtocolError> {
        if text.len() > MAX_CONTROL_LEN {
            return Err(ProtocolError::TooLarge {
                len: text.len(),
                max: MAX_CONTROL_LEN,
            });
        }
        // UTF-8 checked once, for the whole text: read from bytes, serde_json checks every
        // string on its own (each header name and value: 21 calls, about 2,000 instructions
        // of a small request's head, callgrind), read from a `str` none. Text that is not
        // UTF-8 goes the old way, for serde_json's error saying where. A head as our peer
        // writes it is read without serde (`head_read`, about half its cost), the same result.
        match std::str::from_utf8(text) {
            Ok(text) => match head_read::read(text) {
                Some(head) => Ok(head),
                None => Ok(serde_json::from_str(text)?),
            },
            Err(_) => Ok(serde_json::from_slice(text)?),
        }
    }

    /// Decodes a text or binary WebSocket message of a `tungstenite` peer. Returns `Ok(None)`
    /// for ping, pong and close frames, which the WebSocket layer handles.
    pub fn decode(msg: Message, max_payload: usize) -> Result<Option<Self>, ProtocolError> {
        match msg {
            Message::Text(text) => Ok(Some(Frame::Control(Self::decode_text(text.as_bytes())?))),
            Message::Binary(bytes) => Ok(Some(Frame::Data(DataFrame::decode(bytes, max_payload)?))),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => Ok(None),
        }
    }
}

/// The largest WebSocket message on a client connection: a full data frame or the largest
/// control message.
pub fn max_message(max_frame_size: u32) -> usize {
    (max_frame_size as usize + DATA_HEADER_LEN).max(MAX_CONTROL_LEN)
}

/// WebSocket limits for a `tungstenite` peer of a client connection: no message larger than
/// [`max_message`], and a bounded write buffer (tungstenite's defaults are 64 MiB messages
/// and an unbounded write buffer).
pub fn websocket_config(
    max_frame_size: u32,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    let max_message = max_message(max_frame_size);
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(32 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(64 * 1024 + 2 * max_message)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_round_trip() {
        for (id, end, payload) in [
            (1u32, false, Bytes::from_static(b"hello")),
            (u32::MAX, true, Bytes::new()),
            (42, true, Bytes::from(vec![0u8; 1000])),
        ] {
            let f = DataFrame {
                stream_id: id,
                end,
                payload,
            };
            let back = DataFrame::decode(f.encode(), 1 << 20).expect("decodes");
            assert_eq!(back, f);
        }
    }

    #[test]
    fn control_text_decodes_the_same_with_escapes_and_refuses_bytes_that_are_not_utf8() {
        let text = r#"{"type":"reset","stream_id":7,"code":"cancelled","message":"caf\u00e9 ü"}"#;
        match Frame::decode_text(text.as_bytes()) {
            Ok(ControlMessage::Reset { message, .. }) => assert_eq!(message, "café ü"),
            other => panic!("not a reset: {other:?}"),
        }
        let mut bad =
            br#"{"type":"reset","stream_id":7,"code":"cancelled","message":"x"}"#.to_vec();
        let at = bad.len() - 3;
        bad[at] = 0xff;
        assert!(matches!(
            Frame::decode_text(&bad),
            Err(ProtocolError::Json(_))
        ));
    }

    #[test]
    fn bad_data_frames_are_typed_errors() {
        for len in 0..DATA_HEADER_LEN {
            assert!(matches!(
                DataFrame::decode(Bytes::from(vec![0u8; len]), 16),
                Err(ProtocolError::Truncated(l)) if l == len
            ));
        }
        assert!(matches!(
            DataFrame::decode(Bytes::from_static(&[0, 0, 0, 1, 0x80, 1]), 16),
            Err(ProtocolError::UnknownFlags(0x80))
        ));
        assert!(matches!(
            DataFrame::decode(Bytes::from(vec![0u8; DATA_HEADER_LEN + 17]), 16),
            Err(ProtocolError::TooLarge { len: 17, max: 16 })
        ));
        assert!(matches!(
            DataFrame::decode(Bytes::from_static(&[0, 0, 0, 1, 0]), 16),
            Err(ProtocolError::Unexpected(_))
        ));
    }

    #[test]
    fn control_frames_decode_or_fail_cleanly() {
        let msg = Message::text(r#"{"type":"window","stream_id":3,"increment":10}"#);
        assert_eq!(
            Frame::decode(msg, 16).expect("valid"),
            Some(Frame::Control(ControlMessage::Window {
                stream_id: 3,
                increment: 10
            }))
        );
        for bad in ["", "{", "null", "[]", r#"{"type":"window"}"#, "\u{0}"] {
            assert!(Frame::decode(Message::text(bad), 16).is_err(), "{bad:?}");
        }
        let huge = format!(
            r#"{{"type":"hello","agent":"{}"}}"#,
            "a".repeat(MAX_CONTROL_LEN)
        );
        assert!(matches!(
            Frame::decode(Message::text(huge), 16),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(
            Frame::decode(Message::Ping(Bytes::new()), 16).expect("ok"),
            None
        );
    }
}
