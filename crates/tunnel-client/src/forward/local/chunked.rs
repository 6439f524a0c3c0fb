//! Decoding of the chunked transfer coding (RFC 9112 §7.1) from a read buffer, in steps that
//! need no I/O: whatever is buffered is decoded, and the caller reads more when told to.
//! Chunk extensions are skipped and trailers read and dropped (the tunnel forwards no
//! trailers); each line has a size limit, so that a peer cannot make the buffer grow.

use bytes::{Bytes, BytesMut};

/// Longest chunk size line (with its extensions), and longest trailer line.
const MAX_LINE: usize = 4096;

/// Most trailer bytes read after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// A chunk size that is not hexadecimal, or too large.
    #[error("invalid chunk size line")]
    Size,
    /// A size line (with its extensions) or trailer line past its limit.
    #[error("chunk size line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// The chunk's data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    /// More trailer bytes than [`MAX_TRAILERS`].
    #[error("trailers larger than {} KiB", MAX_TRAILERS / 1024)]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a size line.
    Size,
    /// Inside a chunk, this many data bytes still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; this many read so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// Where a chunked body's decoding is.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

/// What decoding the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    More,
    /// The body ended (last chunk and trailers read).
    End,
}

impl Decoder {
    pub(super) fn new() -> Self {
        Self { state: State::Size }
    }

    /// Decodes from `buf` (consuming what it uses) until body bytes, the end, or the need for
    /// more input. At most `max` data bytes are returned at once; with `max` 0 only the
    /// framing is decoded, to see whether the body ended right after the data taken.
    pub(super) fn step(&mut self, buf: &mut BytesMut, max: usize) -> Result<Step, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Data(left) => {
                    if buf.is_empty() || max == 0 {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len())
                        .min(max);
                    let rest = left - n as u64;
                    self.state = if rest == 0 {
                        State::DataEnd
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    let Some(line) = take_line(buf, MAX_LINE)? else {
                        return Ok(Step::More);
                    };
                    if !line.is_empty() {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = State::Size;
                }
                State::Size => {
                    let Some(line) = take_line(buf, MAX_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = parse_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Trailers(read) => {
                    let limit = MAX_TRAILERS.saturating_sub(read).min(MAX_LINE);
                    let line = match take_line(buf, limit) {
                        Ok(Some(line)) => line,
                        Ok(None) => return Ok(Step::More),
                        Err(_) => return Err(ChunkError::TrailersTooLarge),
                    };
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(read + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// Takes one line (without its CRLF, or a bare LF, which RFC 9112 §2.2 lets a recipient
/// accept) from the front of `buf`; `None` while it is incomplete and shorter than `limit`.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, ChunkError> {
    let Some(lf) = buf.iter().take(limit + 2).position(|&b| b == b'\n') else {
        return if buf.len() > limit + 1 {
            Err(ChunkError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf);
    if line.last() == Some(&b'\r') {
        line.truncate(lf - 1);
    }
    if line.len() > limit {
        return Err(ChunkError::LineTooLong);
    }
    Ok(Some(line))
}

/// The size of a chunk size line: hex digits, then optional whitespace and `;` extensions.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(ChunkError::Size);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(ChunkError::Size);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // A hex digit (counted above), at most 15 of them: no overflow.
        let d = (b as char).to_digit(16).ok_or(ChunkError::Size)?;
        size = (size << 4) | u64::from(d);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; the body, or the first error.
    fn decode(input: &[u8], piece: usize) -> Result<Vec<u8>, ChunkError> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.step(&mut buf, 1 << 20)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::End => return Ok(out),
                Step::More => {
                    assert!(fed < input.len(), "input ended before the body did");
                    let n = piece.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunks_decode_however_the_input_is_split() {
        let input = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, input.len()] {
            assert_eq!(
                decode(input, piece).as_deref(),
                Ok(&b"hello world"[..]),
                "{piece}"
            );
        }
        assert_eq!(
            decode(b"A \r\n0123456789\n0\n\n", 1).as_deref(),
            Ok(&b"0123456789"[..])
        );
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert_eq!(decode(b"zz\r\n", 4), Err(ChunkError::Size));
        assert_eq!(decode(b"\r\n", 4), Err(ChunkError::Size));
        assert_eq!(decode(b"5x\r\nhello\r\n", 20), Err(ChunkError::Size));
        assert_eq!(decode(b"1000000000000000\r\n", 20), Err(ChunkError::Size));
        assert_eq!(
            decode(b"5\r\nhelloXX0\r\n\r\n", 20),
            Err(ChunkError::DataEnd)
        );
        let long = [b"5;".as_slice(), &[b'x'; MAX_LINE + 10]].concat();
        assert_eq!(decode(&long, 512), Err(ChunkError::LineTooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"x-t: 0123456789\r\n");
        }
        assert_eq!(decode(&trailers, 100), Err(ChunkError::TrailersTooLarge));
    }

    #[test]
    fn data_is_handed_out_in_bounded_pieces() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"10\r\n0123456789abcdef\r\n0\r\n\r\n"[..]);
        assert_eq!(
            d.step(&mut buf, 10),
            Ok(Step::Data(Bytes::from_static(b"0123456789")))
        );
        assert_eq!(
            d.step(&mut buf, 10),
            Ok(Step::Data(Bytes::from_static(b"abcdef")))
        );
        assert_eq!(d.step(&mut buf, 10), Ok(Step::End));
        assert_eq!(d.state, State::Done);
        assert!(buf.is_empty());
    }
}
