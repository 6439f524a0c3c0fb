//! One tunnel: what is registered about it (id, owner, token digest, lifetime, access rules),
//! its live client connection, and its counters.
//!
//! A tunnel outlives its client connections: a client that reconnects (network blip, laptop
//! sleep) finds the same id, token and URL. The tunnel itself goes away on `DELETE`, on expiry,
//! or with its registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use super::access::AccessPolicy;
use super::domain::{CustomDomain, DomainStatus};
use super::urls::PublicUrls;
use crate::auth::{KeyId, SecretHash};

/// The live client connection of a tunnel.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The multiplexed WebSocket.
    pub mux: ServerMux,
    /// When it authenticated.
    pub since: DateTime<Utc>,
    /// The client's address.
    pub remote: SocketAddr,
    /// Distinguishes successive connections of one tunnel.
    pub generation: u64,
}

/// The longest a replaced session that was going away may take to finish its requests (see
/// [`Connection::close_replaced`]); the draining pod's own grace period usually ends it first.
const MOVED_FINISH: Duration = Duration::from_secs(60);

impl Connection {
    /// Closes this session because a newer one of its tunnel took its place (`replaced`).
    ///
    /// A session that was told to go away (its pod drains: [`ServerMux::announce`]) was
    /// replaced by its own client, which reconnected elsewhere as told, make-before-break.
    /// The requests in flight on it finish first, and only then does it close: new requests
    /// no longer reach it (it has left the registry, and a stream opened on it from the
    /// moment it is idle is refused before anything is sent, so the caller can send the
    /// request elsewhere). Any other replaced session is closed at once: another client took
    /// the tunnel over, and the old one must stop serving it.
    pub async fn close_replaced(&self, message: &str) {
        let reason = GoodbyeReason::Replaced;
        match self.mux.is_going_away() {
            true => {
                self.mux
                    .close_when_idle(reason, message, MOVED_FINISH)
                    .await
            }
            false => self.mux.close(reason, message).await,
        }
    }
}

/// Where a tunnel's client is connected when it is not connected to this process: another
/// pod's claim on it, as a shared registry records it (a lease, renewed by that pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The pod holding the client.
    pub node: String,
    /// `HOST:PORT` of that pod's peer listener.
    pub peer: String,
    /// The claim this lease belongs to; every claim of any tunnel gets a greater one.
    pub generation: u64,
    /// When the client connected.
    pub since: DateTime<Utc>,
    /// The client's IP address.
    pub client_addr: Option<String>,
    /// Requests in flight on that pod, as of its last renewal.
    pub open_streams: usize,
}

/// What a TCP tunnel is registered with (and a shared registry stores, so that every pod can
/// serve it): the digest of the access token that opens its front door, and its public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRecord {
    /// Digest of the access token (`tunnel-client connect --token`).
    pub access_token: SecretHash,
    /// The public port of `TUNNEL_TCP_PORTS`, if it has one.
    pub port: Option<u16>,
}

impl TcpRecord {
    /// Whether `token` is the tunnel's access token (constant time).
    pub fn access_token_matches(&self, token: &str) -> bool {
        self.access_token.matches(token)
    }
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
    /// Where the client is when it is connected to another pod (shared registries only).
    remote: Mutex<Option<Arc<Lease>>>,
    generations: AtomicU64,
    /// Counters.
    pub stats: TunnelStats,
    /// Who may use the public URL.
    pub access: AccessPolicy,
    /// The custom domain asked for, if any.
    pub domain: Option<CustomDomain>,
    /// Whether a request by path prefix reaches the local service with its `/<id>` prefix
    /// kept, and its answer comes back unrewritten: for apps configured to live under that
    /// base path (Vite's `base`, Jupyter's `base_url`, Next.js's `basePath`).
    pub keep_prefix: bool,
    /// What a TCP tunnel has (`None`: an HTTP tunnel).
    pub tcp: Option<TcpRecord>,
}

impl Tunnel {
    /// A tunnel with no client yet. Of `token`, only the digest is kept.
    pub(super) fn new(
        id: String,
        owner: KeyId,
        token: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        access: AccessPolicy,
        domain: Option<CustomDomain>,
    ) -> Self {
        Self::restore(
            id,
            owner,
            SecretHash::of(token),
            created_at,
            expires_at,
            access,
            domain,
        )
    }

    /// A tunnel as a shared registry stored it: the token only as its digest.
    pub(super) fn restore(
        id: String,
        owner: KeyId,
        token: SecretHash,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        access: AccessPolicy,
        domain: Option<CustomDomain>,
    ) -> Self {
        Self {
            domain,
            id,
            owner,
            token,
            created_at,
            expires_at,
            connection: Mutex::new(None),
            remote: Mutex::new(None),
            generations: AtomicU64::new(0),
            stats: TunnelStats::default(),
            access,
            keep_prefix: false,
            tcp: None,
        }
    }

    /// The digest of the token, for a shared registry to store.
    pub(super) fn token_digest(&self) -> SecretHash {
        self.token
    }

