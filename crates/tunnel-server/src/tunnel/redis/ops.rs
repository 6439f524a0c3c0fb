//! The operations behind the trait's methods: each a few commands or one script.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use super::bus::{close_tail, CloseReason};
use super::cache::Hit;
use super::domains;
use super::keys;
use super::shared::Shared;
use super::store::StoreError;
use super::stored::{self, access_json, millis, parse_lease, parse_tunnel, same_tunnel};
use crate::auth::KeyId;
use crate::tunnel::domain::CustomDomain;
use crate::tunnel::names::Standing;
use crate::tunnel::record::{Connection, Lease, Tunnel, TunnelInfo};
use crate::tunnel::registry::{generate_id, Claim, CreateError, NewTunnel};
use crate::tunnel::urls::PublicUrls;

type Fields = HashMap<String, String>;

/// A tunnel as read from Redis: the object this pod uses for it, its counters there, its
/// lease.
struct Read {
    tunnel: Arc<Tunnel>,
    counters: [u64; 3],
    lease: Option<Lease>,
}

impl Shared {
    /// The tunnel object for what Redis holds of `id`: the one this pod already has if it is the
    /// same tunnel (its identity is what the client session and the counters hang on), with
    /// its lease as now known.
    fn known(&self, id: &str, tunnel: &Fields, lease: &Fields) -> Result<Option<Read>, StoreError> {
        let Some(stored) = parse_tunnel(id, tunnel, &self.keys)? else {
            return Ok(None);
        };
        if stored.tunnel.is_expired(Utc::now()) {
            return Ok(None);
        }
        let lease = parse_lease(lease)?;
        let cached = match self.cache.get(id) {
            Hit::Fresh(t) | Hit::Stale(t) => t,
        };
        let existing = self.local.get(id).map(|t| t.clone()).or(cached);
        let object = match existing {
            Some(e) if same_tunnel(&e, &stored.tunnel) => {
                domains::follow(&e, &stored.tunnel);
                e
            }
            _ => Arc::new(stored.tunnel),
        };
        if object.connection().is_none() {
            let elsewhere = lease.clone().filter(|l| l.node != self.node);
            object.set_remote(stored::shared(elsewhere));
        }
        self.seen(&object);
        Ok(Some(Read {
            tunnel: object,
            counters: stored.counters,
            lease,
        }))
    }

    /// Reads `id` from Redis (one round trip) and caches the answer.
    async fn read(&self, id: &str) -> Result<Option<Read>, StoreError> {
        let epoch = self.cache.epoch();
        let mut conn = self.store.conn()?;
        let query = redis::pipe()
            .hgetall(keys::tunnel(id))
            .hgetall(keys::lease(id))
            .query_async::<(Fields, Fields)>(&mut conn)
            .await;
        let (tunnel, lease) = self.store.check(query)?;
        let read = self.known(id, &tunnel, &lease)?;
        self.cache
            .put(id, read.as_ref().map(|r| r.tunnel.clone()), epoch);
        Ok(read)
    }

    /// [`crate::tunnel::TunnelRegistry::lookup`].
    pub(super) async fn lookup(&self, id: &str) -> Result<Option<Arc<Tunnel>>, StoreError> {
        if let Some(t) = self.local_live(id) {
            return Ok(Some(t));
        }
        if let Hit::Fresh(t) = self.cache.get(id) {
            return Ok(t);
        }
        Ok(self.read(id).await?.map(|r| r.tunnel))
    }

    /// [`crate::tunnel::TunnelRegistry::lookup_fresh`]: a live session here, or Redis.
    pub(super) async fn lookup_fresh(&self, id: &str) -> Result<Option<Arc<Tunnel>>, StoreError> {
        if let Some(t) = self.local_live(id) {
            return Ok(Some(t));
        }
        Ok(self.read(id).await?.map(|r| r.tunnel))
    }

