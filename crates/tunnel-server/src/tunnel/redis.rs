//! The registry shared by several server processes ("pods"), in Redis: any pod answers the
//! control API for any tunnel and serves any public request, the pod holding a tunnel's client
//! takes its requests, and a pod may die.
//!
//! # Design
//! - **What Redis holds** (see `keys.rs`): every tunnel (owner, token digest, lifetime, access
//!   rules, counters) and, for each connected one, a **lease**: which pod holds the client, its
//!   peer address and a **generation**.
//! - **Claims and generations** (`scripts.rs`): a client that connects (to any pod: its token
//!   proves ownership) claims the tunnel at once, taking the next generation, whatever lease
//!   existed; the pod that held the previous one is told to close its client. A pod renews its
//!   leases every third of `TUNNEL_LEASE_SECS` and releases one when its client leaves, both
//!   only while the lease still carries its generation (compare-and-set in Lua), so a stale
//!   pod never touches a newer claim. A pod that dies stops renewing: its leases lapse.
//! - **Lookups** ([`TunnelRegistry::get`], the hot path) answer from the tunnels whose client
//!   is here, then from a short cache (`cache.rs`) that pub/sub hints keep fresh
//!   (`bus.rs`); anything else asks Redis ([`TunnelRegistry::lookup`]).
//! - **Redis down** (`store.rs`): everything that needs Redis fails at once with
//!   `registry_unavailable`; tunnels whose client is here keep serving; when Redis answers
//!   again, leases are renewed (or restored, if Redis lost them) and the cache trusted again.
//! - **Names and custom domains** (`scripts.rs`): who holds a name is a record in Redis
//!   written by the script that creates the tunnel and kept by the one that removes it for
//!   `TUNNEL_NAME_GRACE_SECS` (owners by key fingerprint, so any pod refuses another key the
//!   same way); a verified custom domain is a binding in Redis that any pod routes by, read
//!   through the same cache as tunnels. Blocked and reserved names are configuration, the
//!   same on every pod, checked before the script runs.
//! - **Counters** (requests, bytes) are counted by the pod that served the public request and
//!   added to the tunnel's hash every second (`upkeep.rs`), so any pod's status shows them.
//!
//! # Layout
//! - `keys`: key and channel names; `scripts`: the Lua scripts.
//! - `store`: the connection and the up/down flag; `stored`: the hash fields.
//! - `cache`: the lookup cache; `bus`: pub/sub messages.
//! - `domains`: custom domains' bindings and their lookups.
//! - `shared`: the state of the registry and its small helpers; `ops`: the operations the
//!   trait's methods run; `upkeep`: the background tasks.

mod bus;
mod cache;
mod domains;
mod keys;
mod ops;
pub mod scripts;
mod shared;
mod store;
mod stored;
mod upkeep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use self::shared::Shared;
use super::record::{Lease, Tunnel, TunnelInfo};
use super::registry::{
    Claim, CreateError, DomainBinding, NewTunnel, RegistryError, RegistryEvents, RegistryFuture,
    TunnelRegistry,
};
use super::urls::PublicUrls;
use crate::auth::KeyId;

pub use self::shared::RedisConfig;

/// The registry in Redis. See the module documentation.
#[derive(Debug, Clone)]
pub struct RedisRegistry(Arc<Shared>);

impl RedisRegistry {
    /// A registry for `config`, telling `events` of the tunnels seen here and closing clients on
    /// `tasks`. Connects in the background ([`RedisRegistry::spawn_upkeep`]); until Redis
    /// answers, everything that needs it fails with `registry_unavailable`.
    pub fn new(
        config: RedisConfig,
        events: Arc<dyn RegistryEvents>,
        tasks: TaskTracker,
    ) -> Result<Self, RegistryError> {
        Ok(Self(Arc::new(Shared::new(config, events, tasks)?)))
    }

    /// Starts the background work on `tracker` until `stop`: the connection watcher, the
    /// subscriber, lease renewal and counter flushing.
    pub fn spawn_upkeep(&self, tracker: &TaskTracker, stop: CancellationToken) {
        upkeep::spawn(&self.0, tracker, stop);
    }

    /// Waits until Redis answers and this pod listens to the others, at most `deadline`;
    /// whether both happened.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        self.0.wait_connected(deadline).await
    }
}

impl TunnelRegistry for RedisRegistry {
    fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.0.get(id)
    }

    fn lookup<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.lookup(id).await?) })
    }

    fn lookup_fresh<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.lookup_fresh(id).await?) })
    }

    fn create<'a>(
        &'a self,
        new: NewTunnel<'a>,
    ) -> BoxFuture<'a, Result<(Arc<Tunnel>, String), CreateError>> {
        Box::pin(self.0.create(new))
    }

    fn claim<'a>(
        &'a self,
        tunnel: &'a Arc<Tunnel>,
        mux: ServerMux,
        remote: SocketAddr,
    ) -> RegistryFuture<'a, Claim> {
        Box::pin(async move { Ok(self.0.claim(tunnel, mux, remote).await?) })
    }

    fn release<'a>(&'a self, tunnel: &'a Arc<Tunnel>, generation: u64) -> RegistryFuture<'a, ()> {
        Box::pin(async move { Ok(self.0.release(tunnel, generation).await?) })
    }

    fn list(&self, owner: KeyId) -> RegistryFuture<'_, Vec<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.list(owner).await?) })
    }

    fn remove<'a>(
        &'a self,
        id: &'a str,
        reason: GoodbyeReason,
        message: &'a str,
    ) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.remove(id, reason, message).await?) })
    }

    fn expire(&self, now: DateTime<Utc>) -> RegistryFuture<'_, Vec<String>> {
        Box::pin(async move { Ok(self.0.expire(now).await) })
    }

    fn node_id(&self) -> Option<&str> {
        Some(self.0.node())
    }

    fn ping(&self) -> RegistryFuture<'_, ()> {
        Box::pin(async move { Ok(self.0.ping().await?) })
    }

    fn relocate<'a>(
        &'a self,
        id: &'a str,
        stale: Option<&'a Lease>,
        wait: Duration,
    ) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.relocate(id, stale, wait).await?) })
    }

    fn describe<'a>(
        &'a self,
        tunnels: &'a [Arc<Tunnel>],
        urls: &'a PublicUrls,
    ) -> RegistryFuture<'a, Vec<TunnelInfo>> {
        Box::pin(async move { Ok(self.0.describe(tunnels, urls).await?) })
    }

    fn get_by_domain(&self, host: &str) -> Option<Arc<Tunnel>> {
        self.0.get_by_domain(host)
    }

    fn lookup_domain<'a>(&'a self, host: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(async move { Ok(self.0.lookup_domain(host).await?) })
    }

    fn reserve<'a>(
        &'a self,
        name: &'a str,
        owner: KeyId,
    ) -> BoxFuture<'a, Result<(), CreateError>> {
        Box::pin(std::future::ready(self.0.names.reserve(name, owner)))
    }

    fn bind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, DomainBinding> {
        Box::pin(async move { Ok(self.0.bind_domain(tunnel).await?) })
    }

    fn unbind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, ()> {
        Box::pin(async move { Ok(self.0.unbind_domain(tunnel).await?) })
    }

    fn local(&self) -> Vec<Arc<Tunnel>> {
        self.0.local_tunnels()
    }

    fn len(&self) -> usize {
        self.0.local_count()
    }
}
