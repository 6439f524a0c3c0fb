//! A tunnel head's headers as they go to the local service: [`Outgoing`], the head's pairs
//! with the Host and Origin rewrites applied, so that no header map is built for a request.

use http::header::{HOST, ORIGIN};
use tunnel_protocol::head_headers::Iter as HeadIter;

/// Headers held on the stack; a head with more spills into a `Vec`.
const INLINE: usize = 24;

/// One header: its name (lowercase) and value, borrowed from the tunnel head.
type Pair<'h> = (&'h str, &'h [u8]);

/// A tunnel head's headers as they go to the local service, in their order: the first `Host`
/// replaced and any other dropped (as `HeaderMap::insert` did), a same-origin `Origin` the
/// same way, and a `Host` added at the end when the head had none.
///
/// Collected once from the head (on the stack up to [`INLINE`] headers) and then walked as a
/// slice: the inspector's copy and the head written to the local service walk them three
/// times more, and a walk of the packed head with the rewrites applied cost about 30
/// instructions a header, a slice's about 3 (callgrind).
pub(super) struct Outgoing<'h> {
    inline: [Pair<'h>; INLINE],
    len: usize,
    spill: Vec<Pair<'h>>,
}

impl<'h> Outgoing<'h> {
    /// The rewrites of `pairs` (a valid head's): every request's `host` if there is one
    /// (the first `Host` replaced, or one added when the public request had none), else
    /// `local_host` added when it had none (HTTP/1.1 needs a Host); with `rewrite_origin`
    /// (the Host rewritten to the local address), a same-origin `Origin` becomes it (see
    /// [`same_origin`]).
    pub(super) fn new(
        pairs: HeadIter<'h>,
        host: Option<&'h [u8]>,
        local_host: Option<&'h [u8]>,
        rewrite_origin: Option<&'h [u8]>,
    ) -> Self {
        let mut out = Self {
            inline: [("", &[]); INLINE],
            len: 0,
            spill: Vec::new(),
        };
        let mut first_host = None;
        let mut first_origin = None;
        let mut more_origins = false;
        let mut proto = None;
        for (name, value) in pairs {
            if name == HOST.as_str() {
                if first_host.is_some() {
                    if host.is_some() {
                        continue;
                    }
                } else {
                    first_host = Some((out.count(), value));
                }
            } else if name == ORIGIN.as_str() {
                if first_origin.is_some() {
                    more_origins = true;
                } else {
                    first_origin = Some((out.count(), value));
                }
            } else if name == "x-forwarded-proto" && proto.is_none() {
                proto = Some(value);
            }
            out.push((name, value));
        }
        if let (Some(local), Some((at, origin)), Some((_, public_host))) =
            (rewrite_origin, first_origin, first_host)
        {
            if same_origin(origin, proto, public_host) {
                out.set(at, local);
                if more_origins {
                    out.drop_origins_after(at);
                }
            }
        }
        match (host, first_host) {
            (Some(host), Some((at, _))) => out.set(at, host),
            (Some(host), None) => out.push((HOST.as_str(), host)),
            (None, None) => {
                if let Some(local) = local_host {
                    out.push((HOST.as_str(), local));
                }
            }
            (None, Some(_)) => {}
        }
        out
    }

    fn count(&self) -> usize {
        if self.spill.is_empty() {
            self.len
        } else {
            self.spill.len()
        }
    }

    fn push(&mut self, pair: Pair<'h>) {
        if self.spill.is_empty() && self.len < INLINE {
            self.inline[self.len] = pair;
            self.len += 1;
            return;
        }
        if self.spill.is_empty() {
            self.spill.extend_from_slice(&self.inline[..self.len]);
        }
        self.spill.push(pair);
    }

    fn as_mut_slice(&mut self) -> &mut [Pair<'h>] {
        if self.spill.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        }
    }

    /// Gives the entry at `at` the value `value`.
    fn set(&mut self, at: usize, value: &'h [u8]) {
        if let Some(pair) = self.as_mut_slice().get_mut(at) {
            pair.1 = value;
        }
    }

    /// Drops every `Origin` after the one at `at` (rare: a request with several).
    fn drop_origins_after(&mut self, at: usize) {
        let kept: Vec<Pair<'h>> = self
            .as_slice()
            .iter()
            .enumerate()
            .filter(|&(i, (name, _))| i <= at || *name != ORIGIN.as_str())
            .map(|(_, pair)| *pair)
            .collect();
        self.len = 0;
        self.spill = Vec::new();
        for pair in kept {
            self.push(pair);
        }
    }

    fn as_slice(&self) -> &[Pair<'h>] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }

    /// The headers in their order.
    pub(super) fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, Pair<'h>>> {
        self.as_slice().iter().copied()
    }
}

/// Whether a request's `Origin` is the tunnel's public origin, `X-Forwarded-Proto` (`http`
/// without one) `://` its public `Host`, in any case: then, with the Host rewritten to the
/// local address, the Origin is rewritten to match, `http://<local address>`, and apps that
/// compare Origin with Host (Jupyter's WebSockets and API, Django's CSRF check) see a
/// same-origin request, as they would without the tunnel. An Origin of any other site is
/// left alone, so cross-origin requests stay cross-origin. Values that are not visible ASCII
/// never match (as `HeaderValue::to_str` refused them), and a proto that is not reads as
/// `http`.
fn same_origin(origin: &[u8], proto: Option<&[u8]>, host: &[u8]) -> bool {
    let visible = |v: &[u8]| v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    if !visible(origin) || !visible(host) {
        return false;
    }
    let proto = proto.filter(|p| visible(p)).unwrap_or(b"http");
    let Some(rest) = origin
        .get(..proto.len())
        .filter(|p| p.eq_ignore_ascii_case(proto))
        .and_then(|_| origin.get(proto.len()..))
    else {
        return false;
    };
    rest.strip_prefix(b"://")
        .is_some_and(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_matches_the_public_proto_and_host_only() {
        assert!(same_origin(b"http://a.example", None, b"a.example"));
        assert!(same_origin(
            b"HTTPS://A.example",
            Some(b"https"),
            b"a.example"
        ));
        assert!(!same_origin(b"http://a.example", None, b"b.example"));
        assert!(!same_origin(b"https://a.example", None, b"a.example"));
        assert!(!same_origin(b"http:/a.example", None, b"a.example"));
        assert!(!same_origin(
            b"http://a.example\x80",
            None,
            b"a.example\x80"
        ));
        // A proto that is not visible ASCII reads as `http`.
        assert!(same_origin(
            b"http://a.example",
            Some(b"\x80"),
            b"a.example"
        ));
    }
}
