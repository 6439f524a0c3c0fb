//! The tunables of one client connection.

use std::time::Duration;

/// Tunables of one client connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Credit each stream starts with per direction, in bytes: what a stream's receiver buffers
    /// at most until auto-tuning finds the window is its bottleneck (see the module doc).
    pub initial_window: u32,
    /// Largest receive window auto-tuning may grow a stream to, in bytes: the most we ever
    /// buffer for one stream and direction. Equal to `initial_window` turns auto-tuning off;
    /// below it counts as equal, and it is capped at 1 GiB (what a peer accepts).
    pub max_window: u32,
    /// Largest payload of one data frame, in bytes.
    pub max_frame_size: u32,
    /// Most concurrent streams; the server answers 503 past it, the client refuses them.
    pub max_streams: usize,
    /// How often to ping the peer.
    pub ping_interval: Duration,
    /// A peer silent (no frame, no pong) for this long is considered dead.
    pub dead_after: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            initial_window: 1024 * 1024,
            max_window: 16 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_streams: 1024,
            ping_interval: Duration::from_secs(20),
            dead_after: Duration::from_secs(60),
        }
    }
}
