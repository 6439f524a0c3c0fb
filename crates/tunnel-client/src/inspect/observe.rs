//! Passive parsers over a copy of the bytes that pass: WebSocket frames (RFC 6455) and
//! server-sent events. They never see the bytes before the tunnel does, keep at most `cap`
//! bytes of a message, and give up quietly (the session is then only counted) on anything
//! they cannot follow: they are observers, the peers decide what is valid.

use bytes::{Bytes, BytesMut};

use super::store::MessageKind;

/// One complete message seen by an observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What it is.
    pub kind: MessageKind,
    /// Full payload size.
    pub size: u64,
    /// The payload's first `cap` bytes.
    pub data: Bytes,
    /// Whether `data` is cut.
    pub truncated: bool,
    /// RSV1 set on the first frame (permessage-deflate).
    pub compressed: bool,
    /// An SSE event name.
    pub event: Option<String>,
}

/// A message being collected, capped.
#[derive(Debug)]
struct Partial {
    kind: MessageKind,
    size: u64,
    data: BytesMut,
    compressed: bool,
}

impl Partial {
    fn new(kind: MessageKind, compressed: bool) -> Self {
        Self {
            kind,
            size: 0,
            data: BytesMut::new(),
            compressed,
        }
    }

    fn push(&mut self, bytes: &[u8], cap: usize) {
        self.size += bytes.len() as u64;
        let room = cap.saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn done(self) -> Seen {
        Seen {
            kind: self.kind,
            truncated: self.size > self.data.len() as u64,
            size: self.size,
            data: self.data.freeze(),
            compressed: self.compressed,
            event: None,
        }
    }
}

/// Where a frame parser is.
#[derive(Debug)]
enum FrameState {
    /// Collecting a frame header (at most 14 bytes).
    Header { buf: [u8; 14], have: usize },
    /// Reading `left` payload bytes, unmasking with `mask` from `offset`.
    Payload {
        left: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        control: bool,
        fin: bool,
    },
    /// Lost track (an unknown opcode): stop looking.
    Lost,
}

/// Follows one direction of a WebSocket connection.
#[derive(Debug)]
pub struct FrameObserver {
    cap: usize,
    state: FrameState,
    message: Option<Partial>,
    control: Option<Partial>,
}

fn header_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    let ext = match buf[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if buf[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

impl FrameObserver {
    /// An observer keeping at most `cap` bytes per message.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            state: FrameState::Header {
                buf: [0; 14],
                have: 0,
            },
            message: None,
            control: None,
        }
    }

