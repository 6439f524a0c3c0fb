//! The control API: what API-key holders and operators call.
//!
//! - [`api`]: the handlers of `/api/tunnels…` (create, list, status, delete), `/api`,
//!   `/health` and `/ready`.
//! - [`openapi`]: the OpenAPI document of these handlers and of the client endpoint, generated
//!   from the handlers themselves.
//!
//! The routes are mounted by [`crate::app::router`].

pub mod api;
pub mod openapi;
