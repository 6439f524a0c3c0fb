//! The in-memory registry: tunnels in a `DashMap`, gone with the process. The first
//! [`TunnelRegistry`]; every operation completes at once.

use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use rand::Rng;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::Mux;
use tunnel_protocol::GoodbyeReason;

use super::record::Tunnel;
use super::registry::{
    validate_name, Claim, CreateError, NewTunnel, RegistryEvents, RegistryFuture, TunnelRegistry,
};
use crate::auth::KeyId;

fn generate_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    // First character a letter: ids then never look like numbers in logs or URLs.
    let first = ALPHABET[rng.gen_range(0..26)] as char;
    std::iter::once(first)
        .chain((0..9).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char))
        .collect()
}

/// All tunnels of this process, by id.
#[derive(Debug)]
pub struct MemoryRegistry {
    tunnels: DashMap<String, Arc<Tunnel>>,
    /// Told of every tunnel that comes and goes.
    events: Arc<dyn RegistryEvents>,
    /// Where the closing of a removed tunnel's client connection runs (shutdown waits for it).
    tasks: TaskTracker,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new(Arc::new(()), TaskTracker::new())
    }
}

impl MemoryRegistry {
    /// An empty registry that tells `events` of every tunnel that comes and goes, and closes
    /// removed tunnels' client connections on `tasks`.
    pub fn new(events: Arc<dyn RegistryEvents>, tasks: TaskTracker) -> Self {
        Self {
            tunnels: DashMap::new(),
            events,
            tasks,
        }
    }

    fn create_now(&self, new: NewTunnel<'_>) -> Result<(Arc<Tunnel>, String), CreateError> {
        let NewTunnel {
            owner,
            name,
            ttl,
            max_per_key,
            access,
        } = new;
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
                    let tunnel = Tunnel::new(id, owner, &token, now, now + ttl, access.clone());
                    let tunnel = Arc::new(tunnel);
                    slot.insert(tunnel.clone());
                    return Ok((tunnel, token));
                }
            }
        }
        // 16 collisions in a space of 36^9 ids means the registry is absurdly full.
        Err(CreateError::TooMany(self.tunnels.len()))
    }

    fn remove_now(&self, id: &str, reason: GoodbyeReason, message: &str) -> Option<Arc<Tunnel>> {
        let (_, tunnel) = self.tunnels.remove(id)?;
        self.events.removed(id);
        if let Some(c) = tunnel.take_connection() {
            let message = message.to_string();
            self.tasks
                .spawn(async move { c.mux.close(reason, &message).await });
        }
        Some(tunnel)
    }

    fn list_now(&self, owner: KeyId) -> Vec<Arc<Tunnel>> {
        let mut v: Vec<_> = self
            .tunnels
            .iter()
            .filter(|t| t.owner == owner)
            .map(|t| t.clone())
            .collect();
        v.sort_by_key(|t| t.created_at);
        v
    }

    fn expire_now(&self, now: DateTime<Utc>) -> Vec<String> {
        let expired: Vec<String> = self
            .tunnels
            .iter()
            .filter(|t| t.is_expired(now))
            .map(|t| t.id.clone())
            .collect();
        for id in &expired {
            self.remove_now(id, GoodbyeReason::Expired, "the tunnel's lifetime ended");
            tracing::info!(tunnel = %id, "tunnel expired");
        }
        expired
    }
}

impl TunnelRegistry for MemoryRegistry {
    fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.get(id).map(|t| t.clone())
    }

    fn lookup<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(ready(Ok(self.get(id))))
    }

    fn create<'a>(
        &'a self,
        new: NewTunnel<'a>,
    ) -> BoxFuture<'a, Result<(Arc<Tunnel>, String), CreateError>> {
        Box::pin(ready(self.create_now(new)))
    }

    fn claim<'a>(
        &'a self,
        tunnel: &'a Arc<Tunnel>,
        mux: Mux,
        remote: SocketAddr,
    ) -> RegistryFuture<'a, Claim> {
        let (generation, replaced) = tunnel.attach(mux, remote);
        Box::pin(ready(Ok(Claim {
            generation,
            replaced,
        })))
    }

    fn release<'a>(&'a self, tunnel: &'a Arc<Tunnel>, generation: u64) -> RegistryFuture<'a, ()> {
        tunnel.detach(generation);
        Box::pin(ready(Ok(())))
    }

    fn list(&self, owner: KeyId) -> RegistryFuture<'_, Vec<Arc<Tunnel>>> {
        Box::pin(ready(Ok(self.list_now(owner))))
    }

    fn remove<'a>(
        &'a self,
        id: &'a str,
        reason: GoodbyeReason,
        message: &'a str,
    ) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(ready(Ok(self.remove_now(id, reason, message))))
    }

    fn expire(&self, now: DateTime<Utc>) -> RegistryFuture<'_, Vec<String>> {
        Box::pin(ready(Ok(self.expire_now(now))))
    }

    fn local(&self) -> Vec<Arc<Tunnel>> {
        self.tunnels.iter().map(|t| t.clone()).collect()
    }

    fn len(&self) -> usize {
        self.tunnels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::access::AccessPolicy;
    use crate::tunnel::registry::looks_like_id;
    use std::time::Duration;

    fn new_tunnel(owner: KeyId, name: Option<&str>, max_per_key: usize) -> NewTunnel<'_> {
        NewTunnel {
            owner,
            name,
            ttl: Duration::from_secs(60),
            max_per_key,
            access: AccessPolicy::default(),
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let r = MemoryRegistry::default();
        let (a, ta) = r.create_now(new_tunnel(0, None, 10)).expect("created");
        let (b, tb) = r.create_now(new_tunnel(0, None, 10)).expect("created");
        assert_ne!(a.id, b.id);
        assert!(looks_like_id(&a.id));
        assert!(a.token_matches(&ta) && !a.token_matches(&tb));
    }

    #[test]
    fn taken_names_and_limits() {
        let r = MemoryRegistry::default();
        r.create_now(new_tunnel(0, Some("demo"), 2))
            .expect("created");
        assert!(matches!(
            r.create_now(new_tunnel(1, Some("demo"), 2)),
            Err(CreateError::Taken(n)) if n == "demo"
        ));
        r.create_now(new_tunnel(0, None, 2)).expect("created");
        assert!(matches!(
            r.create_now(new_tunnel(0, None, 2)),
            Err(CreateError::TooMany(2))
        ));
        assert_eq!(r.list_now(0).len(), 2);
        assert_eq!(r.list_now(1).len(), 0);
    }

    #[tokio::test]
    async fn expired_tunnels_are_removed_and_reported() {
        let r = MemoryRegistry::default();
        let (t, _) = r
            .create_now(new_tunnel(0, Some("old"), 2))
            .expect("created");
        let ids = r.expire(t.expires_at).await.expect("in memory");
        assert_eq!(ids, ["old"]);
        assert!(r.get("old").is_none() && r.is_empty());
    }
}
