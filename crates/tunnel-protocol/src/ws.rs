//! The WebSocket framing (RFC 6455 §5) of a client connection, after the HTTP upgrade.
//!
//! The upgrade handshake itself is done by `tokio-tungstenite` (client) and hyper (server);
//! once it is done, this module reads and writes the frames. It exists because the tunnel's
//! data path is a stream of frames whose payloads are body bytes, and a general WebSocket
//! library costs that path more than it needs to:
//! - **Reading**: tungstenite zero-fills its read buffer before every read and reads at most
//!   its buffer size per call. [`Reader`] reads straight into spare capacity, reserving the
//!   whole frame once its header is known, and hands the payload out as a slice of that
//!   buffer (no copy); only a client's mask is removed, in place.
//! - **Writing**: a data frame used to be copied into a message (stream id + flags + bytes),
//!   then again into tungstenite's write buffer. [`Writer`] formats the WebSocket header, the
//!   data header and the payload straight into one write buffer, and many frames share one
//!   `write` call.
//!
//! What it accepts is what RFC 6455 allows without extensions: fragmented messages (a proxy
//! may re-fragment), control frames between fragments, and masks exactly as the roles require
//! (a client's frames masked, a server's not). Everything else is a typed [`WsError`].

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::data_header;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Longest WebSocket frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER_LEN: usize = 14;
/// Spare capacity to read into when no frame header says how much is coming.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer that grew past this (one huge batch) is released after it is written.
const KEEP_WRITE_BUFFER: usize = 256 * 1024;
/// Largest buffer a connection keeps while it has nothing to write or read: a thousand idle
/// tunnels that each once carried a download must not each hold a frame-sized buffer.
pub const IDLE_BUFFER: usize = 16 * 1024;

/// Which end of the connection we are: the server opens streams, the client accepts them.
///
/// Owned here, at the bottom of the crate, because the framing itself depends on it (RFC 6455:
/// a client masks its frames, a server must not); the multiplexer and its callers take it from
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `tunnel-server`.
    Server,
    /// `tunnel-client`.
    Client,
}

/// Why a WebSocket connection could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke RFC 6455.
    #[error("websocket protocol violation: {0}")]
    Protocol(&'static str),
    /// A message larger than the limit.
    #[error("websocket message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the message so far (or as announced).
        len: u64,
        /// The limit in force.
        max: usize,
    },
}

/// A close frame's status code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Status code (1000 normal, 1002 protocol error, …).
    pub code: u16,
    /// Reason, for people.
    pub reason: String,
}

/// A complete WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; its bytes are checked to be UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the payload must be echoed in a pong.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer closes the connection.
    Close(Option<CloseFrame>),
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

/// Parses a frame header from the start of `buf`; `Ok(None)` if more bytes are needed.
fn parse_header(buf: &[u8], role: Role) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set without an extension"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
        }
        _ => return Err(WsError::Protocol("unknown opcode")),
    }
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(WsError::Protocol("unmasked frame from a client")),
        (Role::Client, true) => return Err(WsError::Protocol("masked frame from a server")),
        _ => {}
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("payload length with the top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && len > 125 {
        return Err(WsError::Protocol("control frame longer than 125 bytes"));
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let key = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        len,
        header_len: at,
    }))
}

/// XORs `buf` with the 4-byte `key`, starting at key position 0; eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Whole 8-byte chunks came before, so the remainder starts at key position 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The reading half: yields whole messages.
#[derive(Debug)]
pub struct Reader<R> {
    io: R,
    role: Role,
    buf: BytesMut,
    max_message: usize,
    /// A fragmented message being collected: its opcode and bytes so far.
    partial: Option<(u8, BytesMut)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader for our `role`, refusing messages over `max_message` bytes.
    pub fn new(io: R, role: Role, max_message: usize) -> Self {
        Self {
            io,
            role,
            buf: BytesMut::new(),
            max_message,
            partial: None,
        }
    }