    /// Where the client is, when it is connected to another pod.
    pub fn remote(&self) -> Option<Arc<Lease>> {
        // Never held across an await and no code under it can panic; recover from poison.
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records where the client is (`None`: not connected to any other pod).
    pub(super) fn set_remote(&self, lease: Option<Arc<Lease>>) {
        *self.remote.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// The same tunnel, keeping its path prefix or not (see [`Tunnel::keep_prefix`]).
    pub(super) fn with_keep_prefix(mut self, keep: bool) -> Self {
        self.keep_prefix = keep;
        self
    }

    /// The same tunnel as a TCP tunnel (`Some`) or an HTTP one.
    pub(super) fn with_tcp(mut self, tcp: Option<TcpRecord>) -> Self {
        self.tcp = tcp;
        self
    }

    fn conn(&self) -> MutexGuard<'_, Option<Connection>> {
        // Never held across an await and no code under it can panic; recover from poison.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `token` is this tunnel's token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        self.token.matches(token)
    }

    /// The live connection, if any: one that takes new requests. A session that is closing
    /// (replaced after its client moved, it finishes its requests in flight) does not count:
    /// a request opened on it would be refused, so it must go where the client is now.
    pub fn connection(&self) -> Option<Connection> {
        self.conn().clone().filter(|c| !c.mux.refuses_streams())
    }

    /// Installs a new connection and returns the one it replaces.
    pub(super) fn attach(&self, mux: ServerMux, remote: SocketAddr) -> (u64, Option<Connection>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        (generation, self.attach_as(generation, mux, remote))
    }

    /// Installs a new connection under a generation the caller chose (a shared registry's,
    /// unique across pods) and returns the one it replaces.
    pub(super) fn attach_as(
        &self,
        generation: u64,
        mux: ServerMux,
        remote: SocketAddr,
    ) -> Option<Connection> {
        self.set_remote(None);
        self.conn().replace(Connection {
            mux,
            since: Utc::now(),
            remote,
            generation,
        })
    }

    /// Removes the connection if it is still generation `generation`; returns whether it was.
    pub(super) fn detach(&self, generation: u64) -> bool {
        let mut conn = self.conn();
        let current = conn.as_ref().is_some_and(|c| c.generation == generation);
        if current {
            *conn = None;
        }
        current
    }

    /// Takes the connection out, to close it.
    pub(super) fn take_connection(&self) -> Option<Connection> {
        self.conn().take()
    }

    /// Whether the tunnel's lifetime is over.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// A snapshot for the API. A client connected to another pod shows as that pod's lease
    /// says (with the pod in `node`).
    pub fn info(&self, urls: &PublicUrls) -> TunnelInfo {
        let conn = self.connection();
        let remote = conn.is_none().then(|| self.remote()).flatten();
        let (connected, connected_since, client_addr, open_streams, node) = match (&conn, &remote) {
            (Some(c), _) => (
                true,
                Some(c.since),
                Some(c.remote.ip().to_string()),
                c.mux.open_streams(),
                None,
            ),
            (None, Some(l)) => (
                true,
                Some(l.since),
                l.client_addr.clone(),
                l.open_streams,
                Some(l.node.clone()),
            ),
            (None, None) => (false, None, None, 0, None),
        };
        TunnelInfo {
            tunnel_id: self.id.clone(),
            public_url: urls.public_url(&self.id),
            path_url: urls.path_url(&self.id),
            subdomain_url: urls.subdomain_url(&self.id),
            custom_domain: self.domain.as_ref().map(|d| CustomDomainInfo::of(d, urls)),
            created_at: self.created_at,
            expires_at: self.expires_at,
            connected,
            connected_since,
            client_addr,
            open_streams,
            node,
            basic_auth: self.access.basic_auth.is_some(),
            keep_prefix: self.keep_prefix,
            proto: if self.tcp.is_some() { "tcp" } else { "http" }.to_string(),
            port: self.tcp.and_then(|t| t.port),
            ip_allow: self.access.allow.iter().map(|n| n.to_string()).collect(),
            ip_deny: self.access.deny.iter().map(|n| n.to_string()).collect(),
            requests_served: self.stats.requests.load(Ordering::Relaxed),
            bytes_in: self.stats.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.stats.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// What the API shows of a custom domain: where it will answer, the TXT record that proves
/// it, and what the last check found.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CustomDomainInfo {
    /// The domain, e.g. `app.mycompany.com`.
    pub domain: String,
    /// Its URL (answers once verified).
    pub url: String,
    /// Whether requests with this host reach the tunnel now.
    pub verified: bool,
    /// What the last check found.
    pub status: DomainStatus,
    /// When it was last checked.
    pub checked_at: Option<DateTime<Utc>>,
    /// The TXT record to create: `_tunnel.<domain>`.
    pub txt_name: String,
    /// The value it must hold (derived from the API key and the domain).
    pub txt_value: String,
}

impl CustomDomainInfo {
    /// The API's view of `d`.
    pub fn of(d: &CustomDomain, urls: &PublicUrls) -> Self {
        let (status, checked_at, verified) = d.state();
        Self {
            domain: d.name.clone(),
            url: urls.custom_url(&d.name),
            verified,
            status,
            checked_at,
            txt_name: d.record_name(),
            txt_value: d.expected.clone(),
        }
    }
}

/// What the API shows of a tunnel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TunnelInfo {
    /// Id.
    pub tunnel_id: String,
    /// Public URL, in the form `TUNNEL_URL_STYLE` picks.
    pub public_url: String,
    /// The path-prefix URL, `https://<host>/<id>/` (always served).
    pub path_url: String,
    /// The subdomain URL, `https://<id>.<TUNNEL_DOMAIN>/`, when `TUNNEL_DOMAIN` is set.
    pub subdomain_url: Option<String>,
    /// The custom domain, when one was asked for.
    pub custom_domain: Option<CustomDomainInfo>,
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
    /// The pod the client is connected to (`TUNNEL_NODE_ID`), when several pods share the
    /// registry (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether the public URL requires basic auth.
    pub basic_auth: bool,
    /// Whether requests by path prefix keep their `/<id>` prefix (nothing rewritten).
    pub keep_prefix: bool,
    /// What the tunnel carries: `http` or `tcp`.
    #[schema(example = "tcp")]
    pub proto: String,
    /// A TCP tunnel's public port (of `TUNNEL_TCP_PORTS`), when it has one.
    #[schema(example = 20001)]
    pub port: Option<u16>,
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
