//! Flow-control policy: the round-trip estimate and when a receive window grows (see
//! "Window auto-tuning" in [`crate::mux`]). Pure bookkeeping with no I/O and no locks, so
//! that the policy can be read, and tested, on its own; [`super::shared`] applies it.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// Upper bound on the credit a peer may grant on one stream; more is a protocol violation.
/// [`super::MuxConfig::max_window`] is capped to it, so that our own grants never trip a peer.
pub(super) const MAX_WINDOW: u64 = 1 << 30;

/// Round-trip measurement with WebSocket pings. The peer's WebSocket answers a ping with a pong
/// carrying the same payload by itself, so this works whatever the peer's version.
#[derive(Debug, Default)]
pub(super) struct Rtt {
    /// Payload of the next ping: a counter, so that a pong can be matched to its ping.
    next_probe: u64,
    /// The latest ping written (payload, when), until its pong arrives. Only the latest counts:
    /// the pong of an older one, or an unsolicited pong (RFC 6455 allows them), is ignored.
    in_flight: Option<(u64, Instant)>,
    /// Smoothed round-trip time, once a pong came back.
    srtt: Option<Duration>,
}

impl Rtt {
    /// The payload of a ping about to be written; records when it went out.
    pub(super) fn probe(&mut self) -> Bytes {
        let probe = self.next_probe;
        self.next_probe = probe.wrapping_add(1);
        self.in_flight = Some((probe, Instant::now()));
        Bytes::copy_from_slice(&probe.to_be_bytes())
    }

    /// A pong arrived: if it answers our latest ping, one more round-trip sample.
    pub(super) fn on_pong(&mut self, payload: &[u8]) {
        let Ok(probe) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let probe = u64::from_be_bytes(probe);
        if let Some((want, sent)) = self.in_flight {
            if want == probe {
                self.srtt = Some(smooth_rtt(self.srtt, sent.elapsed()));
                self.in_flight = None;
            }
        }
    }

