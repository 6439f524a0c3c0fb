//! The request id: one value per public request, in the `X-Request-Id` header the local
//! service receives and on every server log line of that request (the `request_id` field of
//! the `request` span). `tunnel-client` receives the same header and logs it too, so that the
//! server's, the client's and the local service's logs can be joined on it.
//!
//! A public client (or a proxy in front, like Traefik or Cloudflare) may bring its own id: it is
//! kept when it is plausible as an id, so that a trace can span several systems. Anything else
//! (too long, spaces, control or non-ASCII characters, which could forge log lines or blow up
//! log storage) is replaced by a generated one.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header carrying the id.
pub const HEADER: &str = "x-request-id";
/// [`HEADER`] as a header name (a `&str` is parsed again on every map operation).
const HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// Longest id kept as is (UUIDs are 36 characters, W3C trace ids 32, Cloudflare's `cf-ray` 20).
pub const MAX_LEN: usize = 128;

/// Whether `value` is kept as a request id: 1 to [`MAX_LEN`] characters among letters, digits
/// and `-_.:+/=@` (enough for UUIDs, base64, and `service:id` forms).
pub fn is_valid(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// A new id: 32 lowercase hex digits (a random UUID without dashes).
pub fn generate() -> String {
    // A v4 UUID from the thread-local RNG: `Uuid::new_v4()` asks the kernel for 16 random
    // bytes on every call (one getrandom syscall per proxied request).
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    id.simple().to_string()
}

/// Makes `headers` carry exactly one valid `X-Request-Id` and returns it: the first one
/// present if valid, a generated one otherwise.
pub fn ensure(headers: &mut HeaderMap) -> String {
    let presented = headers
        .get(&HEADER_NAME)
        .filter(|v| is_valid(v.as_bytes()))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let id = presented.unwrap_or_else(generate);
    match HeaderValue::from_str(&id) {
        Ok(v) => {
            headers.insert(HEADER_NAME, v);
        }
        // Unreachable: both sources are visible ASCII. Never forward an unchecked value.
        Err(_) => {
            headers.remove(&HEADER_NAME);
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept_and_others_replaced() {
        for ok in [
            "abc",
            "3f2a9c1b-8e4d-4c6a-9f00-1234567890ab",
            "req:42",
            "YWJj+/==",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_static(ok));
            assert_eq!(ensure(&mut h), ok);
            assert_eq!(h[HEADER], ok);
        }
        let too_long = "a".repeat(MAX_LEN + 1);
        for bad in ["", "a b", "line\tbreak", "quote\"", too_long.as_str()] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(bad).expect("a header value"));
            let id = ensure(&mut h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
            assert_eq!(h.get_all(HEADER).iter().count(), 1);
            assert_eq!(h[HEADER], id.as_str());
        }
        let mut h = HeaderMap::new();
        let id = ensure(&mut h);
        assert!(is_valid(id.as_bytes()));
        assert_ne!(ensure(&mut HeaderMap::new()), id, "fresh ids differ");
    }
}
