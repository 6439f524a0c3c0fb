//! `tunnel-client`: exposes a local HTTP service through a `tunnel-server`.
//!
//! # Layout
//! From the bottom up; no module imports one listed after it (checked by
//! `ci/check-layout.py`):
//! - [`inspect`]: the traffic inspector (capture store, tees, page, API, replay): a leaf
//!   that [`config`] takes its flags from and [`forward`] hooks into.
//! - [`config`]: flags and environment, validated into [`config::ClientConfig`] (typed
//!   [`config::ConfigError`]s that name the setting).
//! - [`file`]: the config file (`tunnel.toml`), read into one [`config::ClientConfig`] per
//!   tunnel; errors name the file, line and key.
//! - [`sources`]: where a command-line tunnel's server and key come from when the flags
//!   leave them out (environment, the file's `[client]`, a dev server's kept key), said in
//!   one line each.
//! - [`display`]: the banner and per-request lines ([`display::RequestLine`]).
//! - [`control`]: the server's control API (create, status, delete, domain verification).
//! - [`domain`]: the tunnel's other URLs, and a custom domain's wait for its DNS record (a
//!   task beside the session).
//! - [`forward`]: one [`tunnel_protocol::mux::IncomingRequest`] → the local service → back:
//!   the answer through its responder, the body through the protocol crate's pump, a
//!   WebSocket through its splice.
//! - [`tcp`]: TCP tunnels on this side: a raw TCP stream → the local service (PROXY
//!   protocol header optional), and `tunnel-client connect`, the consumer's end of the
//!   server's front door.
//! - [`session`]: connect (the handshake in `session/connect.rs`), serve (every forward on a
//!   task tracker), reconnect with backoff (at once, make-before-break, when a restarting
//!   server says so: `session/retire.rs`), and on shutdown let the forwards in flight finish
//!   before deleting the tunnel.
//! - [`fleet`]: `tunnel-client start`: a session per tunnel of the config file, one banner,
//!   and the file followed (watched, and SIGHUP) by diffing its tunnels by name.
//!
//! The binary (`main.rs`) installs the signal handlers right after the runtime, before
//! anything else, so that an early Ctrl-C is a graceful exit too.

pub mod config;
pub mod control;
pub mod display;
pub mod domain;
pub mod file;
pub mod fleet;
pub mod forward;
pub mod inspect;
pub mod session;
pub mod sources;
pub mod tcp;

pub use config::{ClientArgs, ClientConfig};
pub use session::{run, ClientError, Status};
