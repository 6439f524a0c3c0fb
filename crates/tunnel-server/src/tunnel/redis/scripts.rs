//! The Lua scripts: every change that must read and write atomically runs inside Redis, so
//! that no two pods interleave and a stale pod can never undo a newer one's work.
//!
//! Generations: [`CLAIM`] takes the next number of `tunnel:generation` and records it in both
//! the tunnel (`gen`) and its lease. [`RENEW`] and [`RELEASE`] act only when the lease (and
//! the tunnel) still carry the caller's generation: compare-and-set, so that a pod that was
//! paused, partitioned or simply late can neither extend nor delete the lease of the pod its
//! client moved to. Key names other than those passed in `KEYS` are built inside the scripts
//! from the same prefixes as `keys.rs` (the registry targets a single Redis, not a cluster).
//!
//! Names and custom domains ([`CREATE`], [`REMOVE`], [`BIND_DOMAIN`], [`UNBIND_DOMAIN`]):
//! who holds a name, and where a domain routes, is decided in the same script that creates or
//! removes the tunnel, so two pods creating the same name at once cannot both win, and a
//! delete cannot leave a window in which another key finds the name free.
//!
//! The texts are public so that tests, and an operator inspecting Redis, can run and read them.

use redis::Script;

/// Creates a tunnel unless its id is taken, its name is another key's (a live tunnel's, or
/// in its grace period), its custom domain routes to another live tunnel, or its owner holds
/// `max` tunnels already (pruning expired and vanished ids from the owner's index first).
///
/// The name record (`tunnel:n:{id}`, the owner's fingerprint) is written with the tunnel and
/// lives until the tunnel's expiry plus the grace period; [`REMOVE`] shortens it to the grace
/// period from the delete. So an expiry, which Redis carries out by itself, needs no script
/// for the name to stay its key's: the record simply outlives the tunnel. A random id finds
/// any record in its way `taken` (never handed out within anyone's grace period); a
/// requested one is `held` when the record names another key, unless the name is reserved
/// for the caller (the reservation, checked by the pod, beats a grace period).
///
/// KEYS: tunnel, owner index, tombstone, name record, domain binding. ARGV: now ms, expires
/// ms, owner, token digest, access JSON, max per key, id, name record's end ms, random (`1`),
/// reserved for the owner (`1`), domain (empty: none), domain TXT value. Returns `ok`,
/// `taken`, `held`, `domain_taken` or `too_many`.
pub const CREATE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local held = 0
for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', 'tunnel:t:' .. other) == 1 then
    held = held + 1
  else
    redis.call('ZREM', KEYS[2], other)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'taken' end
local holder = redis.call('GET', KEYS[4])
if holder then
  if ARGV[9] == '1' then return 'taken' end
  if holder ~= ARGV[3] and ARGV[10] ~= '1' then return 'held' end
end
if ARGV[11] ~= '' then
  local bound = redis.call('GET', KEYS[5])
  if bound and redis.call('EXISTS', 'tunnel:t:' .. bound) == 1 then return 'domain_taken' end
end
if held >= tonumber(ARGV[6]) then return 'too_many' end
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'token', ARGV[4], 'created', ARGV[1],
  'expires', ARGV[2], 'access', ARGV[5], 'gen', '0', 'requests', 0, 'bytes_in', 0,
  'bytes_out', 0)
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[1], 'domain', ARGV[11], 'domain_txt', ARGV[12], 'domain_bound', '0')
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('PEXPIREAT', KEYS[4], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[7])
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', 'tunnel:changed', ARGV[7])
return 'ok'
"#;

/// Claims a tunnel's live session for this pod: the next generation, a fresh lease, and a
/// `close … replaced` command to the pod that held the previous lease, if another.
///
/// KEYS: tunnel, lease, generation counter. ARGV: node, peer address, lease ms, since ms,
/// client address, id. Returns `{generation, previous node, previous generation}` (generation
/// 0 if the tunnel is gone).
pub const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, false, false} end
local gen = redis.call('INCR', KEYS[3])
local old = redis.call('HMGET', KEYS[2], 'node', 'gen')
redis.call('HSET', KEYS[1], 'gen', gen)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'node', ARGV[1], 'peer', ARGV[2], 'gen', gen, 'since', ARGV[4],
  'client', ARGV[5], 'streams', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', 'tunnel:changed', ARGV[6])
if old[1] and old[1] ~= ARGV[1] then
  redis.call('PUBLISH', 'tunnel:node:' .. old[1], 'close ' .. ARGV[6] .. ' ' .. old[2] ..
    ' replaced replaced by another client from ' .. ARGV[5])
end
return {gen, old[1], old[2]}
"#;

