//! How a tunnel and a lease look in Redis, and back: the fields of `tunnel:t:{id}` and
//! `tunnel:l:{id}` (see `keys.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::store::StoreError;
use crate::auth::{ApiKeys, SecretHash};
use crate::edge::client_ip::parse_cidr;
use crate::tunnel::access::{AccessPolicy, BasicAuth};
use crate::tunnel::domain::{CustomDomain, DomainStatus};
use crate::tunnel::record::{Lease, TcpRecord, Tunnel};

/// The access rules as stored: networks as text, the credential as salt and digest; how
/// path-prefix requests are forwarded (absent in tunnels stored before it: stripped); and a
/// TCP tunnel's access token digest and public port (absent: an HTTP tunnel).
#[derive(Debug, Serialize, Deserialize)]
struct StoredAccess {
    basic_auth: Option<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    #[serde(default)]
    keep_prefix: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<StoredTcp>,
}

/// A [`TcpRecord`] as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredTcp {
    token: String,
    #[serde(default)]
    port: Option<u16>,
}

/// What [`parse_access`] reads besides the policy.
pub(super) struct Extras {
    pub(super) keep_prefix: bool,
    pub(super) tcp: Option<TcpRecord>,
}

/// `access` (and [`Tunnel::keep_prefix`], [`Tunnel::tcp`]) as the JSON the tunnel hash
/// stores.
pub(super) fn access_json(
    access: &AccessPolicy,
    keep_prefix: bool,
    tcp: Option<&TcpRecord>,
) -> String {
    let stored = StoredAccess {
        basic_auth: access.basic_auth.as_ref().map(BasicAuth::to_stored),
        allow: access.allow.iter().map(|n| n.to_string()).collect(),
        deny: access.deny.iter().map(|n| n.to_string()).collect(),
        keep_prefix,
        tcp: tcp.map(|t| StoredTcp {
            token: t.access_token.to_hex(),
            port: t.port,
        }),
    };
    // Strings and lists of strings always serialise.
    serde_json::to_string(&stored).unwrap_or_default()
}

fn parse_access(json: &str) -> Result<(AccessPolicy, Extras), StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("access rules: {what}"));
    let stored: StoredAccess = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let nets = |list: &[String]| {
        list.iter()
            .map(|s| parse_cidr(s).map_err(|e| bad(&e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    let policy = AccessPolicy {
        basic_auth: match &stored.basic_auth {
            Some(s) => Some(BasicAuth::from_stored(s).ok_or_else(|| bad("basic_auth"))?),
            None => None,
        },
        allow: nets(&stored.allow)?,
        deny: nets(&stored.deny)?,
    };
    let tcp = match stored.tcp {
        Some(t) => Some(TcpRecord {
            access_token: SecretHash::from_hex(&t.token).ok_or_else(|| bad("tcp token"))?,
            port: t.port,
        }),
        None => None,
    };
    let extras = Extras {
        keep_prefix: stored.keep_prefix,
        tcp,
    };
    Ok((policy, extras))
}

/// Unix milliseconds.
pub(super) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(fields: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, StoreError> {
    let ms: i64 = number(fields, name)?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("{name}: {ms} is no time")))
}

fn number<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    name: &str,
) -> Result<T, StoreError> {
    let text = fields
        .get(name)
        .ok_or_else(|| StoreError::Corrupt(format!("no field {name}")))?;
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{name}: {text:?} is no number")))
}

/// A tunnel hash, read: the tunnel (owned by the key configured here whose fingerprint it
/// names), and its counters as the store has them.
#[derive(Debug)]
pub(super) struct StoredTunnel {
    pub(super) tunnel: Tunnel,
    /// `requests`, `bytes_in`, `bytes_out`.
    pub(super) counters: [u64; 3],
}

/// Reads a tunnel hash (`HGETALL`); `Ok(None)` when it is empty (no such tunnel) or its owner
/// is a key this server does not know (a tunnel nobody here may manage or connect to).
pub(super) fn parse_tunnel(
    id: &str,
    fields: &HashMap<String, String>,
    keys: &ApiKeys,
) -> Result<Option<StoredTunnel>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let Some(owner) = fields.get("owner").and_then(|f| keys.by_fingerprint(f)) else {
        tracing::debug!(tunnel = %id, "tunnel of a key not configured here");
        return Ok(None);
    };
    let token = fields
        .get("token")
        .and_then(|t| SecretHash::from_hex(t))
        .ok_or_else(|| StoreError::Corrupt("token".into()))?;
    let (access, extras) = parse_access(fields.get("access").map_or("", String::as_str))?;
    let tunnel = Tunnel::restore(
        id.to_string(),
        owner,
        token,
        time(fields, "created")?,
        time(fields, "expires")?,
        access,
        stored_domain(fields),
    )
    .with_keep_prefix(extras.keep_prefix)
    .with_tcp(extras.tcp);
    let counter = |name| number::<u64>(fields, name).unwrap_or(0);
    Ok(Some(StoredTunnel {
        tunnel,
        counters: [
            counter("requests"),
            counter("bytes_in"),
            counter("bytes_out"),
        ],
    }))
}

