//! The paths from the load generator to a backend, and the backends, as the tables and the
//! JSON file name them.

use serde::Serialize;

/// A way from the load generator to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight to the backend.
    Direct,
    /// Through `tunnel-server` and `tunnel-client`.
    Tunnel,
    /// Through rathole's server and client.
    Rathole,
    /// Through bore's server and `bore local`.
    Bore,
    /// Through two raw TCP relays: the floor of a two-process tunnel.
    Relay,
}

impl PathKind {
    /// Every path, in the order of the tables.
    pub const ALL: [PathKind; 5] = [
        PathKind::Direct,
        PathKind::Tunnel,
        PathKind::Rathole,
        PathKind::Bore,
        PathKind::Relay,
    ];

    /// The key in the JSON file.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Tunnel => "tunnel",
            PathKind::Rathole => "rathole",
            PathKind::Bore => "bore",
            PathKind::Relay => "relay",
        }
    }

    /// The name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Tunnel => "**tunnel**",
            PathKind::Rathole => "rathole 0.5",
            PathKind::Bore => "bore 0.6",
            PathKind::Relay => "TCP relay ×2 (floor)",
        }
    }
}

/// Which backend a figure was measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// nginx serving files ([`crate::nginx`]).
    Nginx,
    /// Our own hyper backend ([`crate::backend`]).
    Bench,
}

impl BackendKind {
    /// The key in the JSON file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Nginx => "nginx",
            BackendKind::Bench => "bench",
        }
    }

    /// The name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Nginx => "nginx backend",
            BackendKind::Bench => "bench backend (hyper)",
        }
    }
}
