//! Pod to pod: when several server processes share the registry, a public request that
//! reaches one pod for a tunnel whose client is connected to another is forwarded there.
//!
//! - [`wire`]: what such a request carries (the peer secret, the hop header, the tunnel) and
//!   what the receiving pod answers when it does not pass the local service's answer on.
//! - [`client`]: the forwarding side, pooled HTTP/1.1 to the other pods' peer listeners, with
//!   bodies that stay here until the other pod asks for them (so that a "not here" can be
//!   retried elsewhere).
//! - [`listener`]: the receiving side, `TUNNEL_PEER_BIND`, authenticated before any handler.
//! - [`join`]: two upgraded connections joined (a WebSocket through two pods).
//!
//! What a forwarded request does on the other pod (into its client's multiplexer) is the
//! proxy's business (`crate::proxy::relay`); this module only moves requests between pods.

pub mod client;
pub mod join;
pub mod listener;
pub mod wire;

pub use client::{Answer, Outgoing, PeerClient, SendError};
pub use wire::{PeerAuth, Refusal};
