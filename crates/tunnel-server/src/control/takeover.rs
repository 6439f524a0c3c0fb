//! A create that names the caller's own tunnel: who may take the name over.
//!
//! While a client serves the tunnel, the create is refused (409 `tunnel_in_use`, naming since
//! when and from where that client is connected) unless it asks for `force`; without a live
//! client it gets the 409 `conflict` it always got (tunnel-client, seeing its own key's
//! tunnel, then asks again with `force`). With `force` the old tunnel is removed and its
//! client, if any, told who replaced it. The live client's facts come from
//! [`crate::tunnel::TunnelRegistry::describe`]: for a shared registry, the lease in the store
//! that every pod sees, wherever the client is connected.

use std::net::IpAddr;

use tunnel_protocol::GoodbyeReason;

use crate::auth::KeyId;
use crate::error::{InUse, TunnelError};
use crate::state::AppState;

/// Clears the way for `owner`'s create of `name`: nothing to do if no tunnel has the name or
/// another key's has (the create answers that conflict), [`TunnelError::InUse`] if `owner`'s
/// tunnel has a live client and `force` is off, nothing either without `force` (the create
/// answers `conflict`), and with `force` that tunnel is removed.
pub(super) async fn clear_for(
    state: &AppState,
    owner: KeyId,
    name: &str,
    force: bool,
    by: Option<IpAddr>,
) -> Result<(), TunnelError> {
    let Some(old) = state.registry.lookup(name).await? else {
        return Ok(());
    };
    if old.owner != owner {
        return Ok(());
    }
    let info = state
        .registry
        .describe(std::slice::from_ref(&old), &state.urls)
        .await?
        .pop();
    let live = info.filter(|i| i.connected);
    if !force {
        return match live {
            Some(i) => Err(TunnelError::InUse(Box::new(InUse {
                tunnel: name.to_string(),
                connected_since: i.connected_since,
                client_addr: i.client_addr,
            }))),
            None => Ok(()),
        };
    }
    let by = by.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
    let message = format!("replaced by another client from {by}");
    state
        .registry
        .remove(name, GoodbyeReason::Replaced, &message)
        .await?;
    crate::tcp::release(state, name).await;
    tracing::info!(tunnel = %name, %by, live = live.is_some(), forced = force, "tunnel taken over by a new create");
    Ok(())
}