/// Renews every lease this pod holds, in one call.
///
/// ARGV: node, peer address, lease ms, then per tunnel five values: id, generation, open
/// streams, since ms, client address. Returns one status per tunnel: `ok`; `restored` (the
/// lease had lapsed, during an outage or a pause, and no newer claim exists: taken back);
/// `replaced` (a newer claim exists); `deleted` (a tombstone says so); `missing` (the tunnel
/// is gone without a tombstone: the store lost it). `replaced` and `deleted` are followed by
/// the goodbye's text when it is known, as in a `close` command's tail (`replaced replaced by
/// another client from 10.0.0.7`): the newer client's address from its lease, or what the
/// remove that ended this generation said (`tunnel:why:{id}`). The renewal may find the change
/// before the pub/sub command arrives, and the client is told the same either way.
pub const RENEW: &str = r#"
local function why(id, gen)
  local w = redis.call('GET', 'tunnel:why:' .. id)
  if w then
    local g, tail = string.match(w, '^(%d+) (.*)$')
    if g == gen then return tail end
  end
  return nil
end
local function newer(l)
  local client = redis.call('HGET', l, 'client')
  if client then return 'replaced replaced by another client from ' .. client end
  return 'replaced'
end
local out = {}
for i = 4, #ARGV, 5 do
  local id, gen = ARGV[i], ARGV[i + 1]
  local t, l = 'tunnel:t:' .. id, 'tunnel:l:' .. id
  local status
  if redis.call('EXISTS', t) == 0 then
    if redis.call('EXISTS', 'tunnel:d:' .. id) == 1 then
      status = why(id, gen) or 'deleted'
    else
      status = 'missing'
    end
  elseif redis.call('HGET', t, 'gen') ~= gen then
    status = why(id, gen) or newer(l)
  elseif redis.call('EXISTS', l) == 1 then
    if redis.call('HGET', l, 'gen') == gen then
      redis.call('HSET', l, 'streams', ARGV[i + 2])
      redis.call('PEXPIRE', l, ARGV[3])
      status = 'ok'
    else
      status = why(id, gen) or newer(l)
    end
  else
    redis.call('HSET', l, 'node', ARGV[1], 'peer', ARGV[2], 'gen', gen, 'since', ARGV[i + 3],
      'client', ARGV[i + 4], 'streams', ARGV[i + 2])
    redis.call('PEXPIRE', l, ARGV[3])
    redis.call('PUBLISH', 'tunnel:changed', id)
    status = 'restored'
  end
  out[#out + 1] = status
end
return out
"#;

/// Writes a tunnel the store lost (a Redis restarted without its data) back from a pod that
/// still holds its client, with that client's claim, and raises the generation counter past
/// it so that later claims stay greater. Its name record comes back unless another key took
/// the name meanwhile, and its custom domain's binding if it was routed and the domain is
/// free.
///
/// KEYS: tunnel, owner index, lease, generation counter, name record, domain binding. ARGV:
/// owner, token digest, created ms, expires ms, access JSON, generation, node, peer address,
/// lease ms, since ms, client address, id, now ms, name record's end ms, domain (empty:
/// none), domain TXT value, routed (`1`). Returns 1 if restored, 0 if the tunnel exists again
/// or has expired.
pub const RESTORE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[4]) <= tonumber(ARGV[13]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', ARGV[2], 'created', ARGV[3],
  'expires', ARGV[4], 'access', ARGV[5], 'gen', ARGV[6], 'requests', 0, 'bytes_in', 0,
  'bytes_out', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[12])
redis.call('HSET', KEYS[3], 'node', ARGV[7], 'peer', ARGV[8], 'gen', ARGV[6], 'since', ARGV[10],
  'client', ARGV[11], 'streams', 0)
redis.call('PEXPIRE', KEYS[3], ARGV[9])
local holder = redis.call('GET', KEYS[5])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[5], ARGV[1])
  redis.call('PEXPIREAT', KEYS[5], ARGV[14])
end
if ARGV[15] ~= '' then
  local routed = '0'
  if ARGV[17] == '1' and redis.call('SET', KEYS[6], ARGV[12], 'NX') then
    redis.call('PEXPIREAT', KEYS[6], ARGV[4])
    routed = '1'
  end
  redis.call('HSET', KEYS[1], 'domain', ARGV[15], 'domain_txt', ARGV[16], 'domain_bound', routed)
end
local counter = tonumber(redis.call('GET', KEYS[4]) or '0')
if counter < tonumber(ARGV[6]) then redis.call('SET', KEYS[4], ARGV[6]) end
redis.call('PUBLISH', 'tunnel:changed', ARGV[12])
return 1
"#;