/// A tunnel's custom domain as stored: name, TXT value, and whether it is routed (the
/// `BIND_DOMAIN` script sets `domain_bound`, `UNBIND_DOMAIN` clears it, both with the time of
/// the check in `domain_checked`). A routed domain reads as verified; one that is not reads as
/// pending, whatever the check that unbound it found (that pod's log says).
fn stored_domain(fields: &HashMap<String, String>) -> Option<CustomDomain> {
    let (Some(name), Some(txt)) = (fields.get("domain"), fields.get("domain_txt")) else {
        return None;
    };
    let domain = CustomDomain::new(name.clone(), txt.clone());
    let checked = time(fields, "domain_checked").ok();
    if fields.get("domain_bound").map(String::as_str) == Some("1") {
        domain.record(
            DomainStatus::Verified,
            true,
            checked.unwrap_or_else(Utc::now),
        );
    } else if let Some(at) = checked {
        domain.record(DomainStatus::Pending, false, at);
    }
    Some(domain)
}

/// Reads a lease hash; `Ok(None)` when empty (no pod holds the client).
pub(super) fn parse_lease(fields: &HashMap<String, String>) -> Result<Option<Lease>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("lease without {name}")))
    };
    Ok(Some(Lease {
        node: text("node")?,
        peer: text("peer")?,
        generation: number(fields, "gen")?,
        since: time(fields, "since")?,
        client_addr: fields.get("client").filter(|c| !c.is_empty()).cloned(),
        open_streams: number(fields, "streams").unwrap_or(0),
    }))
}

/// Whether `a` and `b` are the same tunnel (and not one created again under the same id).
pub(super) fn same_tunnel(a: &Tunnel, b: &Tunnel) -> bool {
    a.id == b.id && a.created_at == b.created_at && a.token_digest() == b.token_digest()
}

/// A lease for the API and the proxy, shared.
pub(super) fn shared(lease: Option<Lease>) -> Option<Arc<Lease>> {
    lease.map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules_survive_the_store() {
        let policy = AccessPolicy::new(
            Some("alice:correct horse"),
            &["10.0.0.0/8".into(), "2001:db8::/32".into()],
            &["10.1.0.0/16".into()],
        )
        .expect("valid");
        let tcp = TcpRecord {
            access_token: SecretHash::of("door"),
            port: Some(20001),
        };
        let (back, extras) = parse_access(&access_json(&policy, true, Some(&tcp))).expect("parses");
        assert!(extras.keep_prefix);
        assert_eq!(extras.tcp, Some(tcp));
        assert_eq!(back.allow, policy.allow);
        assert_eq!(back.deny, policy.deny);
        assert!(back.basic_auth.is_some());
        let (open, extras) =
            parse_access(&access_json(&AccessPolicy::default(), false, None)).expect("parses");
        assert!(!extras.keep_prefix && extras.tcp.is_none());
        assert!(open.basic_auth.is_none() && open.allow.is_empty());
        assert!(parse_access("{").is_err());
    }

    #[test]
    fn leases_need_their_fields() {
        let mut f = HashMap::new();
        assert!(parse_lease(&f).expect("empty").is_none());
        for (k, v) in [
            ("node", "a"),
            ("peer", "10.0.0.1:8990"),
            ("gen", "7"),
            ("since", "1700000000000"),
            ("client", ""),
        ] {
            f.insert(k.to_string(), v.to_string());
        }
        let lease = parse_lease(&f).expect("parses").expect("a lease");
        assert_eq!((lease.generation, lease.client_addr), (7, None));
        f.remove("gen");
        assert!(parse_lease(&f).is_err());
    }
}
