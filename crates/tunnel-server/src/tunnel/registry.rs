//! The registry of tunnels as the rest of the server sees it: the [`TunnelRegistry`] trait,
//! so that a registry shared by several server processes (tunnels in Redis, say) can replace
//! the in-memory one without touching the proxy, the client endpoint or the control API.
//!
//! # What is async, and why
//! A shared registry does network I/O, so every operation that may have to ask the store —
//! create, look up a tunnel not held here, claim or release a live session, list, remove,
//! expire — returns a future. What must stay cheap stays synchronous: [`TunnelRegistry::get`],
//! the lookup of every public request, answers from what this process holds (for a shared
//! registry: the tunnels whose client is connected here, and a cache it keeps fresh), and
//! [`TunnelRegistry::local`], the tunnels this process holds, for the gauges and the drain.
//! The futures are boxed (`dyn` traits cannot return `impl Future`); that costs one allocation
//! per control call, never one per proxied request.
//!
//! A live session is always local: a client's WebSocket ends in one process. Claiming it is
//! where a shared registry records which process holds a tunnel's client (its lease), and a
//! tunnel whose client another process holds carries that lease ([`Tunnel::remote`]) so
//! that the proxy can forward its requests there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use super::access::AccessPolicy;
use super::record::{Connection, Lease, Tunnel, TunnelInfo};
use super::urls::PublicUrls;
use crate::auth::KeyId;
use crate::config::domains::SERVER_NAMES;
use crate::error::TunnelError;

/// What every registry operation that may ask the store returns.
pub type RegistryFuture<'a, T> = BoxFuture<'a, Result<T, RegistryError>>;

/// Why a tunnel could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The requested name is not a lowercase DNS label, or is reserved.
    #[error("invalid tunnel name: {0}")]
    InvalidName(String),
    /// Another tunnel has that name.
    #[error("tunnel name {0:?} is taken")]
    Taken(String),
    /// The name's tunnel is gone, but the name stays with its API key for the grace period.
    #[error("tunnel name {0:?} belongs to another API key (its tunnel ended within TUNNEL_NAME_GRACE_SECS)")]
    Held(String),
    /// The name is reserved for another API key.
    #[error("tunnel name {0:?} is reserved for another API key")]
    Reserved(String),
    /// The custom domain is verified for another tunnel.
    #[error("the domain {0:?} is in use by another tunnel")]
    DomainTaken(String),
    /// The API key holds as many tunnels as it may.
    #[error("this API key already holds {0} tunnels, the most allowed")]
    TooMany(usize),
    /// The store could not be asked.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Checks a requested tunnel name: a lowercase DNS label ([`tunnel_protocol::name::RULE`],
/// the rule the client checks too), and none of the server's own path names.
pub fn validate_name(name: &str) -> Result<(), CreateError> {
    tunnel_protocol::name::check(name).map_err(|e| {
        let mut message = e.to_string();
        if let Some(s) = tunnel_protocol::name::suggest(name) {
            message.push_str(&format!(" (try {s:?})"));
        }
        CreateError::InvalidName(message)
    })?;
    if SERVER_NAMES.contains(&name) {
        return Err(CreateError::InvalidName(format!("{name:?} is reserved")));
    }
    Ok(())
}

/// A random tunnel id: ten characters of `a-z0-9`, the first a letter (so that ids never look
/// like numbers in logs or URLs).
pub(super) fn generate_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let first = ALPHABET[rng.gen_range(0..26)] as char;
    std::iter::once(first)
        .chain((0..9).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char))
        .collect()
}

/// Whether `s` could be a tunnel id at all (cheap check before any lookup).
pub fn looks_like_id(s: &str) -> bool {
    tunnel_protocol::name::is_valid(s) && !SERVER_NAMES.contains(&s)
}

/// The store behind a registry failed. The in-memory registry never fails; a shared one can
/// lose its store.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store could not be reached, or failed to answer.
    #[error("tunnel store unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl From<RegistryError> for TunnelError {
    /// What callers see: a 503 without the store's detail, which goes to the log.
    fn from(e: RegistryError) -> Self {
        tracing::warn!(error = %e, "tunnel registry unavailable");
        TunnelError::RegistryUnavailable
    }
}

/// A tunnel to create.
#[derive(Debug, Clone)]
pub struct NewTunnel<'a> {
    /// The API key creating it.
    pub owner: KeyId,
    /// The requested id; `None`: the registry picks one.
    pub name: Option<&'a str>,
    /// Its lifetime.
    pub ttl: Duration,
    /// Most tunnels `owner` may hold.
    pub max_per_key: usize,
    /// Who may use its public URL.
    pub access: AccessPolicy,
    /// The custom domain asked for (routed only once verified, see
    /// [`TunnelRegistry::bind_domain`]).
    pub domain: Option<NewDomain>,
    /// Whether path-prefix requests keep their prefix ([`Tunnel::keep_prefix`]).
    pub keep_prefix: bool,
    /// What a TCP tunnel has (`None`: an HTTP tunnel).
    pub tcp: Option<super::record::TcpRecord>,
}

/// A custom domain to attach to a new tunnel.
#[derive(Debug, Clone)]
pub struct NewDomain {
    /// The host, normalized.
    pub name: String,
    /// The TXT value that proves it.
    pub expected: String,
}

/// What [`TunnelRegistry::bind_domain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainBinding {
    /// Requests with the domain as host now reach the tunnel.
    Bound,
    /// Another tunnel holds the domain.
    Taken,
    /// The tunnel is gone, or asked for no domain.
    NoTunnel,
}

