//! The keepalive task: pings the peer every [`super::MuxConfig::ping_interval`] (each pong
//! is also a round-trip sample) and drops a peer silent for longer than
//! [`super::MuxConfig::dead_after`].

use std::sync::Arc;

use tracing::warn;

use super::shared::Shared;

/// Pings until the connection ends, or ends it when the peer went silent.
pub(super) async fn keepalive(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let silent = shared.silent_for();
        if silent > shared.cfg.dead_after {
            warn!(
                silent_secs = silent.as_secs(),
                "peer stopped answering pings"
            );
            shared.shutdown(format!("no pong for {:.1}s", silent.as_secs_f64()));
            return;
        }
        // Through the urgent queue, ahead of queued data: the pong also refreshes the round-trip
        // estimate, which queueing on our side would inflate.
        shared.request_ping();
    }
}
