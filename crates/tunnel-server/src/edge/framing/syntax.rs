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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that equals `b`, exact up to and including the lowest
/// such byte (`(v - 0x01…) & !v & 0x80…` marks the zero bytes of `v`; a byte borrows from the
/// next one up only when it is zero itself, so above the lowest mark a mark may be wrong).
fn equal_bytes(x: u64, b: u8) -> u64 {
    let v = x ^ (ONES * u64::from(b));
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The bytes of `s` eight at a time, as little-endian words, and the tail shorter than a word.
fn words(s: &[u8]) -> (impl Iterator<Item = u64> + '_, &[u8]) {
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder();
    let words = chunks.map(|c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    (words, tail)
}

/// Where the first `b` of `s` is, read a word at a time: every byte of a head goes through the
/// guard's scans, which byte by byte were about 1,500 instructions of a small request, 950
/// with this and [`has_ctl_but_tab`] (callgrind, `bench/instructions.sh`).
pub(super) fn find(s: &[u8], b: u8) -> Option<usize> {
    let (words, tail) = words(s);
    let mut at = 0;
    for x in words {
        let hits = equal_bytes(x, b);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    tail.iter().position(|&t| t == b).map(|i| at + i)
}

/// Whether `s` holds a control character other than a tab ([`is_ctl`]). A word without any
/// control character (no byte below 0x20, no DEL) is passed over whole; a word with one, a
/// tab included, is looked at byte by byte, so the answer is exact.
pub(super) fn has_ctl_but_tab(s: &[u8]) -> bool {
    let by_byte = |w: &[u8]| w.iter().any(|&b| is_ctl(b) && b != b'\t');
    let (words, tail) = words(s);
    for (i, x) in words.enumerate() {
        // Bytes below 0x20 (a byte minus 0x20 keeps no high bit otherwise, `!x` takes out
        // those of 0x80 and above), and DEL: none marked means none there.
        let ctl = (x.wrapping_sub(ONES * 0x20) & !x & HIGHS) | equal_bytes(x, 0x7f);
        if ctl != 0 && by_byte(&s[i * 8..i * 8 + 8]) {
            return true;
        }
    }
    by_byte(tail)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_scans_agree_with_byte_scans() {
        // Every byte value at every place of texts up to three words long, behind fillers at
        // the edges of the tricks.
        for fill in [b'a', b'\t', 0x20, 0x21, 0x7e, 0x80, 0x9f, 0xa0, 0xff] {
            for len in 0..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![fill; len];
                        s[at] = b;
                        for wanted in [b'\n', b'\r', b':'] {
                            assert_eq!(
                                find(&s, wanted),
                                s.iter().position(|&x| x == wanted),
                                "{s:?} {wanted}"
                            );
                        }
                        assert_eq!(
                            has_ctl_but_tab(&s),
                            s.iter().any(|&x| is_ctl(x) && x != b'\t'),
                            "{s:?}"
                        );
                    }
                }
            }
        }
    }
}
