//! Tunnels: the registry (ids, tokens, live client connections, counters) and the access rules
//! each tunnel's owner may set on its public URL.
//!
//! - [`registry`]: the [`TunnelRegistry`] trait the rest of the server uses, the one place a
//!   registry shared by several server processes will plug in, and what it trades in.
//! - [`memory`]: [`MemoryRegistry`], the in-memory registry (a `DashMap`), the first
//!   implementation.
//! - [`redis`]: [`RedisRegistry`], the registry several server processes share through Redis
//!   (leases with generations, a cache kept fresh by pub/sub), the second implementation.
//! - [`record`]: one [`Tunnel`]: what is registered about it, its live connection, counters.
//! - [`access`]: per-tunnel basic auth and IP allow/deny lists.
//! - [`names`]: who may take a name: blocked names, reservations, grace periods.
//! - [`domain`]: a tunnel's custom domain and what its last DNS check found.
//! - [`urls`]: a tunnel's public URLs (path prefix, subdomain, custom domain).
//! - [`tcp`]: what only TCP tunnels have (access token, public port, connection cap), and
//!   the pool of public ports.
//!
//! Nothing here knows about HTTP routes, the proxy or the metrics.

pub mod access;
pub mod domain;
pub mod memory;
pub mod names;
pub mod record;
pub mod redis;
pub mod registry;
pub mod tcp;
pub mod urls;

pub use memory::MemoryRegistry;
pub use record::{Connection, CustomDomainInfo, Lease, TcpRecord, Tunnel, TunnelInfo};
pub use redis::{RedisConfig, RedisRegistry};
pub use registry::TunnelRegistry;
pub use urls::PublicUrls;
