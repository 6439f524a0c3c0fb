//! The in-memory registry of tunnels (a `DashMap` inside the shared state).
//!
//! A tunnel outlives its client connections: a client that reconnects (network blip, laptop
//! sleep) finds the same id, token and URL. The tunnel itself goes away on `DELETE`, on expiry,
//! or with the process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rand::Rng;
use serde::Serialize;
use tunnel_protocol::mux::Mux;
use tunnel_protocol::GoodbyeReason;

use super::access::AccessPolicy;
use crate::auth::{KeyId, SecretHash};

/// Names a tunnel may not take: they are paths the server itself serves.
const RESERVED: &[&str] = &[
    "api", "health", "healthz", "ready", "readyz", "metrics", "admin", "static", "www",
];

/// Why a tunnel could not be created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    /// The requested name is not a lowercase DNS label, or is reserved.
    #[error("invalid tunnel name: {0}")]
    InvalidName(String),
    /// Another tunnel has that name.
    #[error("tunnel name {0:?} is taken")]
    Taken(String),
    /// The API key holds as many tunnels as it may.
    #[error("this API key already holds {0} tunnels, the most allowed")]
    TooMany(usize),
}

/// Checks a requested tunnel name: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
pub fn validate_name(name: &str) -> Result<(), CreateError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > 63
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(CreateError::InvalidName(
            "use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'".into(),
        ));
    }
    if RESERVED.contains(&name) {
        return Err(CreateError::InvalidName(format!("{name:?} is reserved")));
    }
    Ok(())
}

/// Whether `s` could be a tunnel id at all (cheap check before any lookup).
pub fn looks_like_id(s: &str) -> bool {
    validate_name(s).is_ok()
}

fn generate_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    // First character a letter: ids then never look like numbers in logs or URLs.
    let first = ALPHABET[rng.gen_range(0..26)] as char;
    std::iter::once(first)
        .chain((0..9).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char))
        .collect()
}

/// The live client connection of a tunnel.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The multiplexed WebSocket.
    pub mux: Mux,
    /// When it authenticated.
    pub since: DateTime<Utc>,
    /// The client's address.
    pub remote: SocketAddr,
    /// Distinguishes successive connections of one tunnel.
    pub generation: u64,
}

/// Counters of one tunnel.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Public requests answered (any status).
    pub requests: AtomicU64,
    /// Body bytes from public clients to the local service.
    pub bytes_in: AtomicU64,
    /// Body bytes from the local service to public clients.
    pub bytes_out: AtomicU64,
}

/// One registered tunnel.
#[derive(Debug)]
pub struct Tunnel {
    /// The id, also the first path segment of its public URL.
    pub id: String,
    /// The API key that created it.
    pub owner: KeyId,
    token: SecretHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it is removed.
    pub expires_at: DateTime<Utc>,
    connection: Mutex<Option<Connection>>,
    generations: AtomicU64,
    /// Counters.
    pub stats: TunnelStats,
    /// Who may use the public URL.
    pub access: AccessPolicy,
}

