//! Custom domains: what a create request's `domain` must be, the check of its TXT record
//! (on create, on `POST /api/tunnels/{id}/domain/verify` (a handler in [`super::api`]), and every
//! `TUNNEL_DOMAIN_RECHECK_SECS` for every domain), and the routing that follows from it.
//!
//! A found record binds the domain in the registry; a record that is gone or holds another
//! value unbinds it at once; a failed lookup changes nothing (see [`crate::dns`]).

use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;

use crate::auth::KeyId;
use crate::dns::{verification_value, TxtCheck};
use crate::edge::host::{parse_domain, HostClass};
use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::domain::DomainStatus;
use crate::tunnel::registry::{DomainBinding, NewDomain};
use crate::tunnel::Tunnel;

/// How many domains are checked at once by the periodic check.
const CONCURRENT_CHECKS: usize = 8;

/// Checks a requested custom domain and derives the TXT value that will prove it for `owner`.
pub(crate) fn new_domain(
    state: &AppState,
    owner: KeyId,
    requested: &str,
) -> Result<NewDomain, TunnelError> {
    let name = parse_domain(requested)
        .map_err(|e| TunnelError::Invalid(format!("invalid domain: {e}")))?;
    if !name.contains('.') {
        return Err(TunnelError::Invalid(format!(
            "invalid domain: {name:?} is not a full domain name"
        )));
    }
    if !matches!(state.hosts.classify(Some(&name)), HostClass::Foreign(_)) {
        return Err(TunnelError::Invalid(format!(
            "invalid domain: {name:?} is this server's own domain or under it; use --name"
        )));
    }
    let key = state
        .settings
        .api_keys
        .digest(owner)
        .ok_or(TunnelError::Unauthorized)?;
    Ok(NewDomain {
        expected: verification_value(key, &name),
        name,
    })
}

/// Checks `tunnel`'s custom domain now and routes by the result; returns what was found
/// (`None`: the tunnel has no custom domain).
pub async fn verify(state: &AppState, tunnel: &Arc<Tunnel>) -> Option<DomainStatus> {
    let domain = tunnel.domain.as_ref()?;
    let (_, _, was_routed) = domain.state();
    let found = match &state.verifier {
        Some(v) => v.check(&domain.record_name(), &domain.expected).await,
        None => Err(crate::dns::LookupFailed {
            name: domain.record_name(),
            detail: "no resolver (see the start-up log)".into(),
        }),
    };
    // Whether the domain routes here afterwards follows from what the registry answered (a
    // shared registry's lookup cache may not know yet).
    let (status, routed) = match found {
        Ok(TxtCheck::Found) => match state.registry.bind_domain(tunnel).await {
            Ok(DomainBinding::Bound) => (DomainStatus::Verified, true),
            Ok(DomainBinding::Taken) => (DomainStatus::Taken, false),
            Ok(DomainBinding::NoTunnel) => return Some(DomainStatus::Pending),
            Err(e) => {
                tracing::warn!(tunnel = %tunnel.id, domain = %domain.name, error = %e, "cannot route the custom domain");
                (DomainStatus::LookupFailed, was_routed)
            }
        },
        Ok(missing_or_wrong) => {
            let routed = match state.registry.unbind_domain(tunnel).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(tunnel = %tunnel.id, domain = %domain.name, error = %e, "cannot stop routing the custom domain");
                    was_routed
                }
            };
            let status = match missing_or_wrong {
                TxtCheck::Missing => DomainStatus::Missing,
                _ => DomainStatus::Mismatch,
            };
            (status, routed)
        }
        Err(e) => {
            tracing::warn!(tunnel = %tunnel.id, error = %e, "custom domain check inconclusive; routing unchanged");
            (DomainStatus::LookupFailed, was_routed)
        }
    };
    domain.record(status, routed, Utc::now());
    match (was_routed, routed) {
        (false, true) => {
            tracing::info!(tunnel = %tunnel.id, domain = %domain.name, "custom domain verified")
        }
        (true, false) => {
            tracing::info!(tunnel = %tunnel.id, domain = %domain.name, status = ?status, "custom domain no longer verified; not routed")
        }
        _ => {}
    }
    Some(status)
}

/// Checks `tunnel`'s domain in the background (after create: the answer does not wait for
/// DNS).
pub(crate) fn verify_later(state: &Arc<AppState>, tunnel: &Arc<Tunnel>) {
    let (state, tunnel) = (state.clone(), tunnel.clone());
    state.tasks.requests.clone().spawn(async move {
        verify(&state, &tunnel).await;
    });
}

/// Checks every custom domain of the tunnels this process holds, a few at a time.
pub async fn recheck_all(state: &AppState) {
    let tunnels: Vec<_> = state
        .registry
        .local()
        .into_iter()
        .filter(|t| t.domain.is_some())
        .collect();
    futures_util::stream::iter(tunnels)
        .for_each_concurrent(CONCURRENT_CHECKS, |t| async move {
            verify(state, &t).await;
        })
        .await;
}
