//! Tunnels: the registry (ids, tokens, live client connections, counters) and the access rules
//! each tunnel's owner may set on its public URL.
//!
//! - [`registry`]: the tunnels, in a `DashMap` inside the shared state.
//! - [`access`]: per-tunnel basic auth and IP allow/deny lists.
//!
//! This is the one place a registry shared by several server processes will plug in; nothing
//! here knows about HTTP routes, the proxy or the metrics.

pub mod access;
pub mod registry;