    /// [`crate::tunnel::TunnelRegistry::create`]: the `CREATE` script (which decides the
    /// name's and the domain's holders too), under a new random id until one is free.
    pub(super) async fn create(
        &self,
        new: NewTunnel<'_>,
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
        let now = Utc::now();
        // The rules every pod has from its configuration; who holds the name is Redis's.
        let reserved_for_owner = match name {
            Some(name) => self.names.check_rules(name, owner)? == Standing::ReservedForOwner,
            None => false,
        };
        let owner_key = self.fingerprint(owner)?;
        let token = crate::auth::generate_secret();
        let digest = crate::auth::SecretHash::of(&token).to_hex();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let expires = now + ttl;
        let name_until = self.names.policy().grace_until(expires);
        let rules = access_json(&access, keep_prefix, tcp.as_ref());
        let (host, txt) = domain
            .as_ref()
            .map_or(("", ""), |d| (d.name.as_str(), d.expected.as_str()));
        for _ in 0..16 {
            let id = name.map_or_else(generate_id, str::to_string);
            if name.is_none() && !self.names.may_issue_by_rules(&id) {
                continue;
            }
            let mut conn = self.store.conn()?;
            let answer = self
                .scripts
                .create
                .key(keys::tunnel(&id))
                .key(keys::owner(&owner_key))
                .key(keys::tombstone(&id))
                .key(keys::name(&id))
                .key(keys::domain(host))
                .arg(millis(now))
                .arg(millis(expires))
                .arg(&owner_key)
                .arg(&digest)
                .arg(&rules)
                .arg(max_per_key)
                .arg(&id)
                .arg(millis(name_until))
                .arg(if name.is_none() { "1" } else { "0" })
                .arg(if reserved_for_owner { "1" } else { "0" })
                .arg(host)
                .arg(txt)
                .invoke_async::<String>(&mut conn)
                .await;
            match self.store.check(answer)?.as_str() {
                "ok" => {
                    let domain = domain.map(|d| CustomDomain::new(d.name, d.expected));
                    let tunnel = Tunnel::new(id, owner, &token, now, expires, access, domain)
                        .with_keep_prefix(keep_prefix)
                        .with_tcp(tcp);
                    return Ok((self.created(tunnel), token));
                }
                "taken" if name.is_some() => return Err(CreateError::Taken(id)),
                // A live tunnel, or a name in someone's grace period: never handed out.
                "taken" => continue,
                "held" => return Err(CreateError::Held(id)),
                "domain_taken" => return Err(CreateError::DomainTaken(host.to_string())),
                "too_many" => return Err(CreateError::TooMany(max_per_key)),
                other => return Err(StoreError::Corrupt(format!("create: {other}")).into()),
            }
        }
        // 16 collisions in a space of 36^9 ids means the registry is absurdly full.
        Err(CreateError::TooMany(max_per_key))
    }

    /// The object of a tunnel just created. A lookup just before (the take-over check looks
    /// the name up) may have cached that there is no such tunnel, and the script's hint
    /// reaches our subscriber only later: its client, connecting at once, would be refused.
    fn created(&self, tunnel: Tunnel) -> Arc<Tunnel> {
        let tunnel = Arc::new(tunnel);
        self.seen(&tunnel);
        self.cache.forget(&tunnel.id);
        tunnel
    }

    fn fingerprint(&self, owner: KeyId) -> Result<String, StoreError> {
        self.keys
            .fingerprint(owner)
            .ok_or_else(|| StoreError::Corrupt(format!("no API key {owner}")))
    }

    /// [`crate::tunnel::TunnelRegistry::claim`]: the `CLAIM` script, then the session here.
    pub(super) async fn claim(
        &self,
        tunnel: &Arc<Tunnel>,
        mux: ServerMux,
        remote: SocketAddr,
    ) -> Result<Claim, StoreError> {
        let id = &tunnel.id;
        let mut conn = self.store.conn()?;
        let reply = self
            .scripts
            .claim
            .key(keys::tunnel(id))
            .key(keys::lease(id))
            .key(keys::GENERATION)
            .arg(&self.node)
            .arg(&self.peer)
            .arg(self.lease_ms())
            .arg(millis(Utc::now()))
            .arg(remote.ip().to_string())
            .arg(id)
            .invoke_async::<(u64, Option<String>, Option<u64>)>(&mut conn)
            .await;
        let (generation, previous, _) = self.store.check(reply)?;
        if generation == 0 {
            // Deleted meanwhile: the session is attached (so that it can be closed) but not
            // registered, so the client endpoint sees the tunnel gone and says so.
            self.cache.forget(id);
            let replaced = tunnel.attach_as(0, mux, remote);
            return Ok(Claim {
                generation,
                replaced,
            });
        }
        let replaced = tunnel.attach_as(generation, mux, remote);
        if let Some(before) = self.local.insert(id.clone(), tunnel.clone()) {
            if !Arc::ptr_eq(&before, tunnel) {
                if let Some(c) = before.take_connection() {
                    self.close(c, CloseReason::Replaced);
                }
            }
        }
        self.seen(tunnel);
        if previous.as_deref().is_some_and(|p| p != self.node) {
            tracing::info!(tunnel = %id, from = ?previous, generation, "took over the tunnel from another pod");
        }
        Ok(Claim {
            generation,
            replaced,
        })
    }

    /// Closes a client session here, on the registry's task tracker.
    pub(super) fn close(&self, connection: Connection, reason: CloseReason) {
        self.close_saying(connection, reason, None);
    }

