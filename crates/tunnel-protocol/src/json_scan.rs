//! Finding the bytes a JSON string must escape, eight bytes at a time.
//!
//! Every head written ([`crate::head_json`]) and every access line of the server escapes its
//! strings, and almost none has anything to escape: the work is the scan. Here the text is
//! read as 64-bit words and all eight bytes of one tested with a few arithmetic operations
//! (the "has a zero byte" trick, see below), with no `unsafe` and no table, where it was
//! looked at one byte at a time through three comparisons. Measured (callgrind,
//! `bench/instructions.sh`): the server's string writing of a small request's head went from
//! about 2,500 to 1,800 instructions (what is left is per string, not per byte: about twenty
//! strings a head), the server from 51,300 to 50,000 instructions per request.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Index of the first byte of `s` that serde_json escapes inside a string (`"`, `\`, a
/// control character below 0x20), or `s.len()` when there is none.
pub fn first_to_escape(s: &[u8]) -> usize {
    scan(s, false)
}

/// As [`first_to_escape`], DEL (0x7F) counted too: log lines escape it for terminals.
pub fn first_to_escape_or_del(s: &[u8]) -> usize {
    scan(s, true)
}

/// Whether `b` is one of the bytes [`scan`] looks for.
fn is_wanted(b: u8, del: bool) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || (del && b == 0x7F)
}

/// The high bit of each byte of `x` that equals `b`, exact up to and including the lowest
/// such byte (above it a borrow can mark more): `(v - 0x01…) & !v & 0x80…` marks the zero
/// bytes of `v`, and a byte borrows from the next one up only when it is zero itself.
fn equal_bytes(x: u64, b: u8) -> u64 {
    let v = x ^ (ONES * u64::from(b));
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The high bit of each byte of `x` below 0x20, exact up to the lowest such byte as in
/// [`equal_bytes`]: a byte minus 0x20 keeps no high bit unless it was below 0x20 (or at least
/// 0x80, which `!x` takes out), and only a byte below 0x20 borrows.
fn control_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES * 0x20) & !x & HIGHS
}

fn scan(s: &[u8], del: bool) -> usize {
    let mut at = 0;
    let mut rest = s;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let x = u64::from_le_bytes(*word);
        let mut hits = control_bytes(x) | equal_bytes(x, b'"') | equal_bytes(x, b'\\');
        if del {
            hits |= equal_bytes(x, 0x7F);
        }
        if hits != 0 {
            // Little-endian: the lowest marked bit is the first byte found, and it is exact
            // for each of the three marks (see `equal_bytes`), so for their union too.
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
        rest = tail;
    }
    at + rest
        .iter()
        .position(|&b| is_wanted(b, del))
        .unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: &[u8], del: bool) -> usize {
        s.iter().position(|&b| is_wanted(b, del)).unwrap_or(s.len())
    }

    #[test]
    fn every_byte_is_found_at_every_place_of_a_word() {
        // Each byte value at each position of texts up to three words long, behind clean
        // bytes that sit at the edges of the tricks (0x20, 0x21, 0x7E, 0x80, 0xA0, 0xFF).
        for fill in [b'a', 0x20, 0x21, 0x7E, 0x80, 0x9F, 0xA0, 0xFF] {
            for len in 0..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![fill; len];
                        s[at] = b;
                        for del in [false, true] {
                            assert_eq!(scan(&s, del), naive(&s, del), "{s:?} del={del}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_first_of_several_is_found() {
        // A later hit must not hide an earlier one, nor a borrow make one up before it.
        let cases: [&[u8]; 6] = [
            b"abc\"\\\x01\x00\x1f",
            b"\x00\x00\x00\x00\x00\x00\x00\x00",
            b"abcdefg\x00\x01\"",
            b"\x01abcdefgh\"",
            b"\xff\xa0\x80\x20\x7e\x7f\x22\x00",
            "é€ \u{7f}x\"".as_bytes(),
        ];
        for s in cases {
            for start in 0..s.len() {
                for del in [false, true] {
                    let s = &s[start..];
                    assert_eq!(scan(s, del), naive(s, del), "{s:?} del={del}");
                }
            }
        }
        assert_eq!(first_to_escape(b""), 0);
        assert_eq!(first_to_escape(b"text/html; charset=utf-8"), 24);
        assert_eq!(first_to_escape(b"a\x7fb"), 3);
        assert_eq!(first_to_escape_or_del(b"a\x7fb"), 1);
    }
}
