//! A strict reader of request heads (RFC 9112 §2–§6), line by line as bytes arrive.

use super::body::{BodyState, Chunk};
use super::syntax::{
    content_length, find, has_ctl_but_tab, is_tchar, trim_ows, trim_spaces, HeadLimits, Refusal,
};

/// The strict reading of one head, line by line as bytes arrive.
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    /// Bytes of the inbox already looked at (complete lines, plus a CR at the very end).
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    request_line: bool,
    fields: usize,
    connect: bool,
    http10: bool,
    upgrade: bool,
    content_length: Option<u64>,
    chunked: bool,
}

/// What a head scan found so far.
pub(super) enum Scan {
    /// Needs more bytes.
    Partial,
    /// A complete, acceptable head of `len` bytes.
    Complete {
        len: usize,
    },
    Refuse(Refusal),
}

impl HeadScan {
    /// Scans what arrived since the last call.
    pub(super) fn scan(&mut self, buf: &[u8], limits: HeadLimits) -> Scan {
        while let Some(nl) = find(&buf[self.scanned..], b'\n') {
            let end = self.scanned + nl;
            let line = &buf[self.line_start..end];
            self.scanned = end + 1;
            self.line_start = self.scanned;
            let Some(content) = line.strip_suffix(b"\r") else {
                return Scan::Refuse(Refusal::Malformed("bare LF line end"));
            };
            if self.scanned > limits.max_bytes {
                return Scan::Refuse(Refusal::HeadTooLarge);
            }
            if let Err(why) = self.line(content, limits) {
                return Scan::Refuse(why);
            }
            if content.is_empty() && self.request_line {
                return Scan::Complete { len: self.scanned };
            }
        }
        // An unfinished line: a CR may only be its last byte so far (LF may follow).
        let rest = &buf[self.line_start..];
        if let Some(cr) = rest.iter().position(|&b| b == b'\r') {
            if cr + 1 < rest.len() {
                return Scan::Refuse(Refusal::Malformed("bare CR in head"));
            }
        }
        self.scanned = buf.len();
        if buf.len() > limits.max_bytes {
            return Scan::Refuse(Refusal::HeadTooLarge);
        }
        Scan::Partial
    }

    /// Checks one line (without its CRLF).
    fn line(&mut self, line: &[u8], limits: HeadLimits) -> Result<(), Refusal> {
        if line.contains(&b'\r') {
            return Err(Refusal::Malformed("bare CR in head"));
        }
        if has_ctl_but_tab(line) {
            return Err(Refusal::Malformed("control character in head"));
        }
        if !self.request_line {
            // RFC 9112 §2.2: empty lines before the request line are ignored (hyper does too).
            if !line.is_empty() {
                self.request_line(line)?;
                self.request_line = true;
            }
            return Ok(());
        }
        if line.is_empty() {
            return Ok(());
        }
        self.fields += 1;
        if self.fields > limits.max_fields {
            return Err(Refusal::HeadTooLarge);
        }
        self.field(line)
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed(
                "request line is not METHOD SP TARGET SP VERSION",
            ));
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(Refusal::Malformed("invalid method"));
        }
        if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
            return Err(Refusal::Malformed("invalid request target"));
        }
        self.http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(Refusal::Malformed("unsupported HTTP version")),
        };
        self.connect = method == b"CONNECT";
        Ok(())
    }

    fn field(&mut self, line: &[u8]) -> Result<(), Refusal> {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Refusal::Malformed(
                "obs-fold (a header line starting with whitespace)",
            ));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Refusal::Malformed("header line without a colon"));
        };
        let (name, raw) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Refusal::Malformed("invalid header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err(Refusal::Ambiguous("several Content-Length headers"));
            }
            let len = content_length(trim_ows(raw))
                .ok_or(Refusal::Ambiguous("malformed Content-Length"))?;
            self.content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.chunked {
                return Err(Refusal::Ambiguous("several Transfer-Encoding headers"));
            }
            // Spaces around the value are fine; a tab is a known smuggling variant (front
            // proxies disagree on whether it is whitespace), and any other coding, or a list,
            // is refused.
            if !trim_spaces(raw).eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::Ambiguous("Transfer-Encoding other than chunked"));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
        if self.chunked && self.content_length.is_some() {
            return Err(Refusal::Ambiguous(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if self.chunked && self.http10 {
            return Err(Refusal::Ambiguous("Transfer-Encoding on HTTP/1.0"));
        }
        Ok(())
    }

    /// Whether the answer may switch protocols (`Upgrade`, or `CONNECT`): then what follows
    /// the body depends on that answer.
    pub(super) fn may_switch(&self) -> bool {
        self.upgrade || self.connect
    }

    /// The body framing of the complete head.
    pub(super) fn body(&self) -> Option<BodyState> {
        if self.chunked {
            return Some(BodyState::Chunked(Chunk::Size {
                size: 0,
                seen: false,
                significant: 0,
            }));
        }
        match self.content_length {
            Some(n) if n > 0 => Some(BodyState::Fixed(n)),
            _ => None,
        }
    }
}