    /// Changes the message size limit (once the peer's frame size is known).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// The next message; `None` when the peer closed the TCP connection between messages.
    pub async fn next(&mut self) -> Option<Result<Message, WsError>> {
        match self.next_inner().await {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn next_inner(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            match parse_header(&self.buf, self.role)? {
                Some(h) => {
                    let collected = self.partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
                    if h.opcode < OP_CLOSE
                        && h.len.saturating_add(collected) > self.max_message as u64
                    {
                        return Err(WsError::TooLarge {
                            len: h.len.saturating_add(collected),
                            max: self.max_message,
                        });
                    }
                    // Fits in usize: bounded by max_message, or by 125 for control frames.
                    let total = h.header_len + h.len as usize;
                    if self.buf.len() >= total {
                        let mut payload = self.buf.split_to(total);
                        payload.advance(h.header_len);
                        if let Some(key) = h.mask {
                            apply_mask(&mut payload, key);
                        }
                        if self.buf.is_empty() && h.len as usize > IDLE_BUFFER {
                            // Everything read is handed out: let go of the large frame's
                            // allocation (its payload alone keeps it until written on) instead
                            // of keeping it alive as this buffer's spare room.
                            self.buf = BytesMut::new();
                        }
                        if let Some(msg) = self.on_frame(h.fin, h.opcode, payload)? {
                            return Ok(Some(msg));
                        }
                        continue;
                    }
                    // One allocation for the rest of the frame; its payload is then split off
                    // without a copy.
                    self.buf.reserve(total - self.buf.len());
                }
                None => self.buf.reserve(READ_CHUNK.max(MAX_HEADER_LEN)),
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() && self.partial.is_none() {
                    return Ok(None);
                }
                return Err(WsError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a websocket message",
                )));
            }
        }
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
    ) -> Result<Option<Message>, WsError> {
        match opcode {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol(
                        "new message before the fragmented one ended",
                    ));
                }
                if fin {
                    return data_message(opcode, payload.freeze()).map(Some);
                }
                self.partial = Some((opcode, payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((first, mut collected)) = self.partial.take() else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                collected.extend_from_slice(&payload);
                if fin {
                    return data_message(first, collected.freeze()).map(Some);
                }
                self.partial = Some((first, collected));
                Ok(None)
            }
            OP_PING => Ok(Some(Message::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Message::Pong(payload.freeze()))),
            // parse_header lets no other opcode through.
            _ => close_message(&payload).map(Some),
        }
    }
}

fn data_message(opcode: u8, payload: Bytes) -> Result<Message, WsError> {
    if opcode == OP_TEXT {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::Protocol("text message is not UTF-8"));
        }
        return Ok(Message::Text(payload));
    }
    Ok(Message::Binary(payload))
}

fn close_message(payload: &[u8]) -> Result<Message, WsError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(WsError::Protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let reason = std::str::from_utf8(reason)
                .map_err(|_| WsError::Protocol("close reason is not UTF-8"))?;
            Ok(Message::Close(Some(CloseFrame {
                code: u16::from_be_bytes([*hi, *lo]),
                reason: reason.to_string(),
            })))
        }
    }
}

/// The writing half: frames are formatted into one buffer, written by [`Writer::flush`].
#[derive(Debug)]
pub struct Writer<W> {
    io: W,
    role: Role,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer for our `role` (a client masks its frames).
    pub fn new(io: W, role: Role) -> Self {
        Self {
            io,
            role,
            buf: BytesMut::new(),
        }
    }

    /// Bytes formatted and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes a frame header; returns the mask key the payload must be masked with, if any.
    fn header(&mut self, opcode: u8, len: usize) -> Option<[u8; 4]> {
        self.buf.reserve(MAX_HEADER_LEN + len);
        self.buf.put_u8(0x80 | opcode);
        let mask_bit = if self.role == Role::Client { 0x80 } else { 0 };
        if len < 126 {
            self.buf.put_u8(mask_bit | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.buf.put_u8(mask_bit | 126);
            self.buf.put_u16(short);
        } else {
            self.buf.put_u8(mask_bit | 127);
            self.buf.put_u64(len as u64);
        }
        (self.role == Role::Client).then(|| {
            let key: [u8; 4] = rand::random();
            self.buf.put_slice(&key);
            key
        })
    }

    fn frame(&mut self, opcode: u8, parts: &[&[u8]]) {
        let len = parts.iter().map(|p| p.len()).sum();
        let key = self.header(opcode, len);
        let start = self.buf.len();
        for p in parts {
            self.buf.put_slice(p);
        }
        if let Some(key) = key {
            apply_mask(&mut self.buf[start..], key);
        }
    }

    /// Adds a text message.
    pub fn text(&mut self, text: &str) {
        self.frame(OP_TEXT, &[text.as_bytes()]);
    }

    /// Adds a binary message.
    pub fn binary(&mut self, bytes: &[u8]) {
        self.frame(OP_BINARY, &[bytes]);
    }

    /// Adds a data frame of the tunnel protocol (see [`crate::frame`]) as one binary message,
    /// without building the message first.
    pub fn data(&mut self, stream_id: u32, end: bool, payload: &[u8]) {
        self.frame(OP_BINARY, &[&data_header(stream_id, end), payload]);
    }

    /// Adds a ping (payload at most 125 bytes; longer is cut).
    pub fn ping(&mut self, payload: &[u8]) {
        self.frame(OP_PING, &[&payload[..payload.len().min(125)]]);
    }

    /// Adds a pong echoing a ping's payload.
    pub fn pong(&mut self, payload: &[u8]) {
        self.frame(OP_PONG, &[&payload[..payload.len().min(125)]]);
    }

    /// Adds a close frame; the reason is cut to fit the 125-byte limit on a char boundary.
    pub fn close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.frame(OP_CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]]);
    }

    /// Releases the write buffer if it grew past [`IDLE_BUFFER`]; for when nothing more is
    /// queued (the next write allocates again).
    pub fn release_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER {
            self.buf = BytesMut::new();
        }
    }

    /// Writes everything buffered and flushes the socket.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.buf.clear();
            if self.buf.capacity() > KEEP_WRITE_BUFFER {
                self.buf = BytesMut::new();
            }
        }
        self.io.flush().await
    }

    /// Shuts the socket's write side down.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

