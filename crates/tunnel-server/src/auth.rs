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

    /// Constant-time comparison against a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        Self::of(presented).0.ct_eq(&self.0).into()
    }
}

/// Identifies which API key a request used (its position in the configuration). Tunnels belong
/// to the key that created them.
pub type KeyId = usize;

/// The configured API keys.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    hashes: Vec<SecretHash>,
}

impl ApiKeys {
    /// Hashes the given keys.
    pub fn new(keys: &[String]) -> Self {
        Self {
            hashes: keys.iter().map(|k| SecretHash::of(k)).collect(),
        }
    }

    /// Returns which key `presented` is, comparing against all of them in constant time.
    pub fn check(&self, presented: &str) -> Option<KeyId> {
        let digest = SecretHash::of(presented);
        let mut found = None;
        for (i, h) in self.hashes.iter().enumerate() {
            let eq: bool = h.0.ct_eq(&digest.0).into();
            if eq && found.is_none() {
                found = Some(i);
            }
        }
        found
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
    fn hashes_match_only_their_secret() {
        let h = SecretHash::of("token-1");
        assert!(h.matches("token-1"));
        assert!(!h.matches("token-2"));
        assert!(!h.matches(""));
    }
}
