//! Per-tunnel access control a user can turn on: HTTP basic auth and IP allow/deny lists.
//!
//! The basic-auth credential is never stored in clear: a random salt and the SHA-256 of salt
//! and `user:password`, compared in constant time.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderMap;
use ipnet::IpNet;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::edge::client_ip::{parse_cidr, InvalidNetwork};

/// Access rules a create request asked for that cannot be had; the message goes back to the
/// caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// `basic_auth` without a colon.
    #[error("basic_auth must be \"user:password\"")]
    NotUserPassword,
    /// `basic_auth` with an empty user.
    #[error("basic_auth needs a user name")]
    NoUser,
    /// A password too short or too long.
    #[error("basic_auth password must be 8 to 128 characters")]
    PasswordLength,
    /// Control characters anywhere in `basic_auth`.
    #[error("basic_auth must not contain control characters")]
    ControlCharacters,
    /// More than 100 networks in one list.
    #[error("{field} has more than 100 entries")]
    TooManyNetworks {
        /// `ip_allow` or `ip_deny`.
        field: &'static str,
    },
    /// A network that does not parse.
    #[error("{field}: {network}")]
    Network {
        /// `ip_allow` or `ip_deny`.
        field: &'static str,
        /// What is wrong with it.
        network: InvalidNetwork,
    },
}

/// A hashed `user:password`.
#[derive(Clone)]
pub struct BasicAuth {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(..)")
    }
}

impl BasicAuth {
    /// Hashes `user:password`; refuses empty users, colons in users and short passwords.
    pub fn new(credential: &str) -> Result<Self, AccessError> {
        let (user, pass) = credential
            .split_once(':')
            .ok_or(AccessError::NotUserPassword)?;
        if user.is_empty() {
            return Err(AccessError::NoUser);
        }
        if !(8..=128).contains(&pass.chars().count()) {
            return Err(AccessError::PasswordLength);
        }
        if credential.chars().any(char::is_control) {
            return Err(AccessError::ControlCharacters);
        }
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let hash = Self::digest(&salt, credential.as_bytes());
        Ok(Self { salt, hash })
    }

    fn digest(salt: &[u8; 16], credential: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(credential);
        h.finalize().into()
    }

    /// Salt and digest as `SALT_HEX:DIGEST_HEX`, for a shared registry to store.
    pub fn to_stored(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!("{}:{}", hex(&self.salt), hex(&self.hash))
    }

    /// A credential stored with [`BasicAuth::to_stored`]; `None` if `stored` is not one.
    pub fn from_stored(stored: &str) -> Option<Self> {
        let (salt, hash) = stored.split_once(':')?;
        Some(Self {
            salt: crate::auth::decode_hex(salt)?.try_into().ok()?,
            hash: crate::auth::decode_hex(hash)?.try_into().ok()?,
        })
    }

    /// Whether `headers` carry this credential in `Authorization: Basic …`.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, b64)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = B64.decode(b64.trim()) else {
            return false;
        };
        Self::digest(&self.salt, &decoded).ct_eq(&self.hash).into()
    }
}

/// Who may use a tunnel's public URL.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Required credential, if any.
    pub basic_auth: Option<BasicAuth>,
    /// If not empty, only these networks may connect.
    pub allow: Vec<IpNet>,
    /// These networks may never connect (checked first).
    pub deny: Vec<IpNet>,
}

impl AccessPolicy {
    /// Builds a policy from API input.
    pub fn new(
        basic_auth: Option<&str>,
        allow: &[String],
        deny: &[String],
    ) -> Result<Self, AccessError> {
        let parse = |list: &[String], field: &'static str| {
            if list.len() > 100 {
                return Err(AccessError::TooManyNetworks { field });
            }
            list.iter()
                .map(|s| parse_cidr(s).map_err(|network| AccessError::Network { field, network }))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            basic_auth: basic_auth.map(BasicAuth::new).transpose()?,
            allow: parse(allow, "ip_allow")?,
            deny: parse(deny, "ip_deny")?,
        })
    }

    /// Whether `ip` may use the tunnel.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_header(cred: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", B64.encode(cred));
        h.insert("authorization", v.parse().expect("valid"));
        h
    }

    #[test]
    fn basic_auth_accepts_only_its_credential() {
        let a = BasicAuth::new("alice:correct horse").expect("valid");
        assert!(a.accepts(&auth_header("alice:correct horse")));
        assert!(!a.accepts(&auth_header("alice:wrong horse!")));
        assert!(!a.accepts(&auth_header("bob:correct horse")));
        assert!(!a.accepts(&HeaderMap::new()));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic !!!".parse().expect("valid"));
        assert!(!a.accepts(&h));
        assert!(BasicAuth::new("nocolon").is_err());
        assert!(BasicAuth::new(":password1").is_err());
        assert!(BasicAuth::new("u:short").is_err());
    }

    #[test]
    fn a_stored_credential_still_accepts_only_itself() {
        let a = BasicAuth::new("alice:correct horse").expect("valid");
        let b = BasicAuth::from_stored(&a.to_stored()).expect("round trip");
        assert!(b.accepts(&auth_header("alice:correct horse")));
        assert!(!b.accepts(&auth_header("alice:wrong horse!")));
        assert!(BasicAuth::from_stored("00:11").is_none());
        assert!(BasicAuth::from_stored("nothing").is_none());
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = AccessPolicy::new(
            None,
            &["10.0.0.0/8".into(), "2001:db8::/32".into()],
            &["10.1.0.0/16".into()],
        )
        .expect("valid");
        assert!(p.allows_ip("10.2.3.4".parse().expect("ip")));
        assert!(!p.allows_ip("10.1.3.4".parse().expect("ip")));
        assert!(!p.allows_ip("192.0.2.1".parse().expect("ip")));
        assert!(p.allows_ip("2001:db8::1".parse().expect("ip")));
        assert!(AccessPolicy::default().allows_ip("192.0.2.1".parse().expect("ip")));
        assert!(AccessPolicy::new(None, &["bad".into()], &[]).is_err());
    }
}