/// Both halves of a connection, for the exchange before the multiplexer starts (hello,
/// welcome) and for simple peers.
#[derive(Debug)]
pub struct WebSocket<S> {
    /// The reading half.
    pub reader: Reader<tokio::io::ReadHalf<S>>,
    /// The writing half.
    pub writer: Writer<tokio::io::WriteHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite> WebSocket<S> {
    /// Frames `io` (an upgraded connection) for our `role`.
    pub fn new(io: S, role: Role, max_message: usize) -> Self {
        let (r, w) = tokio::io::split(io);
        Self {
            reader: Reader::new(r, role, max_message),
            writer: Writer::new(w, role),
        }
    }

    /// The next text, binary or close message; pings are answered and pongs skipped.
    pub async fn recv(&mut self) -> Option<Result<Message, WsError>> {
        loop {
            match self.reader.next().await? {
                Ok(Message::Ping(p)) => {
                    self.writer.pong(&p);
                    if let Err(e) = self.writer.flush().await {
                        return Some(Err(e.into()));
                    }
                }
                Ok(Message::Pong(_)) => {}
                other => return Some(other),
            }
        }
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.writer.text(text);
        Ok(self.writer.flush().await?)
    }

    /// Sends a close frame and shuts the write side down; errors are ignored (the peer may
    /// be gone already).
    pub async fn close(&mut self, code: u16, reason: &str) {
        self.writer.close(code, reason);
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_rfc() {
        // A server's unmasked 5-byte text frame (RFC 6455 §5.7).
        let h = parse_header(&[0x81, 0x05], Role::Client)
            .expect("valid")
            .expect("complete");
        assert!(h.fin && h.opcode == OP_TEXT && h.len == 5 && h.mask.is_none());
        // A client's masked frame.
        let h = parse_header(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d], Role::Server)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.header_len, 6);
        // 16- and 64-bit lengths.
        let h = parse_header(&[0x82, 126, 0x01, 0x00], Role::Client)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.len, 256);
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], Role::Client)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.len, 65536);
        // Incomplete headers ask for more.
        for partial in [
            &[0x82u8][..],
            &[0x82, 126, 1],
            &[0x82, 127, 0, 0],
            &[0x81, 0x85, 1],
        ] {
            let role = if partial.len() > 1 && partial[1] & 0x80 != 0 {
                Role::Server
            } else {
                Role::Client
            };
            assert!(parse_header(partial, role).expect("valid so far").is_none());
        }
    }

    #[test]
    fn rfc_violations_are_typed_errors() {
        let bad: [(&[u8], Role); 7] = [
            (&[0xC1, 0x00], Role::Client),             // RSV1 without an extension
            (&[0x83, 0x00], Role::Client),             // opcode 3
            (&[0x09, 0x00], Role::Client),             // fragmented ping
            (&[0x89, 126, 0, 126], Role::Client),      // 126-byte ping
            (&[0x81, 0x00], Role::Server),             // unmasked from a client
            (&[0x81, 0x80, 0, 0, 0, 0], Role::Client), // masked from a server
            (&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], Role::Client), // 2^63
        ];
        for (bytes, role) in bad {
            assert!(
                matches!(parse_header(bytes, role), Err(WsError::Protocol(_))),
                "{bytes:?}"
            );
        }
    }

    async fn pair(
        max: usize,
    ) -> (
        WebSocket<tokio::io::DuplexStream>,
        WebSocket<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            WebSocket::new(a, Role::Client, max),
            WebSocket::new(b, Role::Server, max),
        )
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_frame_sized_buffers() {
        let (mut client, mut server) = pair(1 << 20).await;
        client.writer.data(1, false, &vec![7u8; 64 * 1024]);
        client.writer.flush().await.expect("written");
        client.writer.release_idle();
        assert!(client.writer.buf.capacity() <= IDLE_BUFFER);
        match server.reader.next().await.expect("open").expect("valid") {
            Message::Binary(b) => assert_eq!(b.len(), 5 + 64 * 1024),
            other => panic!("{other:?}"),
        }
        assert!(server.reader.buf.capacity() <= IDLE_BUFFER);
    }
}
