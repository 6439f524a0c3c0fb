//! The background work of a pod sharing the registry: the connection watcher, the subscriber
//! (cache hints and commands), lease renewal, and flushing counters. Each is a task on the
//! tracker the server drains, until the stop token.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use super::bus::{self, Change, CloseReason, Command};
use super::keys;
use super::ops::counters;
use super::shared::Shared;
use super::store::StoreError;
use super::stored::{access_json, millis};
use crate::tunnel::record::{Connection, Tunnel};

/// How often counters are added to Redis.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Longest wait between two subscription attempts.
const MAX_SUBSCRIBE_BACKOFF: Duration = Duration::from_secs(2);

/// Starts the tasks.
pub(super) fn spawn(shared: &Arc<Shared>, tracker: &TaskTracker, stop: CancellationToken) {
    let span = || info_span!("registry", node = %shared.node);
    let (s, t) = (shared.clone(), stop.clone());
    tracker.spawn(async move { s.store.watch(t).await }.instrument(span()));
    tracker.spawn(subscribe(shared.clone(), stop.clone()).instrument(span()));
    tracker.spawn(renew(shared.clone(), stop.clone()).instrument(span()));
    tracker.spawn(count(shared.clone(), stop).instrument(span()));
}

/// Keeps a subscription to `tunnel:changed` and this pod's command channel, subscribing again
/// whenever it breaks or Redis comes back. The cache is trusted only while subscribed.
async fn subscribe(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut recovered = shared.store.recovered();
    let own = keys::node(&shared.node);
    loop {
        let connecting = async {
            let mut pubsub = shared.store.client().get_async_pubsub().await?;
            pubsub.subscribe(keys::CHANGED).await?;
            pubsub.subscribe(&own).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            a = tokio::time::timeout(Duration::from_secs(2), connecting) => a,
        };
        match attempt {
            Ok(Ok(mut pubsub)) => {
                shared.cache.reset(true);
                shared.subscribed.send_replace(true);
                backoff = Duration::from_millis(100);
                tracing::debug!("subscribed to registry changes");
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        // Redis went away and came back: a silent outage may have cost messages.
                        _ = recovered.changed() => break,
                        m = messages.next() => match m {
                            Some(m) => handle(&shared, &own, &m),
                            None => break,
                        },
                    }
                }
                shared.cache.reset(false);
                shared.subscribed.send_replace(false);
                tracing::debug!("registry subscription lost; subscribing again");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe to registry changes"),
            Err(_) => tracing::debug!("subscribing to registry changes timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_SUBSCRIBE_BACKOFF);
    }
}

/// One message: a hint forgets a cache entry (and wakes relocations waiting on it); a command
/// closes a client here.
fn handle(shared: &Shared, own: &str, message: &redis::Msg) {
    let Ok(payload) = message.get_payload::<String>() else {
        return;
    };
    if message.get_channel_name() == own {
        match Command::parse(&payload) {
            Some(Command::Close {
                id,
                generation,
                reason,
                message,
            }) => close_session(shared, &id, generation, reason, message),
            None => tracing::debug!(%payload, "unknown registry command"),
        }
        return;
    }
    let change = Change::parse(&payload);
    if let Change::Domain(host) = &change {
        shared.cache.forget_domain(host);
        return;
    }
    let Some(id) = change.id() else {
        return;
    };
    shared.cache.forget(id);
    if let Change::Removed(id) = &change {
        shared.unlabel(id);
    }
    // Nobody waiting is fine.
    let _ = shared.changes.send(id.to_string());
}

/// Closes the client of `id` here if its session is still `generation`.
fn close_session(
    shared: &Shared,
    id: &str,
    generation: u64,
    reason: CloseReason,
    message: Option<String>,
) {
    let Some(tunnel) = shared.local.get(id).map(|t| t.clone()) else {
        return;
    };
    let current = tunnel
        .connection()
        .is_some_and(|c| c.generation == generation);
    if !current {
        return;
    }
    shared.local.remove_if(id, |_, t| Arc::ptr_eq(t, &tunnel));
    if reason == CloseReason::Deleted {
        shared.unlabel(id);
    }
    if let Some(c) = tunnel.take_connection() {
        tracing::info!(tunnel = %id, generation, reason = reason.as_str(), "closing a client as the registry says");
        shared.close_saying(c, reason, message);
    }
}

/// Renews every lease held here, every third of the lease time and at once when Redis comes
/// back.
async fn renew(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.lease / 3;
    let mut recovered = shared.store.recovered();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = recovered.changed() => {}
        }
        if let Err(e) = renew_all(&shared).await {
            tracing::debug!(error = %e, "cannot renew leases");
        }
    }
}