/// Releases a lease if it still carries the caller's generation.
///
/// KEYS: lease. ARGV: generation, id. Returns 1 if released, 0 if a newer claim holds it.
pub const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', 'tunnel:changed', ARGV[2])
return 1
"#;

/// Removes a tunnel: its hash, lease and index entry; leaves a tombstone; starts its name's
/// grace period (the name record, if still its owner's, now ends `grace` ms from now, or goes
/// at once with a grace of 0); stops routing its custom domain; tells the pod that holds its
/// client to close it.
///
/// KEYS: tunnel, lease, tombstone, name record. ARGV: id, tombstone ms, reason (`deleted` or `replaced`, then the goodbye's text), grace ms.
/// Returns `{owner, node, generation}`, or `{}` if there was no such tunnel.
pub const REMOVE: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {} end
local lease = redis.call('HMGET', KEYS[2], 'node', 'gen')
local domain = redis.call('HGET', KEYS[1], 'domain')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', 'tunnel:o:' .. owner, ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
if lease[2] then
  redis.call('SET', 'tunnel:why:' .. ARGV[1], lease[2] .. ' ' .. ARGV[3], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[4]) == owner then
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[4], owner, 'PX', ARGV[4])
  else
    redis.call('DEL', KEYS[4])
  end
end
if domain then
  local binding = 'tunnel:dom:' .. domain
  if redis.call('GET', binding) == ARGV[1] then
    redis.call('DEL', binding)
    redis.call('PUBLISH', 'tunnel:changed', '@' .. domain)
  end
end
redis.call('PUBLISH', 'tunnel:changed', '-' .. ARGV[1])
if lease[1] then
  redis.call('PUBLISH', 'tunnel:node:' .. lease[1], 'close ' .. ARGV[1] .. ' ' .. lease[2] .. ' ' .. ARGV[3])
end
return {owner, lease[1], lease[2]}
"#;

/// Routes a verified custom domain to its tunnel, unless it routes to another live tunnel.
/// The binding expires with the tunnel; the tunnel's hash records that it is routed (so that
/// every pod's status shows it).
///
/// KEYS: domain binding, tunnel. ARGV: id, domain, now ms. Returns `bound`, `taken`, or
/// `no_tunnel` (the tunnel is gone, or asked for another domain).
pub const BIND_DOMAIN: &str = r#"
if redis.call('HGET', KEYS[2], 'domain') ~= ARGV[2] then return 'no_tunnel' end
local bound = redis.call('GET', KEYS[1])
if bound and bound ~= ARGV[1] and redis.call('EXISTS', 'tunnel:t:' .. bound) == 1 then
  return 'taken'
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], redis.call('HGET', KEYS[2], 'expires'))
redis.call('HSET', KEYS[2], 'domain_bound', '1', 'domain_checked', ARGV[3])
if bound ~= ARGV[1] then
  redis.call('PUBLISH', 'tunnel:changed', '@' .. ARGV[2])
  redis.call('PUBLISH', 'tunnel:changed', ARGV[1])
end
return 'bound'
"#;

/// Stops routing a custom domain to a tunnel, if it routes there (compare-and-delete).
///
/// KEYS: domain binding, tunnel. ARGV: id, domain, now ms. Returns 1 if it was routed there.
pub const UNBIND_DOMAIN: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'domain_bound', '0', 'domain_checked', ARGV[3])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', 'tunnel:changed', '@' .. ARGV[2])
redis.call('PUBLISH', 'tunnel:changed', ARGV[1])
return 1
"#;

/// Adds counters to tunnels that still exist.
///
/// ARGV: per tunnel four values: id, requests, bytes in, bytes out.
pub const COUNT: &str = r#"
for i = 1, #ARGV, 4 do
  local t = 'tunnel:t:' .. ARGV[i]
  if redis.call('EXISTS', t) == 1 then
    redis.call('HINCRBY', t, 'requests', ARGV[i + 1])
    redis.call('HINCRBY', t, 'bytes_in', ARGV[i + 2])
    redis.call('HINCRBY', t, 'bytes_out', ARGV[i + 3])
  end
end
return 0
"#;

/// The scripts, loaded once (`EVALSHA`, falling back to `EVAL` after a Redis restart).
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) restore: Script,
    pub(super) release: Script,
    pub(super) remove: Script,
    pub(super) count: Script,
    pub(super) bind_domain: Script,
    pub(super) unbind_domain: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: Script::new(CREATE),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            restore: Script::new(RESTORE),
            release: Script::new(RELEASE),
            remove: Script::new(REMOVE),
            count: Script::new(COUNT),
            bind_domain: Script::new(BIND_DOMAIN),
            unbind_domain: Script::new(UNBIND_DOMAIN),
        }
    }
}
