//! The in-memory registry: tunnels in a `DashMap`, gone with the process. The first
//! [`TunnelRegistry`]; every operation completes at once.

use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use super::domain::CustomDomain;
use super::names::{NameBook, NamePolicy};
use super::record::Tunnel;
use super::registry::{
    generate_id, Claim, CreateError, DomainBinding, NewTunnel, RegistryEvents, RegistryFuture,
    TunnelRegistry,
};
use crate::auth::KeyId;

/// All tunnels of this process, by id.
///
/// Lock order: an entry of `tunnels` may be held while `names` or `domains` is touched,
/// never the other way round.
#[derive(Debug)]
pub struct MemoryRegistry {
    tunnels: DashMap<String, Arc<Tunnel>>,
    /// Reservations and grace periods.
    names: NameBook,
    /// Verified custom domains, by host.
    domains: DashMap<String, Arc<Tunnel>>,
    /// Told of every tunnel that comes and goes.
    events: Arc<dyn RegistryEvents>,
    /// Where the closing of a removed tunnel's client connection runs (shutdown waits for it).
    tasks: TaskTracker,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new(Arc::new(()), TaskTracker::new(), NamePolicy::default())
    }
}

impl MemoryRegistry {
    /// An empty registry that tells `events` of every tunnel that comes and goes, closes
    /// removed tunnels' client connections on `tasks`, and gives names out under `names`.
    pub fn new(events: Arc<dyn RegistryEvents>, tasks: TaskTracker, names: NamePolicy) -> Self {
        Self {
            tunnels: DashMap::new(),
            names: NameBook::new(names),
            domains: DashMap::new(),
            events,
            tasks,
        }
    }

    fn create_now(
        &self,
        new: NewTunnel<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Arc<Tunnel>, String), CreateError> {
        let NewTunnel {
            owner,
            name,
            ttl,
            max_per_key,
            access,
            domain,
            keep_prefix,
            tcp,
        } = new;
        if let Some(name) = name {
            self.names.check_requested(name, owner, now)?;
        }
        if let Some(d) = &domain {
            if self.domains.contains_key(&d.name) {
                return Err(CreateError::DomainTaken(d.name.clone()));
            }
        }
        let held = self.tunnels.iter().filter(|t| t.owner == owner).count();
        if held >= max_per_key {
            return Err(CreateError::TooMany(max_per_key));
        }
        let token = crate::auth::generate_secret();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let mut domain = domain;
        for _ in 0..16 {
            let id = match name {
                Some(n) => n.to_string(),
                None => generate_id(),
            };
            if name.is_none() && !self.names.may_issue(&id, now) {
                continue;
            }
            match self.tunnels.entry(id.clone()) {
                Entry::Occupied(_) if name.is_some() => return Err(CreateError::Taken(id)),
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => {
                    // Again, under the entry's lock: a tunnel of this name removed since the
                    // first check has begun its grace period before it left the map.
                    if name.is_some() {
                        self.names.check_requested(&id, owner, now)?;
                    } else if !self.names.may_issue(&id, now) {
                        continue;
                    }
                    // Before the insert: a removal can only follow it, never precede it.
                    self.events.registered(&id);
                    let tunnel = Tunnel::new(
                        id.clone(),
                        owner,
                        &token,
                        now,
                        now + ttl,
                        access.clone(),
                        domain.take().map(|d| CustomDomain::new(d.name, d.expected)),
                    )
                    .with_keep_prefix(keep_prefix)
                    .with_tcp(tcp);
                    let tunnel = Arc::new(tunnel);
                    slot.insert(tunnel.clone());
                    self.names.taken(&id, owner);
                    return Ok((tunnel, token));
                }
            }
        }
        // 16 collisions in a space of 36^9 ids means the registry is absurdly full.
        Err(CreateError::TooMany(self.tunnels.len()))
    }

    fn remove_now(&self, id: &str, reason: GoodbyeReason, message: &str) -> Option<Arc<Tunnel>> {
        let owner = self.tunnels.get(id)?.owner;
        // The grace period begins before the tunnel leaves the map, so that no create can
        // slip in between and find the name free.
        self.names.release(id, owner, Utc::now());
        let (_, tunnel) = self.tunnels.remove(id)?;
        self.events.removed(id);
        self.unbind_now(&tunnel);
        if let Some(c) = tunnel.take_connection() {
            let message = message.to_string();
            self.tasks
                .spawn(async move { c.mux.close(reason, &message).await });
        }
        Some(tunnel)
    }

    fn bind_now(&self, tunnel: &Arc<Tunnel>) -> DomainBinding {
        let Some(domain) = &tunnel.domain else {
            return DomainBinding::NoTunnel;
        };
        let binding = match self.domains.entry(domain.name.clone()) {
            Entry::Occupied(e) if Arc::ptr_eq(e.get(), tunnel) => DomainBinding::Bound,
            Entry::Occupied(_) => DomainBinding::Taken,
            Entry::Vacant(slot) => {
                slot.insert(tunnel.clone());
                DomainBinding::Bound
            }
        };
        // Removed meanwhile: its removal may have run before the insert, so undo it here.
        let live = self
            .tunnels
            .get(&tunnel.id)
            .is_some_and(|t| Arc::ptr_eq(&t, tunnel));
        if !live {
            self.unbind_now(tunnel);
            return DomainBinding::NoTunnel;
        }
        binding
    }

    fn unbind_now(&self, tunnel: &Arc<Tunnel>) {
        if let Some(domain) = &tunnel.domain {
            self.domains
                .remove_if(&domain.name, |_, t| Arc::ptr_eq(t, tunnel));
        }
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
        let forgotten = self.names.sweep(now);
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                held = self.names.held(),
                "name grace periods over"
            );
        }
        expired
    }
}

