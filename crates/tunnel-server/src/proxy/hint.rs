//! A better 404 for a path that left its tunnel's prefix.
//!
//! An app served under `/<id>/` that emits root-absolute URLs (`/assets/app.js`, `/lab`,
//! `/_next/…`) sends the browser to `/assets/…` on the apex, where no tunnel is named
//! `assets`. The request's `Referer` still names the page it came from: when that is a page
//! of a live tunnel on the apex, the 404 says what happened, which URL was probably meant,
//! and what fixes it (the subdomain URL, or `--keep-prefix` with the app's base path set).

use http::header::REFERER;

use crate::edge::host::{normalize, HostClass};
use crate::error::{LeftPrefix, TunnelError};
use crate::state::AppState;
use crate::tunnel::registry::looks_like_id;

/// The hint for a request on the apex that named no tunnel, if its `Referer` is a page of a
/// tunnel this server holds under its path prefix.
pub(super) fn left_prefix(state: &AppState, parts: &http::request::Parts) -> Option<TunnelError> {
    let referer: http::Uri = parts.headers.get(REFERER)?.to_str().ok()?.parse().ok()?;
    let authority = referer.authority()?.as_str();
    let scheme = match referer.scheme_str()? {
        s @ ("http" | "https") => s,
        _ => return None,
    };
    if state.hosts.classify(Some(&normalize(authority))) != HostClass::Apex {
        return None;
    }
    // A page under `/<id>/`.
    let (id, _) = referer.path().strip_prefix('/')?.split_once('/')?;
    if !looks_like_id(id) {
        return None;
    }
    let tunnel = state.registry.get(id)?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let subdomain_url = state
        .urls
        .subdomain_url(&tunnel.id)
        .map(|u| format!("{}{target}", u.trim_end_matches('/')));
    Some(TunnelError::LeftPrefix(Box::new(LeftPrefix {
        intended_url: format!("{scheme}://{authority}/{}{target}", tunnel.id),
        subdomain_url,
        tunnel: tunnel.id.clone(),
    })))
}