    /// [`Self::close`] with the goodbye's text, if the registry gave one.
    pub(super) fn close_saying(
        &self,
        connection: Connection,
        reason: CloseReason,
        message: Option<String>,
    ) {
        let replaced = reason == CloseReason::Replaced;
        let (reason, default) = reason.goodbye();
        let message = message.unwrap_or_else(|| default.to_string());
        self.tasks.spawn(async move {
            match replaced {
                true => connection.close_replaced(&message).await,
                false => connection.mux.close(reason, &message).await,
            }
        });
    }

    pub(super) fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// [`crate::tunnel::TunnelRegistry::release`]: the session here ends, and the lease with it
    /// if it is still this session's (`RELEASE`, compare-and-set). With Redis down, the lease
    /// simply lapses.
    pub(super) async fn release(
        &self,
        tunnel: &Arc<Tunnel>,
        generation: u64,
    ) -> Result<(), StoreError> {
        if tunnel.detach(generation) {
            self.local
                .remove_if(&tunnel.id, |_, t| Arc::ptr_eq(t, tunnel));
        }
        if generation == 0 {
            return Ok(());
        }
        let mut conn = self.store.conn()?;
        let released = self
            .scripts
            .release
            .key(keys::lease(&tunnel.id))
            .arg(generation)
            .arg(&tunnel.id)
            .invoke_async::<i64>(&mut conn)
            .await;
        if self.store.check(released)? == 0 {
            tracing::debug!(tunnel = %tunnel.id, generation, "lease already claimed anew");
        }
        Ok(())
    }

