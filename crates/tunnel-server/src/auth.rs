//! Secrets: API keys and tunnel tokens.
//!
//! Neither is ever stored in clear: we keep SHA-256 digests and compare digests in constant
//! time (`subtle`), checking every configured key so that timing says nothing about which one
//! matched or how long a common prefix was.

use http::HeaderMap;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest of a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    /// Hashes a secret.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The digest's bytes (to derive other values from; never shown as they are).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison against a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        Self::of(presented).0.ct_eq(&self.0).into()
    }

    /// The digest as 64 lowercase hex digits, to store (a shared registry keeps tokens so).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A digest stored with [`SecretHash::to_hex`]; `None` if `hex` is not one.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = decode_hex(hex)?;
        Some(Self(bytes.try_into().ok()?))
    }
}

/// See [`ApiKeys::fingerprint`]: the first 128 bits of the SHA-256 of the key's digest under a
/// label of its own, in hex.
fn fingerprint_of(key: &SecretHash) -> String {
    let mut h = Sha256::new();
    h.update(b"tunnel-server key owner\0");
    h.update(key.0);
    SecretHash(h.finalize().into()).to_hex()[..32].to_string()
}

/// Bytes from lowercase or uppercase hex; `None` for odd lengths or other characters.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Identifies which API key a request used (its position in the configuration). Tunnels belong
/// to the key that created them.
pub type KeyId = usize;

/// The configured API keys, each with an optional label (`label:key` in `TUNNEL_API_KEYS`)
/// that `TUNNEL_RESERVED_NAMES` refers to.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    hashes: Vec<SecretHash>,
    labels: Vec<Option<String>>,
    /// Digests of whole `label:key` entries, so that a key that merely contains a colon (and
    /// was configured before labels existed) still works as it is: (digest, key).
    whole: Vec<(SecretHash, KeyId)>,
    /// Each key's [`ApiKeys::fingerprint`], computed once (a shared registry maps every owner
    /// it reads back to a key).
    fingerprints: Vec<String>,
}

/// Splits a `TUNNEL_API_KEYS` entry into its label and its secret: `ci:SECRET` → (`ci`,
/// `SECRET`) when the part before the first colon is a lowercase label (a-z, 0-9, `-`, `_`,
/// at most 63); anything else is a plain key.
pub fn split_label(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once(':') {
        Some((label, secret))
            if !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                }) =>
        {
            (Some(label), secret)
        }
        _ => (None, entry),
    }
}

impl ApiKeys {
    /// Hashes the given `TUNNEL_API_KEYS` entries (plain keys or `label:key`).
    pub fn new(keys: &[String]) -> Self {
        let mut this = Self {
            hashes: Vec::with_capacity(keys.len()),
            labels: Vec::with_capacity(keys.len()),
            whole: Vec::new(),
            fingerprints: Vec::with_capacity(keys.len()),
        };
        for (id, entry) in keys.iter().enumerate() {
            let (label, secret) = split_label(entry);
            let hash = SecretHash::of(secret);
            this.fingerprints.push(fingerprint_of(&hash));
            this.hashes.push(hash);
            this.labels.push(label.map(str::to_string));
            if label.is_some() {
                this.whole.push((SecretHash::of(entry), id));
            }
        }
        this
    }

    /// A name for key `id` that is the same on every server configured with that key, whatever
    /// its position in their TUNNEL_API_KEYS: how a shared registry records which key owns a
    /// tunnel. The SHA-256 of the key under a label of its own, so it is neither the key nor
    /// the digest an API request is checked against.
    pub fn fingerprint(&self, id: KeyId) -> Option<String> {
        self.fingerprints.get(id).cloned()
    }

    /// The key whose [`ApiKeys::fingerprint`] is `fingerprint`, if configured here.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<KeyId> {
        self.fingerprints.iter().position(|f| f == fingerprint)
    }

    /// Returns which key `presented` is, comparing against all of them in constant time.
    pub fn check(&self, presented: &str) -> Option<KeyId> {
        let digest = SecretHash::of(presented);
        let mut found = None;
        let candidates = self.hashes.iter().enumerate().map(|(i, h)| (h, i));
        for (h, i) in candidates.chain(self.whole.iter().map(|(h, i)| (h, *i))) {
            let eq: bool = h.0.ct_eq(&digest.0).into();
            if eq && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    /// The key labelled `label`.
    pub fn by_label(&self, label: &str) -> Option<KeyId> {
        self.labels.iter().position(|l| l.as_deref() == Some(label))
    }

    /// The label of key `id`, if it has one.
    pub fn label(&self, id: KeyId) -> Option<&str> {
        self.labels.get(id)?.as_deref()
    }

    /// The digest of key `id`: what values derived from a key (a custom domain's
    /// verification value) are computed from, so that they survive restarts and are the same
    /// on every server holding the same keys.
    pub fn digest(&self, id: KeyId) -> Option<&SecretHash> {
        self.hashes.get(id)
    }
}

/// A new random secret: 43 alphanumeric characters (256 bits). Alphanumeric only, so that it
/// never starts with `-` (which a command line would take for a flag) and needs no quoting.
pub fn generate_secret() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect()
}

/// The credential in `Authorization: Bearer …`, or failing that `X-API-Key`.
pub fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim());
        }
        return None;
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = generate_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, generate_secret());
    }

    #[test]
    fn credentials_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().expect("valid"));
        assert_eq!(presented_credential(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "xyz".parse().expect("valid"));
        assert_eq!(presented_credential(&h), Some("xyz"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic abc".parse().expect("valid"));
        assert_eq!(presented_credential(&h), None);
    }

    #[test]
    fn keys_may_carry_a_label() {
        let keys = ApiKeys::new(&[
            "ci:0123456789abcdef".to_string(),
            "plainkey-0123456789".to_string(),
            "Odd:Key-with-colon-0123".to_string(),
        ]);
        assert_eq!(keys.check("0123456789abcdef"), Some(0));
        // The whole entry still works, as it did before labels.
        assert_eq!(keys.check("ci:0123456789abcdef"), Some(0));
        assert_eq!(keys.check("plainkey-0123456789"), Some(1));
        // Not a label (upper case): a plain key with a colon in it.
        assert_eq!(keys.check("Odd:Key-with-colon-0123"), Some(2));
        assert_eq!(keys.check("Key-with-colon-0123"), None);
        assert_eq!(keys.by_label("ci"), Some(0));
        assert_eq!(keys.label(1), None);
        assert_eq!(split_label("a:b:c"), (Some("a"), "b:c"));
    }

    #[test]
    fn digests_and_fingerprints_survive_storage() {
        let h = SecretHash::of("token-1");
        assert_eq!(SecretHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(SecretHash::from_hex("abc"), None);
        assert_eq!(SecretHash::from_hex(&"zz".repeat(32)), None);
        let here = ApiKeys::new(&["key-one-0123456789".into(), "key-two-0123456789".into()]);
        let there = ApiKeys::new(&["key-two-0123456789".into()]);
        let fp = here.fingerprint(1).expect("configured");
        assert_eq!(there.by_fingerprint(&fp), Some(0));
        assert_eq!(
            there.by_fingerprint(&here.fingerprint(0).expect("configured")),
            None
        );
        assert!(!fp.contains("key-two"));
    }

    #[test]
    fn hashes_match_only_their_secret() {
        let h = SecretHash::of("token-1");
        assert!(h.matches("token-1"));
        assert!(!h.matches("token-2"));
        assert!(!h.matches(""));
    }
}