    /// The smoothed round-trip time, once a ping was answered.
    pub(super) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Whether a ping is out and not answered yet.
    pub(super) fn probe_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// New smoothed round-trip time after one more sample: the first sample sets it, later ones
/// move it by an eighth (TCP's SRTT, RFC 6298), so that one delayed pong does not swing it.
fn smooth_rtt(srtt: Option<Duration>, sample: Duration) -> Duration {
    match srtt {
        None => sample,
        Some(srtt) => srtt.saturating_mul(7).saturating_add(sample) / 8,
    }
}

/// The receive window of a stream whose reader just consumed a whole `window` of bytes in
/// `elapsed`.
///
/// Under two smoothed round trips means the reader took everything the window allowed as fast
/// as it came: the window is the bottleneck, so it doubles, up to `max`. Anything slower (or no
/// round-trip estimate yet) keeps it: a slow reader must not cost memory. A window never
/// shrinks: credit already granted cannot be taken back.
pub(super) fn next_window(elapsed: Duration, srtt: Option<Duration>, window: u32, max: u32) -> u32 {
    match srtt {
        Some(srtt) if window < max && elapsed < srtt.saturating_mul(2) => {
            window.saturating_mul(2).min(max)
        }
        _ => window,
    }
}

/// Auto-tuning bookkeeping of one stream's receive side, only touched by the writer task when
/// it sends the stream's credit.
#[derive(Debug)]
pub(super) struct Tuning {
    /// Start of the current measurement: the stream's creation, or the credit update that ended
    /// the previous measurement.
    since: Instant,
    /// Bytes credited back to the peer since `since`.
    credited: u64,
}

impl Tuning {
    /// A measurement starting now.
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            credited: 0,
        }
    }

    /// Counts `credited` more bytes returned to the peer. Once a whole `window` has been
    /// credited since the measurement began, returns how long that took and starts the next
    /// measurement.
    pub(super) fn window_consumed(&mut self, credited: u64, window: u32) -> Option<Duration> {
        self.credited += credited;
        if self.credited < u64::from(window) {
            return None;
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.since);
        self.since = now;
        self.credited = 0;
        Some(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_rtt_sample_sets_the_estimate_and_later_ones_move_it_by_an_eighth() {
        assert_eq!(smooth_rtt(None, 40 * MS), 40 * MS);
        assert_eq!(smooth_rtt(Some(40 * MS), 120 * MS), 50 * MS);
        assert_eq!(smooth_rtt(Some(80 * MS), Duration::ZERO), 70 * MS);
        // Converges on a steady sample.
        let mut srtt = Some(200 * MS);
        for _ in 0..100 {
            srtt = Some(smooth_rtt(srtt, 10 * MS));
        }
        let srtt = srtt.expect("set");
        assert!(srtt >= 10 * MS && srtt < 11 * MS, "{srtt:?}");
        // No overflow on absurd samples.
        assert_eq!(
            smooth_rtt(Some(Duration::MAX), Duration::MAX),
            Duration::MAX / 8
        );
    }

    #[test]
    fn window_doubles_when_the_reader_drained_it_within_two_round_trips() {
        let srtt = Some(40 * MS);
        assert_eq!(next_window(30 * MS, srtt, 64 << 10, 4 << 20), 128 << 10);
        assert_eq!(next_window(79 * MS, srtt, 64 << 10, 4 << 20), 128 << 10);
        // Capped at the maximum, never past it.
        assert_eq!(next_window(MS, srtt, 3 << 20, 4 << 20), 4 << 20);
        assert_eq!(next_window(MS, srtt, 4 << 20, 4 << 20), 4 << 20);
        assert_eq!(next_window(MS, srtt, u32::MAX - 1, u32::MAX), u32::MAX);
    }

    #[test]
    fn window_stays_for_a_slow_reader_without_an_estimate_or_when_tuning_is_off() {
        let srtt = Some(40 * MS);
        // Two round trips or more: the reader, not the window, is the limit.
        assert_eq!(next_window(80 * MS, srtt, 64 << 10, 4 << 20), 64 << 10);
        assert_eq!(next_window(10_000 * MS, srtt, 64 << 10, 4 << 20), 64 << 10);
        // No round-trip sample yet: no basis for growth.
        assert_eq!(
            next_window(Duration::ZERO, None, 64 << 10, 4 << 20),
            64 << 10
        );
        // max == initial disables auto-tuning; a window above max (never set so) is kept.
        assert_eq!(
            next_window(Duration::ZERO, srtt, 64 << 10, 64 << 10),
            64 << 10
        );
        assert_eq!(
            next_window(Duration::ZERO, srtt, 128 << 10, 64 << 10),
            128 << 10
        );
        // A zero estimate (impossible in practice) never means "infinitely fast".
        assert_eq!(
            next_window(Duration::ZERO, Some(Duration::ZERO), 64 << 10, 4 << 20),
            64 << 10
        );
    }

    #[test]
    fn a_measurement_ends_after_a_whole_window_of_credit() {
        let mut t = Tuning::new();
        assert_eq!(t.window_consumed(10, 32), None);
        assert_eq!(t.window_consumed(21, 32), None);
        assert!(t.window_consumed(1, 32).is_some());
        // The next measurement starts from zero.
        assert_eq!(t.window_consumed(31, 32), None);
    }

    #[test]
    fn only_the_pong_of_the_latest_probe_is_a_sample() {
        let mut rtt = Rtt::default();
        let first = rtt.probe();
        let second = rtt.probe();
        assert!(rtt.probe_in_flight());
        rtt.on_pong(&first);
        assert_eq!(rtt.srtt(), None, "an older probe");
        rtt.on_pong(b"short");
        assert_eq!(rtt.srtt(), None, "not a probe");
        rtt.on_pong(&second);
        assert!(rtt.srtt().is_some());
        assert!(!rtt.probe_in_flight());
    }
}
