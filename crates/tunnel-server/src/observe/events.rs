//! The live event stream that operators and scripts follow (`GET /api/events`,
//! `GET /api/tunnels/{id}/events`): a tunnel client connected or disconnected, and one summary
//! per proxied request (the access log line's fields).
//!
//! Publishing never waits: events go on a bounded broadcast channel, a subscriber that falls
//! behind misses the oldest ones (and its stream says how many), and with no subscriber at all
//! nothing is even built ([`EventBus::is_followed`]), so the proxy's hot path pays one atomic
//! load.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::auth::KeyId;

/// Events a subscriber may fall behind by before it misses some.
pub const EVENT_QUEUE: usize = 4096;

/// One event, for the API key that owns the tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct ServerEvent {
    /// The key the tunnel belongs to; only its holder sees the event.
    #[serde(skip)]
    pub owner: KeyId,
    /// The tunnel's id.
    pub tunnel: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened; the SSE event name is [`EventKind::name`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventKind {
    /// A tunnel client connected.
    Connected {
        /// Its `agent` (name and version).
        agent: String,
        /// Its address.
        remote: String,
    },
    /// A tunnel client's connection ended.
    Disconnected {
        /// Why, as far as the server knows.
        reason: String,
    },
    /// A proxied request ended (the fields of its access log line).
    Request {
        /// The request id (`X-Request-Id`).
        request_id: String,
        /// Method.
        method: String,
        /// Path within the tunnel.
        path: String,
        /// Status sent (0: none).
        status: u16,
        /// Response body bytes.
        bytes: u64,
        /// Milliseconds until it ended.
        ms: u64,
        /// The log line's `outcome`.
        outcome: &'static str,
    },
}

impl EventKind {
    /// A client `agent` connected from `remote`.
    pub fn connected(agent: String, remote: std::net::SocketAddr) -> Self {
        EventKind::Connected {
            agent,
            remote: remote.to_string(),
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Connected { .. } => "connected",
            EventKind::Disconnected { .. } => "disconnected",
            EventKind::Request { .. } => "request",
        }
    }
}

/// Where events are published and subscribed to.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<ServerEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::with_capacity(EVENT_QUEUE)
    }
}

impl EventBus {
    /// A bus on which a subscriber may fall `capacity` events behind.
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Whether anyone listens (build an event only then).
    pub fn is_followed(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes `kind` for `tunnel` of `owner`, now.
    pub fn publish(&self, owner: KeyId, tunnel: &str, kind: EventKind) {
        if !self.is_followed() {
            return;
        }
        let event = ServerEvent {
            owner,
            tunnel: tunnel.to_string(),
            time: Utc::now(),
            kind,
        };
        // Err only when the last subscriber just left: nobody to tell.
        let _ = self.tx.send(Arc::new(event));
    }

    /// Follows every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ServerEvent>> {
        self.tx.subscribe()
    }
}
