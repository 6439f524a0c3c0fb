//! The pieces of HTTP/1.1 syntax the guard checks against, and why it refuses.

use crate::error::TunnelError;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The body's length could be read more than one way (smuggling material).
    Ambiguous(&'static str),
    /// The head or a chunk line breaks HTTP/1.1 syntax.
    Malformed(&'static str),
    /// The head is longer, or has more fields, than allowed.
    HeadTooLarge,
}

impl Refusal {
    /// The error the public client gets.
    pub fn to_error(self) -> TunnelError {
        match self {
            Refusal::Ambiguous(why) => TunnelError::BadFraming(why),
            Refusal::Malformed(why) => TunnelError::MalformedRequest(why),
            Refusal::HeadTooLarge => TunnelError::HeadTooLarge,
        }
    }
}

/// Limits the guard applies to heads, the same ones hyper is configured with.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Most bytes in a head (request line, fields and the empty line).
    pub max_bytes: usize,
    /// Most header fields in a head (and trailer fields in a chunked body).
    pub max_fields: usize,
}

/// A `Content-Length` value: 1 to 19 ASCII digits (so it always fits in a `u64`), the rule
/// [`crate::limits::check_framing`] applies to hyper's view too.
pub fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub(super) fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

pub(super) fn trim_spaces(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ').map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}
