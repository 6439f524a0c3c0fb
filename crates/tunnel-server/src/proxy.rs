//! The reverse proxy: a public request reaches its tunnel's local service, addressed one of
//! three ways ([`Addressed`], decided by [`crate::app`]):
//!
//! - by path prefix: `ANY /{tunnel_id}/{rest}` on the apex is forwarded as `/{rest}`, and the
//!   answer's `Location` and cookie paths are rooted under `/{tunnel_id}` (the tunnels share
//!   one origin, so `Service-Worker-Allowed` is dropped);
//! - by subdomain (`{tunnel_id}.TUNNEL_DOMAIN`) or a verified custom domain: the tunnel is
//!   its own origin, so the target goes as it is and nothing is rewritten either way (no
//!   `X-Forwarded-Prefix`).
//!
//! Prefix routing happens exactly once, on the raw (still percent-encoded) path: the first
//! segment must be a valid tunnel id as is, and everything after it is passed on byte for
//! byte. So `%2e%2e`, `%2f` and friends reach the local service untouched and can never
//! select another tunnel or a server route.
//!
//! Bodies stream both ways as chunks under the mux's flow control; nothing is buffered whole.

mod forward;
pub mod headers;
mod hint;
mod log;
pub mod relay;
mod remote;
mod response;
mod upgrade;

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, LOCATION};
use http::{Method, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::edge::framing::RequestSlot;
use crate::edge::{ClientIp, PeerAddr};
use crate::error::TunnelError;
use crate::state::AppState;
use crate::tunnel::registry::looks_like_id;
use crate::tunnel::Tunnel;

use forward::{forward, Failure, Forward, Forwarded};
use log::{Outcome, RequestLog};
use remote::Remote;
use response::{respond, Downstream};
use upgrade::{requested_upgrade, switch_protocols, Upgrade};

/// Splits `/id/rest?q` into `("id", "/rest?q")`; `rest` is `""` or starts with `?` when the
/// path is just `/id`.
pub fn split_target(path_and_query: &str) -> Option<(&str, &str)> {
    let after = path_and_query.strip_prefix('/')?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    Some((&after[..end], &after[end..]))
}

/// How a public request named its tunnel.
#[derive(Debug, Clone)]
pub enum Addressed {
    /// `/{id}/…` on the apex.
    Prefix,
    /// `{id}.TUNNEL_DOMAIN`: every path is the tunnel's.
    Subdomain(String),
    /// A verified custom domain, already looked up: every path is the tunnel's.
    Domain(Arc<Tunnel>),
}

/// Handles every request no other route took (by path prefix). Every log line of a proxied request carries
/// the request id (see [`crate::observe::request_id`]) and the tunnel as fields of its own. They are
/// not put in a `tracing` span: creating, entering and serialising a span on every request
/// cost about 10% of the server's CPU per small request, for lines that are almost always
/// just the one access line.
pub async fn proxy(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve(state, req, Addressed::Prefix).await
}

/// Forwards a public request to the tunnel it was addressed to.
pub async fn serve(state: Arc<AppState>, mut req: Request, addressed: Addressed) -> Response {
    let request_id = crate::observe::request_id::ensure(req.headers_mut());
    proxy_request(state, req, request_id, addressed).await
}

/// The request's path and query, as the public client sent them.
fn path_and_query(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The tunnel a request is for, and where in its [`path_and_query`] the target its local
/// service gets starts: after the path prefix the tunnel was addressed under (`/<id>`), or at
/// 0 (by host, or a tunnel that keeps its prefix: nothing to rewrite). An offset rather than
/// copies of the two parts: the target and the prefix were two allocations per request (and
/// the prefix a `format!`, about 500 instructions, callgrind).
async fn resolve(
    state: &AppState,
    parts: &http::request::Parts,
    addressed: Addressed,
) -> Result<(Arc<Tunnel>, usize), Response> {
    let refuse = |e: TunnelError| e.render(&parts.headers);
    let tunnel = match addressed {
        Addressed::Prefix => {
            return match route(state, &parts.method, &parts.uri) {
                Ok((id, rest)) => match find(state, id).await {
                    // Configured for its base path: the whole target, nothing to rewrite.
                    Ok(tunnel) if tunnel.keep_prefix => Ok((tunnel, 0)),
                    // `rest` ends the path and query, behind `/{id}`.
                    Ok(tunnel) => Ok((tunnel, path_and_query(&parts.uri).len() - rest.len())),
                    Err(e @ TunnelError::TunnelNotFound) => {
                        Err(refuse(hint::left_prefix(state, parts).unwrap_or(e)))
                    }
                    Err(e) => Err(refuse(e)),
                },
                Err(NotRouted::Refused(e @ TunnelError::TunnelNotFound)) => {
                    Err(refuse(hint::left_prefix(state, parts).unwrap_or(e)))
                }
                Err(NotRouted::Refused(e)) => Err(refuse(e)),
                Err(NotRouted::AddSlash(location)) => Err(redirect(&location)),
            };
        }
        Addressed::Subdomain(label) => {
            check_request(&parts.method, &parts.uri).map_err(refuse)?;
            if !looks_like_id(&label) {
                return Err(refuse(TunnelError::TunnelNotFound));
            }
            find(state, &label).await.map_err(refuse)?
        }
        Addressed::Domain(tunnel) => {
            check_request(&parts.method, &parts.uri).map_err(refuse)?;
            tunnel
        }
    };
    if path_and_query(&parts.uri).len() > state.settings.limits.max_uri_bytes {
        return Err(refuse(TunnelError::UriTooLong));
    }
    Ok((tunnel, 0))
}

async fn proxy_request(
    state: Arc<AppState>,
    req: Request,
    request_id: String,
    addressed: Addressed,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let (tunnel, start) = match resolve(&state, &parts, addressed).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    if let Err(e) = admit(&state, &tunnel, &parts) {
        return e.render(&parts.headers);
    }
    // A credential meant for the tunnel is not the local service's business.
    if tunnel.access.basic_auth.is_some() {
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let pq = path_and_query(&parts.uri);
    let (prefix, rest) = pq.split_at_checked(start).unwrap_or(("", pq));
    let prefix = (!prefix.is_empty()).then_some(prefix);
    let log = RequestLog {
        request_id,
        metrics: state.metrics.clone(),
        events: state.events.clone(),
        tunnel: tunnel.clone(),
        method: parts.method.clone(),
        path: rest.split('?').next().unwrap_or("/").to_string(),
        status: 0,
        bytes: 0,
        started: Instant::now(),
        outcome: Outcome::Pending,
    };
    let on_upgrade = match requested_upgrade(&parts.headers) {
        Upgrade::WebSocket => match parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
            Some(u) => Some(u),
            None => {
                return TunnelError::BadRequest("this connection cannot be upgraded")
                    .render(&parts.headers)
            }
        },
        Upgrade::None | Upgrade::Other => None,
    };
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    let slot = parts.extensions.get::<RequestSlot>();
    let request_id = log.request_id.clone();
    let public = Public {
        state: &state,
        method: &parts.method,
        target: rest,
        prefix,
        headers: &parts.headers,
        peer,
        request_id: &request_id,
        slot,
    };
    deliver(&public, tunnel, body, log, on_upgrade).await
}

/// A request sent into the session here that came back unsent: its body (never started),
/// its log line, its upgrade.
type Unsent = (Body, RequestLog, Option<OnUpgrade>);

/// Sends the request where its client is: to another pod if the client is connected there,
/// otherwise into the session here. A session here found gone or closing before anything
/// was sent means that the client moved (as a draining pod tells it to): the request
/// follows it ([`remote::follow`]), once.
async fn deliver(
    public: &Public<'_>,
    tunnel: Arc<Tunnel>,
    body: Body,
    log: RequestLog,
    on_upgrade: Option<OnUpgrade>,
) -> Response {
    let (headers, peers) = (public.headers, public.state.peers.as_ref());
    let (tunnel, body, log, on_upgrade) = match (tunnel.connection(), tunnel.remote(), peers) {
        (None, Some(lease), Some(peers)) => {
            let req = public.forward(&tunnel, body, on_upgrade.is_some());
            let remote = remote::forward(req, lease, peers, log, on_upgrade).await;
            match moved_here(remote, &tunnel, headers) {
                ControlFlow::Continue(here) => here,
                ControlFlow::Break(resp) => return resp,
            }
        }
        _ => (tunnel, body, log, on_upgrade),
    };
    let (body, log, on_upgrade) = match public.here(&tunnel, body, log, on_upgrade).await {
        Ok(resp) => return resp,
        Err(unsent) => unsent,
    };
    let Some(peers) = peers else {
        return failed(&tunnel, TunnelError::TunnelOffline, log, headers);
    };
    let req = public.forward(&tunnel, body, on_upgrade.is_some());
    let remote = remote::follow(req, peers, log, on_upgrade).await;
    let (tunnel, body, log, on_upgrade) = match moved_here(remote, &tunnel, headers) {
        ControlFlow::Continue(here) => here,
        ControlFlow::Break(resp) => return resp,
    };
    match public.here(&tunnel, body, log, on_upgrade).await {
        Ok(resp) => resp,
        Err((_, log, _)) => failed(&tunnel, TunnelError::TunnelOffline, log, headers),
    }
}

/// What another pod's answer leaves to do here: the request back, when its client is
/// connected here now (`Continue`), or else the response for the public client (`Break`).
fn moved_here(
    remote: Remote,
    tunnel: &Tunnel,
    headers: &http::HeaderMap,
) -> ControlFlow<Response, (Arc<Tunnel>, Body, RequestLog, Option<OnUpgrade>)> {
    match remote {
        Remote::Answered(resp) => ControlFlow::Break(resp),
        Remote::Failed(e, log) => ControlFlow::Break(failed(tunnel, e, log, headers)),
        Remote::MovedHere {
            tunnel,
            body,
            log,
            on_upgrade,
        } => ControlFlow::Continue((tunnel, body, log, on_upgrade)),
    }
}

/// What a public request brings to [`forward`] (or to another pod), whichever tunnel object
/// serves it.
struct Public<'a> {
    state: &'a AppState,
    method: &'a Method,
    target: &'a str,
    /// `/<id>` on the path-prefix host; `None` on the tunnel's own host.
    prefix: Option<&'a str>,
    headers: &'a http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    request_id: &'a str,
    slot: Option<&'a RequestSlot>,
}

impl<'a> Public<'a> {
    fn forward(&self, tunnel: &'a Arc<Tunnel>, body: Body, websocket: bool) -> Forward<'a> {
        Forward {
            state: self.state,
            tunnel,
            method: self.method.clone(),
            target: self.target,
            prefix: self.prefix,
            headers: self.headers,
            peer: self.peer,
            body,
            websocket,
            request_id: self.request_id,
            slot: self.slot,
        }
    }

    /// Into the client's session here: its answer, or the request back if that session was
    /// gone or closing before anything was sent.
    async fn here(
        &self,
        tunnel: &Arc<Tunnel>,
        body: Body,
        log: RequestLog,
        on_upgrade: Option<OnUpgrade>,
    ) -> Result<Response, Unsent> {
        match forward(self.forward(tunnel, body, on_upgrade.is_some())).await {
            Ok(answer) => Ok(answered(
                self.state,
                tunnel,
                answer,
                on_upgrade,
                log,
                self.prefix,
            )),
            Err(Failure::Error(e)) => Ok(failed(tunnel, e, log, self.headers)),
            Err(Failure::NotSent(body)) => Err((body, log, on_upgrade)),
        }
    }
}

/// The public answer to a request the server could not get answered: its error, logged and
/// counted like any request.
fn failed(
    tunnel: &Tunnel,
    e: TunnelError,
    mut log: RequestLog,
    headers: &http::HeaderMap,
) -> Response {
    log.status = e.status().as_u16();
    log.outcome = Outcome::Failed(e.clone());
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    e.render(headers)
}

/// Why a public request goes no further than routing.
enum NotRouted {
    /// Refused with this error.
    Refused(TunnelError),
    /// `/id` or `/id?q`: redirected here, under `/id/`, where relative links work.
    AddSlash(String),
}

/// Reads which tunnel a public request is for from its raw path: the tunnel id and the target
/// to forward (`/rest?q`).
fn route<'u>(
    state: &AppState,
    method: &Method,
    uri: &'u http::Uri,
) -> Result<(&'u str, &'u str), NotRouted> {
    check_request(method, uri).map_err(NotRouted::Refused)?;
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Some((id, rest)) = split_target(pq).filter(|(id, _)| looks_like_id(id)) else {
        return Err(NotRouted::Refused(TunnelError::TunnelNotFound));
    };
    if !rest.starts_with('/') {
        return Err(NotRouted::AddSlash(format!("/{id}/{rest}")));
    }
    if pq.len() > state.settings.limits.max_uri_bytes {
        return Err(NotRouted::Refused(TunnelError::UriTooLong));
    }
    Ok((id, rest))
}

/// What every public request must pass, however it is addressed: it is no proxy request.
///
/// A request read while the server drains is served, not refused: the connection was
/// accepted before the listener closed (hyper's graceful shutdown lets it finish what it
/// began), and the request goes where its client is, which may be another pod by now.
fn check_request(method: &Method, uri: &http::Uri) -> Result<(), TunnelError> {
    if uri.scheme().is_some() || method == Method::CONNECT {
        return Err(TunnelError::BadRequest(
            "proxy requests (CONNECT, absolute-form) are not served",
        ));
    }
    Ok(())
}

/// The tunnel `id`: from what this process holds, at once, on the hot path; from the
/// registry's store only when it is not held here.
async fn find(state: &AppState, id: &str) -> Result<Arc<Tunnel>, TunnelError> {
    if let Some(tunnel) = state.registry.get(id) {
        return Ok(tunnel);
    }
    state
        .registry
        .lookup(id)
        .await?
        .ok_or(TunnelError::TunnelNotFound)
}

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// The public response once the local service answered: a protocol switch when a WebSocket
/// upgrade was asked for and accepted, an ordinary response otherwise.
fn answered(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    answer: Forwarded,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    log: RequestLog,
    prefix: Option<&str>,
) -> Response {
    let Forwarded {
        head,
        receiver,
        upgrade,
    } = answer;
    match (upgrade, on_upgrade) {
        (Some(sender), Some(on_upgrade)) if head.status == 101 => switch_protocols(
            state,
            head,
            (sender, receiver),
            on_upgrade,
            log,
            tunnel,
            prefix,
        ),
        (Some(mut sender), _) => {
            // The local service refused the upgrade: an ordinary response, and the request
            // direction (which would have carried WebSocket bytes) ends empty.
            state.tasks.requests.spawn(async move {
                let _ = sender.finish().await; // stream may be gone already: nothing to end
            });
            respond(
                state,
                head,
                Downstream::Tunnel(receiver),
                log,
                tunnel,
                prefix,
            )
        }
        (None, _) => respond(
            state,
            head,
            Downstream::Tunnel(receiver),
            log,
            tunnel,
            prefix,
        ),
    }
}

/// Access control and limits for a public request, in the order a user would want to learn
/// about them: address, rate, credentials, size. Nothing is read from the body, so a client
/// sending `Expect: 100-continue` gets the refusal instead of a `100 Continue`.
fn admit(
    state: &AppState,
    tunnel: &Tunnel,
    parts: &http::request::Parts,
) -> Result<(), TunnelError> {
    let ip = parts
        .extensions
        .get::<ClientIp>()
        .map(|c| c.0)
        .or_else(|| parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()));
    if let Some(ip) = ip {
        if !tunnel.access.allows_ip(ip) {
            return Err(TunnelError::IpForbidden);
        }
    }
    state.limits.check_public(&tunnel.id)?;
    if let Some(auth) = &tunnel.access.basic_auth {
        if !auth.accepts(&parts.headers) {
            return Err(TunnelError::BasicAuthRequired);
        }
    }
    let max = state.settings.limits.max_body_bytes;
    if max > 0 {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(TunnelError::BodyTooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_on_the_raw_path() {
        assert_eq!(split_target("/abc/x/y?q=1"), Some(("abc", "/x/y?q=1")));
        assert_eq!(split_target("/abc"), Some(("abc", "")));
        assert_eq!(split_target("/abc?q"), Some(("abc", "?q")));
        assert_eq!(split_target("/abc/"), Some(("abc", "/")));
        assert_eq!(split_target("/%2e%2e/api"), Some(("%2e%2e", "/api")));
        assert_eq!(split_target("//abc/x"), Some(("", "/abc/x")));
        assert_eq!(split_target("abc"), None);
    }
}