/// One renewal of every lease held here (the `RENEW` script), acting on what it reports.
async fn renew_all(shared: &Shared) -> Result<(), StoreError> {
    let sessions: Vec<(Arc<Tunnel>, Connection)> = shared
        .local
        .iter()
        .filter_map(|t| t.connection().map(|c| (t.clone(), c)))
        .collect();
    if sessions.is_empty() {
        return Ok(());
    }
    let mut call = shared.scripts.renew.prepare_invoke();
    call.arg(&shared.node)
        .arg(&shared.peer)
        .arg(shared.lease_ms());
    for (t, c) in &sessions {
        call.arg(&t.id)
            .arg(c.generation)
            .arg(c.mux.open_streams())
            .arg(millis(c.since))
            .arg(c.remote.ip().to_string());
    }
    let mut conn = shared.store.conn()?;
    let statuses = shared
        .store
        .check(call.invoke_async::<Vec<String>>(&mut conn).await)?;
    for ((t, c), status) in sessions.into_iter().zip(statuses) {
        match status.as_str() {
            "ok" => {}
            "restored" => tracing::info!(tunnel = %t.id, "lease had lapsed; taken back"),
            "missing" => restore(shared, &t, &c).await?,
            other => match bus::parse_tail(other) {
                Some((reason, message)) => {
                    close_session(shared, &t.id, c.generation, reason, message)
                }
                None => tracing::warn!(tunnel = %t.id, status = other, "unexpected renewal status"),
            },
        }
    }
    Ok(())
}

/// Writes a tunnel Redis lost back from what this pod holds (the `RESTORE` script), with its
/// name record and, if it was routed, its custom domain's binding.
async fn restore(shared: &Shared, t: &Tunnel, c: &Connection) -> Result<(), StoreError> {
    let Some(owner) = shared.keys.fingerprint(t.owner) else {
        return Ok(());
    };
    let (domain, txt, routed) = match &t.domain {
        Some(d) => (d.name.as_str(), d.expected.as_str(), d.state().2),
        None => ("", "", false),
    };
    let name_until = shared.names.policy().grace_until(t.expires_at);
    let mut conn = shared.store.conn()?;
    let restored = shared
        .scripts
        .restore
        .key(keys::tunnel(&t.id))
        .key(keys::owner(&owner))
        .key(keys::lease(&t.id))
        .key(keys::GENERATION)
        .key(keys::name(&t.id))
        .key(keys::domain(domain))
        .arg(&owner)
        .arg(t.token_digest().to_hex())
        .arg(millis(t.created_at))
        .arg(millis(t.expires_at))
        .arg(access_json(&t.access, t.keep_prefix, t.tcp.as_ref()))
        .arg(c.generation)
        .arg(&shared.node)
        .arg(&shared.peer)
        .arg(shared.lease_ms())
        .arg(millis(c.since))
        .arg(c.remote.ip().to_string())
        .arg(&t.id)
        .arg(millis(chrono::Utc::now()))
        .arg(millis(name_until))
        .arg(domain)
        .arg(txt)
        .arg(if routed { "1" } else { "0" })
        .invoke_async::<i64>(&mut conn)
        .await;
    if shared.store.check(restored)? == 1 {
        tracing::warn!(tunnel = %t.id, "redis had lost this tunnel; written back from this pod");
    }
    Ok(())
}

/// Adds what this pod counted to the tunnels' counters in Redis, every [`COUNT_EVERY`].
async fn count(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(COUNT_EVERY) => {}
        }
        if let Err(e) = flush(&shared).await {
            tracing::debug!(error = %e, "cannot flush tunnel counters");
        }
    }
    // A last flush, so that a pod leaving does not take its counts with it.
    if let Err(e) = flush(&shared).await {
        tracing::debug!(error = %e, "cannot flush tunnel counters at shutdown");
    }
}

/// One flush (the `COUNT` script); objects fully flushed and used by nobody else are dropped.
async fn flush(shared: &Shared) -> Result<(), StoreError> {
    let mut call = shared.scripts.count.prepare_invoke();
    let mut done = Vec::new();
    for c in shared.counted.iter() {
        let now = counters(&c.tunnel);
        if now != c.flushed {
            call.arg(&c.tunnel.id)
                .arg(now[0] - c.flushed[0])
                .arg(now[1] - c.flushed[1])
                .arg(now[2] - c.flushed[2]);
            done.push((*c.key(), now));
        }
    }
    if !done.is_empty() {
        let mut conn = shared.store.conn()?;
        shared
            .store
            .check(call.invoke_async::<i64>(&mut conn).await)?;
        for (key, now) in done {
            if let Some(mut c) = shared.counted.get_mut(&key) {
                c.flushed = now;
            }
        }
    }
    shared
        .counted
        .retain(|_, c| Arc::strong_count(&c.tunnel) > 1 || counters(&c.tunnel) != c.flushed);
    Ok(())
}
