//! The edge: what the server learns about a public connection before any route sees it.
//!
//! - [`framing`]: a guard that reads every request of a connection as raw bytes, before hyper.
//! - [`client_ip`]: the socket's peer address and the real client address (`X-Forwarded-For`
//!   believed from trusted proxies only), set on every request by the accept loop.
//! - [`host`]: the host a request is for (`X-Forwarded-Host` believed from trusted proxies
//!   only) and where it sits relative to `TUNNEL_DOMAIN`.
//!
//! Nothing here knows about tunnels or routes; everything above may use it.

pub mod client_ip;
pub mod framing;
pub mod host;

pub use client_ip::{ClientIp, PeerAddr};
