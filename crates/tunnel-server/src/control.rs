//! The control API: what API-key holders and operators call.
//!
//! - [`api`]: the handlers of `/api/tunnels…` (create, list, status, delete, verify a
//!   custom domain), `/api`,
//!   `/health` and `/ready`.
//! - [`domain`]: custom domains: checking a tunnel's TXT record and routing by the result,
//!   on request and every `TUNNEL_DOMAIN_RECHECK_SECS`.
//! - [`events`]: `GET /api/events` and `GET /api/tunnels/{id}/events`, the key's live events
//!   as SSE.
//! - `takeover`: a create naming the caller's own tunnel: refused while its client is
//!   connected (409 `tunnel_in_use`) unless `force`, else the old tunnel is replaced.
//! - [`openapi`]: the OpenAPI document of these handlers and of the client endpoint, generated
//!   from the handlers themselves.
//!
//! The routes are mounted by [`crate::app::router`].

pub mod api;
pub mod domain;
pub mod events;
pub mod openapi;
mod takeover;
