//! `tunnel-client`: exposes a local HTTP service through a `tunnel-server`.
//!
//! # Layout
//! - [`config`]: flags and environment, validated into [`config::ClientConfig`].
//! - [`control`]: the server's control API (create, status, delete).
//! - [`session`]: connect, serve, reconnect with backoff, delete on exit.
//! - [`forward`]: one stream → the local service → back, streamed.
//! - [`display`]: the banner and per-request lines.
//! - [`domain`]: the tunnel's other URLs, and a custom domain's wait for its DNS record.

pub mod config;
pub mod control;
pub mod display;
pub mod domain;
pub mod forward;
pub mod session;

pub use config::{ClientArgs, ClientConfig};
pub use session::{run, ClientError, Status};
