//! The connection to Redis, and whether Redis is up.
//!
//! Redis may be unreachable for a while (a restart, a network partition). Then every request
//! that needs it must fail fast, with `registry_unavailable`, instead of waiting for a
//! connection that may take seconds: so the store keeps one flag. While it is down, callers get
//! [`RegistryError::Unavailable`] at once; a watcher task alone tries to reconnect (every
//! [`RETRY`]) and raises the flag again, which the registry sees through
//! [`Store::recovered`] (to renew its leases and trust its cache again at once).
//!
//! The connection is redis-rs's `ConnectionManager` (one multiplexed connection, reconnected
//! when it breaks), with short timeouts so that even the first failure is quick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::tunnel::registry::{CreateError, RegistryError};

/// How often a down store is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// How long one command may take before Redis counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the store gave no answer, for the log (the public sees `registry_unavailable`).
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    /// Redis is known to be unreachable; not even tried.
    #[error("redis is unreachable (waiting for it to come back)")]
    Down,
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis answered something the registry did not store.
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Unavailable(Box::new(e))
    }
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        CreateError::Registry(e.into())
    }
}

/// The connection, the up/down flag and the watcher's signals.
pub(super) struct Store {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
    /// Wakes the watcher when a command failed.
    failed: Notify,
    /// Counts recoveries (down → up), for the registry to react.
    recoveries: watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for `client`, down until the watcher connected.
    pub(super) fn new(client: redis::Client) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            failed: Notify::new(),
            recoveries: watch::channel(0).0,
        }
    }

    /// The client, for connections of their own (pub/sub).
    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Whether Redis answered last time.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Resolves each time the store comes back up.
    pub(super) fn recovered(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    fn current(&self) -> Option<ConnectionManager> {
        // Never held across an await and no code under it can panic; recover from poison.
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection, or [`StoreError::Down`] at once while Redis is unreachable.
    pub(super) fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if !self.is_up() {
            return Err(StoreError::Down);
        }
        self.current().ok_or(StoreError::Down)
    }

    /// Passes a command's result through, taking the store down if the error says Redis is
    /// unreachable (as opposed to a refused command).
    pub(super) fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, StoreError> {
        result.map_err(|e| {
            if unreachable(&e) && self.up.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "redis unreachable: the registry is unavailable");
                self.failed.notify_one();
            }
            StoreError::Redis(e)
        })
    }

    /// Keeps the flag true to Redis until `stop`: connects, then checks every [`RETRY`] while
    /// down (waiting for a failure while up).
    pub(super) async fn watch(&self, stop: CancellationToken) {
        let mut logged_down = false;
        loop {
            if self.is_up() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.failed.notified() => {}
                }
                continue;
            }
            match self.try_connect().await {
                Ok(()) => {
                    self.up.store(true, Ordering::Release);
                    tracing::info!("redis reachable: the registry is available");
                    logged_down = false;
                    self.recoveries.send_modify(|n| *n += 1);
                    continue;
                }
                Err(e) if !logged_down => {
                    tracing::warn!(error = %e, "cannot reach redis; retrying");
                    logged_down = true;
                }
                Err(e) => tracing::debug!(error = %e, "redis still unreachable"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// One attempt: a connection if there is none, then a `PING` through it.
    async fn try_connect(&self) -> Result<(), RedisError> {
        let mut conn = match self.current() {
            Some(c) => c,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_number_of_retries(1)
                    .set_max_delay(100);
                let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                c
            }
        };
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }
}

/// Whether an error means Redis cannot be used now (rather than that it refused a command).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError | ErrorKind::TryAgain | ErrorKind::ClusterDown
        )
}