impl Tunnel {
    fn conn(&self) -> MutexGuard<'_, Option<Connection>> {
        // Never held across an await and no code under it can panic; recover from poison.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `token` is this tunnel's token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        self.token.matches(token)
    }

    /// The live connection, if any.
    pub fn connection(&self) -> Option<Connection> {
        self.conn().clone().filter(|c| !c.mux.is_closed())
    }

    /// Installs a new connection and returns the one it replaces.
    pub fn attach(&self, mux: Mux, remote: SocketAddr) -> (u64, Option<Connection>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.conn().replace(Connection {
            mux,
            since: Utc::now(),
            remote,
            generation,
        });
        (generation, old)
    }

    /// Removes the connection if it is still generation `generation`.
    pub fn detach(&self, generation: u64) {
        let mut conn = self.conn();
        if conn.as_ref().is_some_and(|c| c.generation == generation) {
            *conn = None;
        }
    }

    /// Closes the live connection, telling the client why.
    pub fn disconnect(&self, reason: GoodbyeReason, message: &str) {
        if let Some(c) = self.conn().take() {
            let message = message.to_string();
            tokio::spawn(async move { c.mux.close(reason, &message).await });
        }
    }

    /// Whether the tunnel's lifetime is over.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// A snapshot for the API.
    pub fn info(&self, base_url: &str) -> TunnelInfo {
        let conn = self.connection();
        TunnelInfo {
            tunnel_id: self.id.clone(),
            public_url: public_url(base_url, &self.id),
            created_at: self.created_at,
            expires_at: self.expires_at,
            connected: conn.is_some(),
            connected_since: conn.as_ref().map(|c| c.since),
            client_addr: conn.as_ref().map(|c| c.remote.ip().to_string()),
            open_streams: conn.as_ref().map_or(0, |c| c.mux.open_streams()),
            basic_auth: self.access.basic_auth.is_some(),
            ip_allow: self.access.allow.iter().map(|n| n.to_string()).collect(),
            ip_deny: self.access.deny.iter().map(|n| n.to_string()).collect(),
            requests_served: self.stats.requests.load(Ordering::Relaxed),
            bytes_in: self.stats.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.stats.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// The public URL of tunnel `id`.
pub fn public_url(base_url: &str, id: &str) -> String {
    format!("{base_url}/{id}/")
}

/// What the API shows of a tunnel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TunnelInfo {
    /// Id.
    pub tunnel_id: String,
    /// Public URL.
    pub public_url: String,
    /// Creation time (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Expiry time (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// Whether a client is connected now.
    pub connected: bool,
    /// Since when, if connected.
    pub connected_since: Option<DateTime<Utc>>,
    /// The connected client's IP address.
    pub client_addr: Option<String>,
    /// Requests in flight.
    pub open_streams: usize,
    /// Whether the public URL requires basic auth.
    pub basic_auth: bool,
    /// Networks allowed (empty: all).
    pub ip_allow: Vec<String>,
    /// Networks denied.
    pub ip_deny: Vec<String>,
    /// Public requests answered so far.
    pub requests_served: u64,
    /// Request body bytes forwarded.
    pub bytes_in: u64,
    /// Response body bytes forwarded.
    pub bytes_out: u64,
}

/// Told of every tunnel that comes and goes. The metrics use it to keep per-tunnel series
/// bounded; a trait, so that the registry needs to know nothing of what observes it.
pub trait RegistryEvents: Send + Sync + std::fmt::Debug {
    /// Tunnel `id` is about to be inserted (before, so that a removal can only follow it).
    fn registered(&self, _id: &str) {}
    /// Tunnel `id` was removed.
    fn removed(&self, _id: &str) {}
}

/// Nobody listening.
impl RegistryEvents for () {}

/// All tunnels, by id.
#[derive(Debug)]
pub struct Registry {
    tunnels: DashMap<String, Arc<Tunnel>>,
    /// Told of every tunnel that comes and goes.
    events: Arc<dyn RegistryEvents>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_events(Arc::new(()))
    }
}

impl Registry {
    /// An empty registry that tells `events` of every tunnel that comes and goes.
    pub fn with_events(events: Arc<dyn RegistryEvents>) -> Self {
        Self {
            tunnels: DashMap::new(),
            events,
        }
    }