    /// [`crate::tunnel::TunnelRegistry::list`]: the owner's index, then every tunnel and lease
    /// in one pipeline.
    pub(super) async fn list(&self, owner: KeyId) -> Result<Vec<Arc<Tunnel>>, StoreError> {
        let mut conn = self.store.conn()?;
        let index = redis::cmd("ZRANGE")
            .arg(keys::owner(&self.fingerprint(owner)?))
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(&mut conn)
            .await;
        let ids = self.store.check(index)?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys::tunnel(id)).hgetall(keys::lease(id));
        }
        let fields = self
            .store
            .check(pipe.query_async::<Vec<Fields>>(&mut conn).await)?;
        let mut tunnels = Vec::new();
        for (id, pair) in ids.iter().zip(fields.chunks(2)) {
            if let [tunnel, lease] = pair {
                if let Some(read) = self.known(id, tunnel, lease)? {
                    tunnels.push(read.tunnel);
                }
            }
        }
        tunnels.retain(|t| t.owner == owner);
        tunnels.sort_by_key(|t| t.created_at);
        Ok(tunnels)
    }

    /// [`crate::tunnel::TunnelRegistry::remove`]: the `REMOVE` script (which tells the pod
    /// holding the client), and the client closed here if it is here.
    pub(super) async fn remove(
        &self,
        id: &str,
        reason: GoodbyeReason,
        message: &str,
    ) -> Result<Option<Arc<Tunnel>>, StoreError> {
        let found = self.lookup(id).await?;
        let mut conn = self.store.conn()?;
        let removed = self
            .scripts
            .remove
            .key(keys::tunnel(id))
            .key(keys::lease(id))
            .key(keys::tombstone(id))
            .key(keys::name(id))
            .arg(id)
            .arg(keys::TOMBSTONE_MS)
            .arg(match reason {
                GoodbyeReason::Replaced => close_tail(CloseReason::Replaced, message),
                _ => close_tail(CloseReason::Deleted, message),
            })
            .arg(self.grace_ms(id))
            .invoke_async::<Vec<Option<String>>>(&mut conn)
            .await;
        let existed = !self.store.check(removed)?.is_empty();
        if let Some((_, t)) = self.local.remove(id) {
            if let Some(c) = t.take_connection() {
                let message = message.to_string();
                self.tasks
                    .spawn(async move { c.mux.close(reason, &message).await });
            }
        }
        self.cache.forget(id);
        self.unlabel(id);
        Ok(found.filter(|_| existed))
    }

    /// [`crate::tunnel::TunnelRegistry::expire`]: the clients of expired tunnels here are
    /// closed (Redis forgets the tunnels by itself, `PEXPIREAT`), and labels of tunnels seen
    /// here that expired are dropped.
    pub(super) async fn expire(&self, now: DateTime<Utc>) -> Vec<String> {
        let expired: Vec<Arc<Tunnel>> = self
            .local
            .iter()
            .filter(|t| t.is_expired(now))
            .map(|t| t.clone())
            .collect();
        let mut ids = Vec::new();
        for t in expired {
            self.local.remove_if(&t.id, |_, x| Arc::ptr_eq(x, &t));
            if let Some(c) = t.take_connection() {
                self.tasks.spawn(async move {
                    c.mux
                        .close(GoodbyeReason::Expired, "the tunnel's lifetime ended")
                        .await
                });
            }
            tracing::info!(tunnel = %t.id, "tunnel expired");
            ids.push(t.id.clone());
        }
        let lapsed: Vec<String> = self
            .labelled
            .iter()
            .filter(|e| *e.value() <= now)
            .map(|e| e.key().clone())
            .collect();
        for id in lapsed {
            self.unlabel(&id);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.cache.trim();
        ids
    }

    /// [`crate::tunnel::TunnelRegistry::relocate`]: reads again, and waits for a hint naming
    /// `id` while the lease is still `stale` (or none), until `wait` is over.
    pub(super) async fn relocate(
        &self,
        id: &str,
        stale: Option<&Lease>,
        wait: Duration,
    ) -> Result<Option<Arc<Tunnel>>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut hints = self.changes.subscribe();
        loop {
            let Some(read) = self.read(id).await? else {
                return Ok(None);
            };
            let t = read.tunnel;
            let moved = t.connection().is_some()
                || t.remote()
                    .is_some_and(|l| stale.is_none_or(|s| s.generation != l.generation));
            if moved || tokio::time::Instant::now() >= deadline {
                return Ok(Some(t));
            }
            let hint = async {
                loop {
                    match hints.recv().await {
                        Ok(named) if named == id => return,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            if tokio::time::timeout_at(deadline, hint).await.is_err() {
                return Ok(self.read(id).await?.map(|r| r.tunnel));
            }
        }
    }

    /// [`crate::tunnel::TunnelRegistry::describe`]: counters and leases as Redis has them now,
    /// plus what this pod counted and has not flushed yet.
    pub(super) async fn describe(
        &self,
        tunnels: &[Arc<Tunnel>],
        urls: &PublicUrls,
    ) -> Result<Vec<TunnelInfo>, StoreError> {
        let mut conn = self.store.conn()?;
        let mut pipe = redis::pipe();
        for t in tunnels {
            pipe.hgetall(keys::tunnel(&t.id))
                .hgetall(keys::lease(&t.id));
        }
        let fields = self
            .store
            .check(pipe.query_async::<Vec<Fields>>(&mut conn).await)?;
        let mut infos = Vec::with_capacity(tunnels.len());
        for (t, pair) in tunnels.iter().zip(fields.chunks(2)) {
            let [tunnel_fields, lease_fields] = pair else {
                continue;
            };
            let read = self.known(&t.id, tunnel_fields, lease_fields)?;
            let mut info = t.info(urls);
            let Some(read) = read else {
                infos.push(info);
                continue;
            };
            let pending = self.unflushed(&t.id);
            info.requests_served = read.counters[0] + pending[0];
            info.bytes_in = read.counters[1] + pending[1];
            info.bytes_out = read.counters[2] + pending[2];
            if t.connection().is_some() {
                info.node = Some(self.node.clone());
            } else if let Some(lease) = read.lease {
                info.connected = true;
                info.connected_since = Some(lease.since);
                info.client_addr = lease.client_addr;
                info.open_streams = lease.open_streams;
                info.node = Some(lease.node);
            } else {
                info.connected = false;
                info.connected_since = None;
                info.client_addr = None;
                info.open_streams = 0;
                info.node = None;
            }
            infos.push(info);
        }
        Ok(infos)
    }

    /// How long a removed tunnel's name stays its key's, in milliseconds: the grace period,
    /// none for a reserved name (it is its key's for good anyway).
    fn grace_ms(&self, id: &str) -> u64 {
        if self.names.is_reserved(id) {
            return 0;
        }
        u64::try_from(self.names.policy().grace.as_millis()).unwrap_or(u64::MAX)
    }

    /// What this pod counted for `id` and has not added to Redis yet.
    pub(super) fn unflushed(&self, id: &str) -> [u64; 3] {
        let mut sum = [0u64; 3];
        for c in self.counted.iter().filter(|c| c.tunnel.id == id) {
            let now = counters(&c.tunnel);
            for i in 0..3 {
                sum[i] += now[i].saturating_sub(c.flushed[i]);
            }
        }
        sum
    }
}

/// A tunnel object's counters: requests, bytes in, bytes out.
pub(super) fn counters(t: &Tunnel) -> [u64; 3] {
    let s = &t.stats;
    [
        s.requests.load(Ordering::Relaxed),
        s.bytes_in.load(Ordering::Relaxed),
        s.bytes_out.load(Ordering::Relaxed),
    ]
}