impl TunnelRegistry for MemoryRegistry {
    fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.get(id).map(|t| t.clone())
    }

    fn get_by_domain(&self, host: &str) -> Option<Arc<Tunnel>> {
        self.domains.get(host).map(|t| t.clone())
    }

    fn lookup<'a>(&'a self, id: &'a str) -> RegistryFuture<'a, Option<Arc<Tunnel>>> {
        Box::pin(ready(Ok(self.get(id))))
    }

    fn create<'a>(
        &'a self,
        new: NewTunnel<'a>,
    ) -> BoxFuture<'a, Result<(Arc<Tunnel>, String), CreateError>> {
        Box::pin(ready(self.create_now(new, Utc::now())))
    }

    fn reserve<'a>(
        &'a self,
        name: &'a str,
        owner: KeyId,
    ) -> BoxFuture<'a, Result<(), CreateError>> {
        Box::pin(ready(self.names.reserve(name, owner)))
    }

    fn bind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, DomainBinding> {
        Box::pin(ready(Ok(self.bind_now(tunnel))))
    }

    fn unbind_domain<'a>(&'a self, tunnel: &'a Arc<Tunnel>) -> RegistryFuture<'a, ()> {
        self.unbind_now(tunnel);
        Box::pin(ready(Ok(())))
    }

    fn claim<'a>(
        &'a self,
        tunnel: &'a Arc<Tunnel>,
        mux: ServerMux,
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
            domain: None,
            keep_prefix: false,
            tcp: None,
        }
    }

    fn create(
        r: &MemoryRegistry,
        new: NewTunnel<'_>,
    ) -> Result<(Arc<Tunnel>, String), CreateError> {
        r.create_now(new, Utc::now())
    }

    #[test]
    fn a_deleted_name_stays_with_its_key_for_the_grace_period() {
        let policy = NamePolicy::new([], Duration::from_secs(3600));
        let r = MemoryRegistry::new(Arc::new(()), TaskTracker::new(), policy);
        create(&r, new_tunnel(0, Some("demo"), 5)).expect("created");
        assert!(r
            .remove_now("demo", GoodbyeReason::Deleted, "bye")
            .is_some());
        assert!(matches!(
            create(&r, new_tunnel(1, Some("demo"), 5)),
            Err(CreateError::Held(n)) if n == "demo"
        ));
        create(&r, new_tunnel(0, Some("demo"), 5)).expect("its own key takes it back");
        r.remove_now("demo", GoodbyeReason::Deleted, "bye");
        let later = Utc::now() + chrono::Duration::seconds(3601);
        r.create_now(new_tunnel(1, Some("demo"), 5), later)
            .expect("free once the grace period is over");
    }

    #[test]
    fn verified_domains_route_to_one_tunnel_until_removed() {
        use crate::tunnel::registry::NewDomain;
        let d = |v: &str| {
            Some(NewDomain {
                name: "app.example.org".into(),
                expected: v.into(),
            })
        };
        let r = MemoryRegistry::default();
        let mut new = new_tunnel(0, Some("one"), 5);
        new.domain = d("v");
        let (one, _) = create(&r, new).expect("created");
        let mut new = new_tunnel(1, Some("two"), 5);
        new.domain = d("w");
        let (two, _) = create(&r, new).expect("pending domains do not block each other");
        assert!(r.get_by_domain("app.example.org").is_none());
        assert_eq!(r.bind_now(&one), DomainBinding::Bound);
        assert_eq!(r.bind_now(&two), DomainBinding::Taken);
        assert_eq!(
            r.get_by_domain("app.example.org").map(|t| t.id.clone()),
            Some("one".into())
        );
        let mut new = new_tunnel(1, Some("three"), 5);
        new.domain = d("w");
        assert!(matches!(create(&r, new), Err(CreateError::DomainTaken(_))));
        r.remove_now("one", GoodbyeReason::Deleted, "bye");
        assert!(r.get_by_domain("app.example.org").is_none());
        assert_eq!(r.bind_now(&two), DomainBinding::Bound);
        r.unbind_now(&two);
        assert!(r.get_by_domain("app.example.org").is_none());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let r = MemoryRegistry::default();
        let (a, ta) = create(&r, new_tunnel(0, None, 10)).expect("created");
        let (b, tb) = create(&r, new_tunnel(0, None, 10)).expect("created");
        assert_ne!(a.id, b.id);
        assert!(looks_like_id(&a.id));
        assert!(a.token_matches(&ta) && !a.token_matches(&tb));
    }

    #[test]
    fn taken_names_and_limits() {
        let r = MemoryRegistry::default();
        create(&r, new_tunnel(0, Some("demo"), 2)).expect("created");
        assert!(matches!(
            create(&r, new_tunnel(1, Some("demo"), 2)),
            Err(CreateError::Taken(n)) if n == "demo"
        ));
        create(&r, new_tunnel(0, None, 2)).expect("created");
        assert!(matches!(
            create(&r, new_tunnel(0, None, 2)),
            Err(CreateError::TooMany(2))
        ));
        assert_eq!(r.list_now(0).len(), 2);
        assert_eq!(r.list_now(1).len(), 0);
    }

    #[tokio::test]
    async fn expired_tunnels_are_removed_and_reported() {
        let r = MemoryRegistry::default();
        let (t, _) = create(&r, new_tunnel(0, Some("old"), 2)).expect("created");
        let ids = r.expire(t.expires_at).await.expect("in memory");
        assert_eq!(ids, ["old"]);
        assert!(r.get("old").is_none() && r.is_empty());
    }
}
