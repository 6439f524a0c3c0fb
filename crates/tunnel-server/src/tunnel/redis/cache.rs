//! Lookups of tunnels whose client is not here, kept for a moment: a public request for a
//! tunnel held by another pod should not cost a round trip to Redis each time.
//!
//! An entry lives [`Cache::ttl`] (`TUNNEL_CACHE_SECS`, a miss half of it), and goes at once
//! when `tunnel:changed` names its tunnel. Custom domains are cached the same way, as the id they route to (so that the
//! tunnel itself is always the one the id's entry or this pod's session holds), and go when
//! `tunnel:changed` names the domain (`@domain`). The cache is used only while the pod is subscribed to that channel (a hint
//! missed while reconnecting could leave an entry wrong for its whole life otherwise), and an
//! answer fetched while a hint arrived is not kept ([`Cache::epoch`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::tunnel::record::Tunnel;

#[derive(Debug)]
struct Entry {
    /// `None`: there is no such tunnel.
    tunnel: Option<Arc<Tunnel>>,
    at: Instant,
}

/// A custom domain's binding, as last read.
#[derive(Debug)]
struct DomainEntry {
    /// `None`: the domain routes nowhere.
    id: Option<String>,
    at: Instant,
}

/// The cache. See the module documentation.
#[derive(Debug)]
pub(super) struct Cache {
    /// How long a found tunnel (or domain binding) is believed without asking again
    /// (`TUNNEL_CACHE_SECS`): kept short, since a hint lost while the subscriber still
    /// believes itself subscribed (see the module documentation) leaves an entry wrong this
    /// long.
    ttl: Duration,
    /// How long "no such tunnel" is believed: half of `ttl`, since a tunnel about to be
    /// created is looked up (by its client, by a user trying its URL) more often than one
    /// about to go.
    miss_ttl: Duration,
    entries: DashMap<String, Entry>,
    domains: DashMap<String, DomainEntry>,
    /// Bumped by every hint: an answer fetched across a bump is not kept.
    epoch: AtomicU64,
    /// Whether the subscriber is listening now.
    subscribed: AtomicBool,
}

/// What the cache knows of a custom domain.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DomainHit {
    /// A recent answer: the id it routes to, or that it routes nowhere.
    Fresh(Option<String>),
    /// Nothing recent.
    Stale,
}

/// What the cache knows of an id.
#[derive(Debug)]
pub(super) enum Hit {
    /// A recent answer: the tunnel, or that there is none.
    Fresh(Option<Arc<Tunnel>>),
    /// Nothing recent; the object last cached, if any, to keep its identity.
    Stale(Option<Arc<Tunnel>>),
}

impl Cache {
    /// An empty cache keeping answers `ttl` (misses half of it), not caching until
    /// [`Cache::reset`] says the subscriber listens.
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            miss_ttl: ttl / 2,
            entries: DashMap::new(),
            domains: DashMap::new(),
            epoch: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
        }
    }

    /// The epoch to hand to [`Cache::put`] for an answer fetched from now on.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// What is cached for `id`.
    pub(super) fn get(&self, id: &str) -> Hit {
        let Some(e) = self.entries.get(id) else {
            return Hit::Stale(None);
        };
        let ttl = if e.tunnel.is_some() {
            self.ttl
        } else {
            self.miss_ttl
        };
        if self.subscribed.load(Ordering::Acquire) && e.at.elapsed() < ttl {
            Hit::Fresh(e.tunnel.clone())
        } else {
            Hit::Stale(e.tunnel.clone())
        }
    }

    /// Keeps an answer fetched at `epoch`, unless a hint came since.
    pub(super) fn put(&self, id: &str, tunnel: Option<Arc<Tunnel>>, epoch: u64) {
        if !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let entry = Entry {
            tunnel,
            at: Instant::now(),
        };
        self.entries.insert(id.to_string(), entry);
        // A hint between the fetch and the insert: the answer may predate it.
        if self.epoch() != epoch {
            self.entries.remove(id);
        }
    }

    /// Forgets `id` (a hint named it).
    pub(super) fn forget(&self, id: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(id);
    }

    /// What is cached for custom domain `host`.
    pub(super) fn domain(&self, host: &str) -> DomainHit {
        let Some(e) = self.domains.get(host) else {
            return DomainHit::Stale;
        };
        let ttl = if e.id.is_some() {
            self.ttl
        } else {
            self.miss_ttl
        };
        if self.subscribed.load(Ordering::Acquire) && e.at.elapsed() < ttl {
            DomainHit::Fresh(e.id.clone())
        } else {
            DomainHit::Stale
        }
    }

    /// Keeps a domain's binding read at `epoch`, unless a hint came since.
    pub(super) fn put_domain(&self, host: &str, id: Option<String>, epoch: u64) {
        if !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let entry = DomainEntry {
            id,
            at: Instant::now(),
        };
        self.domains.insert(host.to_string(), entry);
        if self.epoch() != epoch {
            self.domains.remove(host);
        }
    }

    /// Forgets custom domain `host` (a hint named it).
    pub(super) fn forget_domain(&self, host: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.domains.remove(host);
    }

    /// Forgets everything, and whether to cache from now on (the subscriber connected, or
    /// lost its connection).
    pub(super) fn reset(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.domains.clear();
    }

    /// Drops old entries, so that memory follows what is asked now.
    pub(super) fn trim(&self) {
        let keep = self.ttl * 4;
        self.entries.retain(|_, e| e.at.elapsed() < keep);
        self.domains.retain(|_, e| e.at.elapsed() < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::access::AccessPolicy;
    use chrono::Utc;

    fn tunnel(id: &str) -> Arc<Tunnel> {
        let now = Utc::now();
        Arc::new(Tunnel::new(
            id.into(),
            0,
            "t",
            now,
            now,
            AccessPolicy::default(),
            None,
        ))
    }

    #[test]
    fn entries_are_kept_only_while_subscribed_and_until_a_hint() {
        let c = Cache::new(Duration::from_secs(2));
        c.put("a", Some(tunnel("a")), c.epoch());
        assert!(matches!(c.get("a"), Hit::Stale(None)), "not subscribed");
        c.reset(true);
        c.put("a", Some(tunnel("a")), c.epoch());
        assert!(matches!(c.get("a"), Hit::Fresh(Some(_))));
        let before = c.epoch();
        c.forget("a");
        assert!(matches!(c.get("a"), Hit::Stale(None)));
        c.put("a", Some(tunnel("a")), before);
        assert!(
            matches!(c.get("a"), Hit::Stale(None)),
            "fetched across a hint"
        );
        c.put("b", None, c.epoch());
        assert!(matches!(c.get("b"), Hit::Fresh(None)));
        c.reset(false);
        assert!(matches!(c.get("b"), Hit::Stale(None)));
    }

    #[test]
    fn domains_are_kept_as_ids_until_a_hint() {
        let c = Cache::new(Duration::from_secs(2));
        c.reset(true);
        c.put_domain("app.example.com", Some("a".into()), c.epoch());
        assert_eq!(
            c.domain("app.example.com"),
            DomainHit::Fresh(Some("a".into()))
        );
        let before = c.epoch();
        c.forget_domain("app.example.com");
        assert_eq!(c.domain("app.example.com"), DomainHit::Stale);
        c.put_domain("app.example.com", None, before);
        assert_eq!(
            c.domain("app.example.com"),
            DomainHit::Stale,
            "read across a hint"
        );
        c.put_domain("other.example.com", None, c.epoch());
        assert_eq!(c.domain("other.example.com"), DomainHit::Fresh(None));
    }
}
