//! The state of the Redis registry, shared by the trait's methods and the background tasks,
//! and the small helpers every part of it uses.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;

use super::cache::{Cache, Hit};
use super::scripts::Scripts;
use super::store::{Store, StoreError};
use crate::auth::ApiKeys;
use crate::tunnel::names::{NameBook, NamePolicy};
use crate::tunnel::record::Tunnel;
use crate::tunnel::registry::{RegistryError, RegistryEvents};

/// What a Redis registry needs to know of its pod.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://…`, `rediss://…` or `unix://…`.
    pub url: String,
    /// This pod's name (`TUNNEL_NODE_ID`).
    pub node: String,
    /// Where other pods reach this pod's peer listener (`HOST:PORT`).
    pub peer: String,
    /// How long a lease lasts without renewal (`TUNNEL_LEASE_SECS`).
    pub lease: Duration,
    /// How long a lookup of a tunnel held by another pod is believed (`TUNNEL_CACHE_SECS`).
    pub cache: Duration,
    /// The API keys, to record owners by fingerprint.
    pub keys: ApiKeys,
    /// Blocked names and the grace period.
    pub names: NamePolicy,
}

/// A tunnel object counting requests here, with what was added to Redis of its counters.
#[derive(Debug)]
pub(super) struct Counted {
    pub(super) tunnel: Arc<Tunnel>,
    pub(super) flushed: [u64; 3],
}

/// Capacity of the channel of change hints to waiting relocations (a waiter that lags just
/// reads the store again).
const CHANGES: usize = 256;

/// The registry's state.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) scripts: Scripts,
    pub(super) node: String,
    pub(super) peer: String,
    pub(super) lease: Duration,
    pub(super) keys: ApiKeys,
    /// Tunnels whose client is connected here, with their live session.
    pub(super) local: DashMap<String, Arc<Tunnel>>,
    /// Tunnels looked up recently.
    pub(super) cache: Cache,
    /// Every tunnel object counting requests here, by address (an id may have two objects
    /// for a moment: one still counting the last bytes of a request, one newer).
    pub(super) counted: DashMap<usize, Counted>,
    /// Tunnels given a metrics label here, with their expiry.
    pub(super) labelled: DashMap<String, DateTime<Utc>>,
    /// Ids named by `tunnel:changed`, for relocations to wait on.
    pub(super) changes: broadcast::Sender<String>,
    /// Whether the subscriber listens now (the cache is trusted only then).
    pub(super) subscribed: watch::Sender<bool>,
    pub(super) events: Arc<dyn RegistryEvents>,
    /// Where client connections are closed.
    pub(super) tasks: TaskTracker,
    /// The blocked list, the grace period and the reservations: the same configuration on
    /// every pod. Who holds a name, and for how long, is in Redis (`tunnel:n:{name}`).
    pub(super) names: NameBook,
}

impl Shared {
    pub(super) fn new(
        config: RedisConfig,
        events: Arc<dyn RegistryEvents>,
        tasks: TaskTracker,
    ) -> Result<Self, RegistryError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| RegistryError::Unavailable(Box::new(e)))?;
        Ok(Self {
            store: Store::new(client),
            scripts: Scripts::new(),
            node: config.node,
            peer: config.peer,
            lease: config.lease,
            keys: config.keys,
            local: DashMap::new(),
            cache: Cache::new(config.cache),
            counted: DashMap::new(),
            labelled: DashMap::new(),
            changes: broadcast::channel(CHANGES).0,
            subscribed: watch::channel(false).0,
            events,
            tasks,
            names: NameBook::new(config.names),
        })
    }

    /// [`crate::tunnel::TunnelRegistry::ping`]: `PING`, failing at once while Redis is known
    /// to be down (and taking it down if the `PING` finds it unreachable).
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.store.conn()?;
        let answer = redis::cmd("PING").query_async::<String>(&mut conn).await;
        self.store.check(answer)?;
        Ok(())
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// Waits until Redis answers and the subscriber listens, at most `deadline`; whether
    /// both happened.
    pub(super) async fn wait_connected(&self, deadline: Duration) -> bool {
        let mut recovered = self.store.recovered();
        let mut subscribed = self.subscribed.subscribe();
        let connected = async {
            while !self.store.is_up() {
                if recovered.changed().await.is_err() {
                    return;
                }
            }
            // The sender lives as long as `self`.
            let _ = subscribed.wait_for(|s| *s).await;
        };
        tokio::time::timeout(deadline, connected).await.is_ok()
            && self.store.is_up()
            && *self.subscribed.borrow()
    }

    /// The local tunnel `id` with a live client.
    pub(super) fn local_live(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.local
            .get(id)
            .map(|t| t.clone())
            .filter(|t| t.connection().is_some())
    }

    /// [`crate::tunnel::TunnelRegistry::get`]: a live local tunnel, or a fresh cache entry.
    pub(super) fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        if let Some(t) = self.local_live(id) {
            return Some(t);
        }
        match self.cache.get(id) {
            Hit::Fresh(t) => t,
            Hit::Stale(_) => None,
        }
    }

    pub(super) fn local_tunnels(&self) -> Vec<Arc<Tunnel>> {
        self.local.iter().map(|t| t.clone()).collect()
    }

    pub(super) fn local_count(&self) -> usize {
        self.local.len()
    }

    /// Gives `tunnel` a metrics label of its own here (once), and counts its requests.
    pub(super) fn seen(&self, tunnel: &Arc<Tunnel>) {
        if !self.labelled.contains_key(&tunnel.id) {
            self.labelled.insert(tunnel.id.clone(), tunnel.expires_at);
            self.events.registered(&tunnel.id);
        }
        // Objects start at zero: what they count is what this pod adds.
        self.counted
            .entry(Arc::as_ptr(tunnel) as usize)
            .or_insert_with(|| Counted {
                tunnel: tunnel.clone(),
                flushed: [0; 3],
            });
    }

    /// Takes the label away again (the tunnel was removed or expired).
    pub(super) fn unlabel(&self, id: &str) {
        if self.labelled.remove(id).is_some() {
            self.events.removed(id);
        }
    }
}
