//! Where a body ends: a fixed length, or a strict reader of chunked bodies (RFC 9112 §7.1)
//! fed the bytes as they pass.

use super::syntax::{is_ctl, is_tchar, Refusal};

/// Bytes of chunk extensions allowed per body (hyper stops at 16 KiB; we stop first).
const MAX_CHUNK_EXTENSIONS: usize = 8 * 1024;
/// Bytes of trailer section allowed per body (hyper's limit is 16 KiB).
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// How the current body is framed, and how far it got.
#[derive(Debug, Clone, Copy)]
pub(super) enum BodyState {
    /// This many bytes left.
    Fixed(u64),
    Chunked(Chunk),
}

/// Where the strict chunked-body parser is.
#[derive(Debug, Clone, Copy)]
pub(super) enum Chunk {
    /// Reading the hex size; `seen` once any digit was read, `significant` digits after the
    /// leading zeros.
    Size {
        size: u64,
        seen: bool,
        significant: u8,
    },
    /// Spaces or tabs after the size, before `;` or CR.
    SizeSpace {
        size: u64,
    },
    /// A chunk extension, up to CR.
    Ext {
        size: u64,
    },
    /// Expecting LF after the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// Inside the trailer section (after the last chunk), at `at` in a line.
    Trailer(TrailerAt),
    /// Expecting LF after a trailer line's CR; `empty` when the line was empty (the end).
    TrailerLf {
        empty: bool,
    },
}

/// Where in a trailer line the parser is.
#[derive(Debug, Clone, Copy)]
pub(super) enum TrailerAt {
    /// At the start of a line: CR ends the section, a `tchar` starts a field name.
    Start,
    Name,
    Value,
}

/// Follows `bytes` of a chunked body from `c`: how many belong to the body, and the state
/// after them (`None` when the body ended there).
pub(super) fn chunked(
    mut c: Chunk,
    bytes: &[u8],
    extra: &mut usize,
    max_fields: usize,
    fields: &mut usize,
) -> Result<(usize, Option<Chunk>), Refusal> {
    let mut used = 0;
    while used < bytes.len() {
        if let Chunk::Data(n) = c {
            let take = n.min((bytes.len() - used) as u64);
            used += take as usize;
            c = if take == n {
                Chunk::DataCr
            } else {
                Chunk::Data(n - take)
            };
            continue;
        }
        let b = bytes[used];
        used += 1;
        c = match chunk_byte(c, b)? {
            Some(next) => next,
            None => return Ok((used, None)),
        };
        match c {
            Chunk::Ext { .. } | Chunk::Trailer(TrailerAt::Name | TrailerAt::Value) => {
                *extra += 1;
                if *extra > MAX_CHUNK_EXTENSIONS + MAX_TRAILER_BYTES {
                    return Err(Refusal::Ambiguous(
                        "chunk extensions or trailers over the limit",
                    ));
                }
            }
            Chunk::TrailerLf { empty: false } => {
                *fields += 1;
                if *fields > max_fields {
                    return Err(Refusal::Ambiguous("too many trailer fields"));
                }
            }
            _ => {}
        }
    }
    Ok((used, Some(c)))
}

/// One byte of a chunk-size line, the CRLF after data, or the trailer section.
fn chunk_byte(c: Chunk, b: u8) -> Result<Option<Chunk>, Refusal> {
    const BAD_SIZE: Refusal = Refusal::Ambiguous("malformed chunk size line");
    let next = match c {
        Chunk::Size {
            size,
            seen,
            significant,
        } => match (b as char).to_digit(16) {
            Some(0) if size == 0 => Chunk::Size {
                size,
                seen: true,
                significant,
            },
            Some(d) if significant < 16 => Chunk::Size {
                size: (size << 4) | u64::from(d),
                seen: true,
                significant: significant + 1,
            },
            Some(_) => return Err(Refusal::Ambiguous("chunk size does not fit in 64 bits")),
            None if !seen => return Err(BAD_SIZE),
            None => match b {
                b'\r' => Chunk::SizeLf { size },
                b';' => Chunk::Ext { size },
                b' ' | b'\t' => Chunk::SizeSpace { size },
                _ => return Err(BAD_SIZE),
            },
        },
        Chunk::SizeSpace { size } => match b {
            b' ' | b'\t' => Chunk::SizeSpace { size },
            b';' => Chunk::Ext { size },
            b'\r' => Chunk::SizeLf { size },
            _ => return Err(BAD_SIZE),
        },
        Chunk::Ext { size } => match b {
            b'\r' => Chunk::SizeLf { size },
            b'\t' => Chunk::Ext { size },
            _ if is_ctl(b) => return Err(BAD_SIZE),
            _ => Chunk::Ext { size },
        },
        Chunk::SizeLf { size: 0 } if b == b'\n' => Chunk::Trailer(TrailerAt::Start),
        Chunk::SizeLf { size } if b == b'\n' => Chunk::Data(size),
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::Size {
            size: 0,
            seen: false,
            significant: 0,
        },
        Chunk::SizeLf { .. } | Chunk::DataCr | Chunk::DataLf => {
            return Err(Refusal::Ambiguous("chunk data not followed by CRLF"))
        }
        Chunk::Trailer(at) => {
            const BAD_TRAILER: Refusal = Refusal::Ambiguous("malformed trailer field");
            match (at, b) {
                (TrailerAt::Start, b'\r') => Chunk::TrailerLf { empty: true },
                (TrailerAt::Start | TrailerAt::Name, _) if is_tchar(b) => {
                    Chunk::Trailer(TrailerAt::Name)
                }
                (TrailerAt::Name, b':') => Chunk::Trailer(TrailerAt::Value),
                (TrailerAt::Value, b'\r') => Chunk::TrailerLf { empty: false },
                (TrailerAt::Value, b'\t') => Chunk::Trailer(TrailerAt::Value),
                (TrailerAt::Value, _) if !is_ctl(b) => Chunk::Trailer(TrailerAt::Value),
                _ => return Err(BAD_TRAILER),
            }
        }
        Chunk::TrailerLf { empty: true } if b == b'\n' => return Ok(None),
        Chunk::TrailerLf { empty: false } if b == b'\n' => Chunk::Trailer(TrailerAt::Start),
        Chunk::TrailerLf { .. } => return Err(Refusal::Ambiguous("bare CR in trailer")),
        Chunk::Data(_) => c, // handled by the caller in bulk
    };
    Ok(Some(next))
}