    /// Registers a tunnel; returns it and its token (the only time the token exists in clear).
    pub fn create(
        &self,
        owner: KeyId,
        name: Option<&str>,
        ttl: std::time::Duration,
        max_per_key: usize,
        access: AccessPolicy,
    ) -> Result<(Arc<Tunnel>, String), CreateError> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        let held = self.tunnels.iter().filter(|t| t.owner == owner).count();
        if held >= max_per_key {
            return Err(CreateError::TooMany(max_per_key));
        }
        let token = crate::auth::generate_secret();
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        for _ in 0..16 {
            let id = match name {
                Some(n) => n.to_string(),
                None => generate_id(),
            };
            match self.tunnels.entry(id.clone()) {
                Entry::Occupied(_) if name.is_some() => return Err(CreateError::Taken(id)),
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => {
                    // Before the insert: a removal can only follow it, never precede it.
                    self.events.registered(&id);
                    let tunnel = Arc::new(Tunnel {
                        id,
                        owner,
                        token: SecretHash::of(&token),
                        created_at: now,
                        expires_at: now + ttl,
                        connection: Mutex::new(None),
                        generations: AtomicU64::new(0),
                        stats: TunnelStats::default(),
                        access: access.clone(),
                    });
                    slot.insert(tunnel.clone());
                    return Ok((tunnel, token));
                }
            }
        }
        // 16 collisions in a space of 36^9 ids means the registry is absurdly full.
        Err(CreateError::TooMany(self.tunnels.len()))
    }

    /// Looks a tunnel up.
    pub fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.get(id).map(|t| t.clone())
    }

    /// Removes a tunnel and closes its client with `reason`.
    pub fn remove(&self, id: &str, reason: GoodbyeReason, message: &str) -> Option<Arc<Tunnel>> {
        let (_, tunnel) = self.tunnels.remove(id)?;
        self.events.removed(id);
        tunnel.disconnect(reason, message);
        Some(tunnel)
    }

    /// Tunnels of one owner, oldest first.
    pub fn list(&self, owner: KeyId) -> Vec<Arc<Tunnel>> {
        let mut v: Vec<_> = self
            .tunnels
            .iter()
            .filter(|t| t.owner == owner)
            .map(|t| t.clone())
            .collect();
        v.sort_by_key(|t| t.created_at);
        v
    }

    /// Every tunnel.
    pub fn all(&self) -> Vec<Arc<Tunnel>> {
        self.tunnels.iter().map(|t| t.clone()).collect()
    }

    /// Removes expired tunnels (closing their clients); returns how many.
    pub fn reap_expired(&self) -> usize {
        let now = Utc::now();
        let expired: Vec<String> = self
            .tunnels
            .iter()
            .filter(|t| t.is_expired(now))
            .map(|t| t.id.clone())
            .collect();
        for id in &expired {
            self.remove(id, GoodbyeReason::Expired, "the tunnel's lifetime ended");
            tracing::info!(tunnel = %id, "tunnel expired");
        }
        expired.len()
    }

    /// Number of tunnels.
    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// Whether there are no tunnels.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["a", "my-app", "x1", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "%2e",
            "..",
            "api",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let r = Registry::default();
        let (a, ta) = r
            .create(
                0,
                None,
                Duration::from_secs(60),
                10,
                AccessPolicy::default(),
            )
            .expect("created");
        let (b, tb) = r
            .create(
                0,
                None,
                Duration::from_secs(60),
                10,
                AccessPolicy::default(),
            )
            .expect("created");
        assert_ne!(a.id, b.id);
        assert!(looks_like_id(&a.id));
        assert!(a.token_matches(&ta) && !a.token_matches(&tb));
    }

    #[test]
    fn taken_names_and_limits() {
        let r = Registry::default();
        r.create(
            0,
            Some("demo"),
            Duration::from_secs(60),
            2,
            AccessPolicy::default(),
        )
        .expect("created");
        assert_eq!(
            r.create(
                1,
                Some("demo"),
                Duration::from_secs(60),
                2,
                AccessPolicy::default()
            )
            .err(),
            Some(CreateError::Taken("demo".into()))
        );
        r.create(0, None, Duration::from_secs(60), 2, AccessPolicy::default())
            .expect("created");
        assert_eq!(
            r.create(0, None, Duration::from_secs(60), 2, AccessPolicy::default())
                .err(),
            Some(CreateError::TooMany(2))
        );
        assert_eq!(r.list(0).len(), 2);
        assert_eq!(r.list(1).len(), 0);
    }
}
