//! Custom-domain verification: the TXT value that proves a key's owner controls a domain,
//! and the DNS lookup that finds it (hickory-resolver).
//!
//! A key's owner proves control of `app.mycompany.com` by publishing
//! `_tunnel.app.mycompany.com TXT "tunnel-verify=…"`, a value derived from the key's digest
//! and the domain (like sish's key-fingerprint record): it reveals nothing of the key, is the
//! same on every server holding the same keys and across restarts, and differs per key, so
//! another key cannot borrow a record meant for someone else.
//!
//! Only a definite answer changes routing: no record (NXDOMAIN, or none of type TXT) or no
//! matching value. A lookup that fails (timeout, server failure) leaves things as they were,
//! so a DNS blip never takes a working domain offline.

use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use sha2::{Digest, Sha256};

use crate::auth::SecretHash;
use crate::config::DnsResolver;

/// What a TXT lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxtCheck {
    /// A TXT record at the name holds the expected value.
    Found,
    /// No TXT record at the name.
    Missing,
    /// TXT records, but none with the expected value.
    Mismatch,
}

/// The lookup itself failed; the answer is unknown.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup of {name} failed: {detail}")]
pub struct LookupFailed {
    /// The name looked up.
    pub name: String,
    /// The resolver's error.
    pub detail: String,
}

/// The resolver could not be set up (an unreadable /etc/resolv.conf).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(String);

/// Looks up verification records.
#[derive(Clone)]
pub struct Verifier {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier asking `at`: the system's resolvers or one server. Nothing is cached: a
    /// check runs every few minutes at most, and must see a removed record at once.
    pub fn new(at: DnsResolver) -> Result<Self, ResolverSetupError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match at {
            DnsResolver::System => {
                TokioResolver::builder(provider).map_err(|e| ResolverSetupError(e.to_string()))?
            }
            DnsResolver::At(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], servers),
                    provider,
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        // A verification name is a full name: never try it under the search domains.
        opts.ndots = 0;
        Ok(Self {
            resolver: builder.build(),
        })
    }

    /// Looks up `name`'s TXT records and compares each (its strings joined, as RFC 7208
    /// does for SPF) with `expected`.
    pub async fn check(&self, name: &str, expected: &str) -> Result<TxtCheck, LookupFailed> {
        // A trailing dot: the name is absolute.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.txt_lookup(fqdn).await {
            Ok(lookup) => {
                let found = lookup.iter().any(|txt| {
                    let joined: Vec<u8> = txt
                        .txt_data()
                        .iter()
                        .flat_map(|s| s.iter())
                        .copied()
                        .collect();
                    String::from_utf8_lossy(&joined).trim() == expected
                });
                Ok(if found {
                    TxtCheck::Found
                } else {
                    TxtCheck::Mismatch
                })
            }
            Err(e) if e.is_no_records_found() => Ok(TxtCheck::Missing),
            Err(e) => Err(LookupFailed {
                name: name.to_string(),
                detail: e.to_string(),
            }),
        }
    }
}

/// The value `_tunnel.<domain>` must hold for the key whose digest is `key`.
pub fn verification_value(key: &SecretHash, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tunnel-domain-verification\0");
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(domain.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("tunnel-verify={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_differ_by_key_and_domain_and_are_stable() {
        let a = SecretHash::of("key-a-0123456789abcdef");
        let b = SecretHash::of("key-b-0123456789abcdef");
        let v = verification_value(&a, "app.example.org");
        assert_eq!(v, verification_value(&a, "app.example.org"));
        assert_ne!(v, verification_value(&b, "app.example.org"));
        assert_ne!(v, verification_value(&a, "www.example.org"));
        assert!(v.starts_with("tunnel-verify=") && v.len() == 14 + 32, "{v}");
    }
}
