//! Custom domains in Redis: the binding of a verified domain to its tunnel
//! (`tunnel:dom:{domain}`, the `BIND_DOMAIN` and `UNBIND_DOMAIN` scripts), and the lookups of
//! every public request whose host is not ours, through the cache like tunnels.

use std::sync::Arc;

use chrono::Utc;

use super::cache::DomainHit;
use super::keys;
use super::shared::Shared;
use super::store::StoreError;
use super::stored::millis;
use crate::tunnel::record::Tunnel;
use crate::tunnel::registry::DomainBinding;

impl Shared {
    /// [`crate::tunnel::TunnelRegistry::get_by_domain`]: a fresh cached binding, to a tunnel
    /// this pod holds or has cached.
    pub(super) fn get_by_domain(&self, host: &str) -> Option<Arc<Tunnel>> {
        match self.cache.domain(host) {
            DomainHit::Fresh(Some(id)) => self.get(&id).filter(|t| routes(t, host)),
            DomainHit::Fresh(None) | DomainHit::Stale => None,
        }
    }

    /// [`crate::tunnel::TunnelRegistry::lookup_domain`]: the binding from the cache or Redis
    /// (one `GET`, the answer cached, "nowhere" too), then the tunnel it names.
    pub(super) async fn lookup_domain(
        &self,
        host: &str,
    ) -> Result<Option<Arc<Tunnel>>, StoreError> {
        let id = match self.cache.domain(host) {
            DomainHit::Fresh(id) => id,
            DomainHit::Stale => {
                let epoch = self.cache.epoch();
                let mut conn = self.store.conn()?;
                let read = redis::cmd("GET")
                    .arg(keys::domain(host))
                    .query_async::<Option<String>>(&mut conn)
                    .await;
                let id = self.store.check(read)?;
                self.cache.put_domain(host, id.clone(), epoch);
                id
            }
        };
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(self.lookup(&id).await?.filter(|t| routes(t, host)))
    }

    /// [`crate::tunnel::TunnelRegistry::bind_domain`]: the `BIND_DOMAIN` script.
    pub(super) async fn bind_domain(
        &self,
        tunnel: &Arc<Tunnel>,
    ) -> Result<DomainBinding, StoreError> {
        let Some(domain) = &tunnel.domain else {
            return Ok(DomainBinding::NoTunnel);
        };
        let mut conn = self.store.conn()?;
        let answer = self
            .scripts
            .bind_domain
            .key(keys::domain(&domain.name))
            .key(keys::tunnel(&tunnel.id))
            .arg(&tunnel.id)
            .arg(&domain.name)
            .arg(millis(Utc::now()))
            .invoke_async::<String>(&mut conn)
            .await;
        match self.store.check(answer)?.as_str() {
            "bound" => Ok(DomainBinding::Bound),
            "taken" => Ok(DomainBinding::Taken),
            "no_tunnel" => Ok(DomainBinding::NoTunnel),
            other => Err(StoreError::Corrupt(format!("bind domain: {other}"))),
        }
    }

    /// [`crate::tunnel::TunnelRegistry::unbind_domain`]: the `UNBIND_DOMAIN` script.
    pub(super) async fn unbind_domain(&self, tunnel: &Arc<Tunnel>) -> Result<(), StoreError> {
        let Some(domain) = &tunnel.domain else {
            return Ok(());
        };
        let mut conn = self.store.conn()?;
        let answer = self
            .scripts
            .unbind_domain
            .key(keys::domain(&domain.name))
            .key(keys::tunnel(&tunnel.id))
            .arg(&tunnel.id)
            .arg(&domain.name)
            .arg(millis(Utc::now()))
            .invoke_async::<i64>(&mut conn)
            .await;
        self.store.check(answer)?;
        Ok(())
    }
}

/// Whether `tunnel` is the one custom domain `host` may route to (it asked for it).
fn routes(tunnel: &Tunnel, host: &str) -> bool {
    tunnel.domain.as_ref().is_some_and(|d| d.name == host)
}

/// Brings the custom domain of the object this pod keeps for a tunnel in line with what Redis
/// says of its routing (another pod may have checked it).
pub(super) fn follow(object: &Tunnel, stored: &Tunnel) {
    let (Some(mine), Some(theirs)) = (&object.domain, &stored.domain) else {
        return;
    };
    let (_, _, routed) = mine.state();
    let (status, at, routed_there) = theirs.state();
    if routed != routed_there {
        mine.record(status, routed_there, at.unwrap_or_else(Utc::now));
    }
}