    /// Feeds bytes in the order they passed; `seen` gets each complete message.
    pub fn feed(&mut self, mut bytes: &[u8], seen: &mut impl FnMut(Seen)) {
        while !bytes.is_empty() {
            match &mut self.state {
                FrameState::Lost => return,
                FrameState::Header { buf, have } => {
                    let need = header_len(&buf[..*have]).unwrap_or(2);
                    let take = (need - *have).min(bytes.len());
                    buf[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    match header_len(&buf[..*have]) {
                        Some(n) if n == *have => {
                            let header = *buf;
                            self.start_frame(&header[..n], seen);
                        }
                        _ => {}
                    }
                }
                FrameState::Payload {
                    left,
                    mask,
                    offset,
                    control,
                    ..
                } => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let mut chunk = bytes[..take].to_vec();
                    if let Some(key) = mask {
                        for (i, b) in chunk.iter_mut().enumerate() {
                            *b ^= key[(*offset + i) % 4];
                        }
                    }
                    *offset += take;
                    *left -= take as u64;
                    let target = if *control {
                        &mut self.control
                    } else {
                        &mut self.message
                    };
                    if let Some(p) = target.as_mut() {
                        p.push(&chunk, self.cap);
                    }
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.end_frame(seen);
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, header: &[u8], seen: &mut impl FnMut(Seen)) {
        let fin = header[0] & 0x80 != 0;
        let rsv1 = header[0] & 0x40 != 0;
        let opcode = header[0] & 0x0f;
        let (len, rest) = match header[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = (header[1] & 0x80 != 0).then(|| {
            let mut k = [0u8; 4];
            k.copy_from_slice(&header[rest..rest + 4]);
            k
        });
        let control = opcode >= 8;
        let kind = match opcode {
            0 => None,
            1 => Some(MessageKind::Text),
            2 => Some(MessageKind::Binary),
            8 => Some(MessageKind::Close),
            9 => Some(MessageKind::Ping),
            10 => Some(MessageKind::Pong),
            _ => {
                self.state = FrameState::Lost;
                return;
            }
        };
        match (control, kind) {
            (true, Some(k)) => self.control = Some(Partial::new(k, false)),
            (false, Some(k)) => self.message = Some(Partial::new(k, rsv1)),
            (false, None) if self.message.is_some() => {}
            _ => {
                self.state = FrameState::Lost;
                return;
            }
        }
        self.state = FrameState::Payload {
            left: len,
            mask,
            offset: 0,
            control,
            fin,
        };
        if len == 0 {
            self.end_frame(seen);
        }
    }

    fn end_frame(&mut self, seen: &mut impl FnMut(Seen)) {
        let FrameState::Payload { control, fin, .. } = self.state else {
            return;
        };
        self.state = FrameState::Header {
            buf: [0; 14],
            have: 0,
        };
        let done = if control {
            self.control.take()
        } else if fin {
            self.message.take()
        } else {
            None
        };
        if let Some(p) = done {
            seen(p.done());
        }
    }
}

/// Follows a `text/event-stream` body: one [`Seen`] per dispatched event, its data joined
/// with newlines as the spec says. A line longer than `cap` is cut.
#[derive(Debug)]
pub struct SseObserver {
    cap: usize,
    line: Vec<u8>,
    line_size: usize,
    data: Option<Partial>,
    event: Option<String>,
    after_cr: bool,
}

impl SseObserver {
    /// An observer keeping at most `cap` bytes per event.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            line: Vec::new(),
            line_size: 0,
            data: None,
            event: None,
            after_cr: false,
        }
    }

    /// Feeds body bytes; `seen` gets each complete event.
    pub fn feed(&mut self, bytes: &[u8], seen: &mut impl FnMut(Seen)) {
        for &b in bytes {
            if self.after_cr && b == b'\n' {
                self.after_cr = false;
                continue; // CRLF: the CR ended the line
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                self.end_line(seen);
            } else {
                self.line_size += 1;
                if self.line.len() < self.cap {
                    self.line.push(b);
                }
            }
        }
    }

    fn end_line(&mut self, seen: &mut impl FnMut(Seen)) {
        let line = std::mem::take(&mut self.line);
        let size = std::mem::take(&mut self.line_size);
        if line.is_empty() {
            if let Some(p) = self.data.take() {
                let mut s = p.done();
                s.event = self.event.take();
                seen(s);
            }
            self.event = None;
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(0) => return, // a comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => {
                let cap = self.cap;
                let p = self
                    .data
                    .get_or_insert_with(|| Partial::new(MessageKind::Event, false));
                if p.size > 0 {
                    p.push(b"\n", cap);
                }
                p.push(value, cap);
                // Bytes of an over-long line that were not kept still count.
                p.size += (size - line.len()) as u64;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    fn observe_in_pieces(bytes: &[u8], piece: usize, cap: usize) -> Vec<Seen> {
        let mut o = FrameObserver::new(cap);
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            o.feed(chunk, &mut |s| out.push(s));
        }
        out
    }

    #[test]
    fn frames_in_any_pieces_masked_or_not_fragmented_with_pings_between() {
        let key = Some([1, 2, 3, 4]);
        let mut wire = frame(1, true, b"hello", key);
        wire.extend(frame(2, false, &[0xff; 200], None));
        wire.extend(frame(9, true, b"p", key));
        wire.extend(frame(0, true, &[0xee; 70000], None));
        wire.extend(frame(8, true, &[3, 232], None));
        for piece in [1, 3, 7, 1000, wire.len()] {
            let seen = observe_in_pieces(&wire, piece, 1024);
            assert_eq!(seen.len(), 4, "piece {piece}");
            assert_eq!(seen[0].kind, MessageKind::Text);
            assert_eq!(&seen[0].data[..], b"hello");
            assert_eq!(seen[1].kind, MessageKind::Ping);
            assert_eq!(seen[2].kind, MessageKind::Binary);
            assert_eq!(seen[2].size, 70200);
            assert_eq!(seen[2].data.len(), 1024);
            assert!(seen[2].truncated);
            assert_eq!(seen[3].kind, MessageKind::Close);
        }
    }

    #[test]
    fn an_unknown_opcode_stops_the_observer() {
        let mut wire = frame(3, true, b"?", None);
        wire.extend(frame(1, true, b"after", None));
        assert!(observe_in_pieces(&wire, 4, 64).is_empty());
    }

    #[test]
    fn sse_events_with_names_multi_line_data_and_crlf() {
        let body =
            b": comment\r\nevent: tick\r\ndata: a\r\ndata: b\r\n\r\ndata: {\"n\":2}\n\nid: 3\n\n";
        for piece in [1, 5, body.len()] {
            let mut o = SseObserver::new(1024);
            let mut out = Vec::new();
            for c in body.chunks(piece) {
                o.feed(c, &mut |s| out.push(s));
            }
            assert_eq!(out.len(), 2, "piece {piece}");
            assert_eq!(out[0].event.as_deref(), Some("tick"));
            assert_eq!(&out[0].data[..], b"a\nb");
            assert_eq!(&out[1].data[..], b"{\"n\":2}");
            assert_eq!(out[1].event, None);
        }
    }
}