/// A live session claimed for a client connected to this process.
#[derive(Debug)]
pub struct Claim {
    /// Distinguishes this session from the tunnel's earlier and later ones (for
    /// [`TunnelRegistry::release`]).
    pub generation: u64,
    /// The session it replaced, to be closed by the caller.
    pub replaced: Option<Connection>,
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

/// The tunnels: ids, tokens, lifetimes, live sessions. See the module documentation for what
/// is async and why.
pub trait TunnelRegistry: Send + Sync + std::fmt::Debug {
    /// The tunnel `id` as this process holds it, at once: the lookup of every public request.
    fn get(&self, id: &str) -> Option<Arc<Tunnel>>;

    /// The tunnel a verified custom domain (a normalized host) routes to, at once: the
    /// lookup of every public request on a host that is not ours.
    fn get_by_domain(&self, host: &str) -> Option<Arc<Tunnel>>;

    /// The tunnel a verified custom domain routes to, wherever the binding is stored: for a
    /// shared registry, a round trip to the store when [`get_by_domain`](Self::get_by_domain)
    /// does not know it (an unknown host's "nowhere" is cached too).
    fn lookup_domain<'a>(&'a self, host: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(std::future::ready(Ok(self.get_by_domain(host))))
    }

    /// The tunnel `id` wherever it is stored. For a shared registry, a round trip to the store
    /// when [`get`](Self::get) does not know it.
    fn lookup<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>>;

    /// [`lookup`](Self::lookup) without any cached answer: what the store holds now. For
    /// answers a cache must not decide, such as refusing a client's token (the cache may
    /// still say "no such tunnel" for one created a moment ago on another pod).
    fn lookup_fresh<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        self.lookup(id)
    }

    /// Registers a tunnel; returns it and its token (the only time the token exists in clear).
    ///
    /// A requested name must be free: no live tunnel, not blocked, not reserved for another
    /// key, not in another key's grace period (see [`super::names`]). A random name is never
    /// one that is reserved, blocked or in anyone's grace period.
    fn create<'a>(
        &'a self,
        new: NewTunnel<'a>,
    ) -> BoxFuture<'a, Result<(Arc<Tunnel>, String), CreateError>>;

    /// Claims `tunnel`'s live session for `mux`, a client connected to this process.
    fn claim<'a>(
        &'a self,
        tunnel: &'a Arc<Tunnel>,
        mux: ServerMux,
        remote: SocketAddr,
    ) -> RegistryFuture<'a, Claim>;

    /// Releases the session claimed as `generation`, unless a newer one took its place.
    fn release<'a>(&'a self, tunnel: &'a Arc<Tunnel>, generation: u64) -> RegistryFuture<'a, ()>;

    /// The tunnels of one owner, oldest first.
    fn list(&self, owner: KeyId) -> RegistryFuture<'_, Vec<Arc<Tunnel>>>;

    /// Reserves `name` for `owner` for good (`TUNNEL_RESERVED_NAMES`): only `owner` may take
    /// it, and it is never handed out at random.
    fn reserve<'a>(&'a self, name: &'a str, owner: KeyId)
        -> BoxFuture<'a, Result<(), CreateError>>;

    /// Routes requests for `tunnel`'s custom domain to it, after the DNS check succeeded.
    fn bind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, DomainBinding>;

    /// Stops routing `tunnel`'s custom domain to it (its TXT record went away).
    fn unbind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, ()>;

    /// Removes a tunnel and closes its client with `reason`. Its name stays its owner's for
    /// the grace period; its custom domain stops routing.
    fn remove<'a>(
        &'a self,
        id: &'a str,
        reason: GoodbyeReason,
        message: &'a str,
    ) -> RegistryFuture<'a, Option<Arc<Tunnel>>>;

    /// Removes the tunnels whose lifetime is over at `now` (closing their clients), and
    /// forgets grace periods that are over; returns the removed tunnels' ids.
    fn expire(&self, now: DateTime<Utc>) -> RegistryFuture<'_, Vec<String>>;

    /// This process's name among the processes sharing the registry (`TUNNEL_NODE_ID`);
    /// `None` for a registry of its own.
    fn node_id(&self) -> Option<&str> {
        None
    }

    /// Whether the store answers now (one round trip; `Ok` at once for a registry of its
    /// own). Readiness asks it: a shared registry's pod is no use to a balancer while it
    /// cannot look tunnels up, unless it holds clients itself.
    fn ping(&self) -> RegistryFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The tunnel `id` as the store knows it now, bypassing any cache: asked when the process
    /// a lease named answered that the client is not there, or could not be reached. If the
    /// store still names `stale` (or no process at all), waits up to `wait` for a claim to
    /// change before answering, so that a request arriving while a client moves finds its new
    /// place. Returns the tunnel with its lease (or its local connection) as now known.
    fn relocate<'a>(
        &'a self,
        id: &'a str,
        stale: Option<&'a Lease>,
        wait: Duration,
    ) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        let _ = (stale, wait);
        Box::pin(std::future::ready(Ok(self.get(id))))
    }

    /// What the control API shows of `tunnels`. A shared registry adds what other processes
    /// counted and where each client is.
    fn describe<'a>(
        &'a self,
        tunnels: &'a [Arc<Tunnel>],
        urls: &'a PublicUrls,
    ) -> RegistryFuture<'a, Vec<TunnelInfo>> {
        let infos = tunnels.iter().map(|t| t.info(urls)).collect();
        Box::pin(std::future::ready(Ok(infos)))
    }

    /// Every tunnel this process holds: sampled for the gauges, told and closed at shutdown.
    fn local(&self) -> Vec<Arc<Tunnel>>;

    /// How many tunnels this process holds.
    fn len(&self) -> usize;

    /// Whether this process holds no tunnel.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
