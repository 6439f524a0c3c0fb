//! Every key and channel the registry uses in Redis, in one place (the README's "what Redis
//! holds" is this list).
//!
//! - `tunnel:t:{id}` (hash): one tunnel: `owner` (the key's fingerprint), `token` (SHA-256),
//!   `created`, `expires` (Unix ms), `access` (JSON), `gen` (the latest claim's generation),
//!   `requests`, `bytes_in`, `bytes_out` (counters, flushed by every pod). Expires with the
//!   tunnel (`PEXPIREAT`).
//! - `tunnel:l:{id}` (hash): the lease of the pod holding the client: `node`, `peer`, `gen`,
//!   `since`, `client`, `streams`. Lives `TUNNEL_LEASE_SECS` unless renewed.
//! - `tunnel:o:{owner}` (sorted set): the ids of one key's tunnels, scored by expiry.
//! - `tunnel:d:{id}` (string): a tombstone for ten minutes after a delete, so that a pod that
//!   missed the delete closes its client instead of restoring the tunnel.
//! - `tunnel:why:{id}` (string): `GENERATION REASON MESSAGE`, what the last remove told the
//!   client of that generation (lives as long as the tombstone), so that a pod whose lease
//!   renewal finds the change before the pub/sub command tells its client the same words.
//! - `tunnel:n:{name}` (string): who holds a name: the owner's key fingerprint. Written with
//!   the tunnel, expiring at its expiry plus `TUNNEL_NAME_GRACE_SECS`; a delete shortens it
//!   to the grace period from then. While it lives, another key gets 409 for the name and no
//!   random id takes it.
//! - `tunnel:dom:{domain}` (string): the id of the tunnel a verified custom domain routes to;
//!   expires with the tunnel.
//! - `tunnel:generation` (integer): the generation counter; every claim of any tunnel takes
//!   the next number.
//! - Channel `tunnel:changed`: an id whose tunnel or lease changed (a cache hint, never the
//!   truth), `-id` when it was removed, `@domain` when a custom domain's binding changed.
//! - Channel `tunnel:node:{node}`: commands for one pod (`close ID GENERATION REASON`).

/// The tunnel hash of `id`.
pub(super) fn tunnel(id: &str) -> String {
    format!("tunnel:t:{id}")
}

/// The lease of `id`.
pub(super) fn lease(id: &str) -> String {
    format!("tunnel:l:{id}")
}

/// The index of `owner`'s tunnels.
pub(super) fn owner(owner: &str) -> String {
    format!("tunnel:o:{owner}")
}

/// The tombstone of a deleted `id`.
pub(super) fn tombstone(id: &str) -> String {
    format!("tunnel:d:{id}")
}

/// The name record of `name` (a tunnel id).
pub(super) fn name(name: &str) -> String {
    format!("tunnel:n:{name}")
}

/// The binding of custom domain `host`.
pub(super) fn domain(host: &str) -> String {
    format!("tunnel:dom:{host}")
}

/// The generation counter.
pub(super) const GENERATION: &str = "tunnel:generation";

/// The channel of cache hints.
pub(super) const CHANGED: &str = "tunnel:changed";

/// The prefix of the per-pod command channels (the node id follows).
pub(super) const NODE_PREFIX: &str = "tunnel:node:";

/// The command channel of `node`.
pub(super) fn node(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// How long a tombstone stays, in milliseconds.
pub(super) const TOMBSTONE_MS: u64 = 10 * 60 * 1000;
