//! Abuse limits: what keeps a flood of connections, handshakes, pings or
//! reconnects from taking a node down (DESIGN.md §3 "Flow control and
//! limits"; the defaults are on [`NodeConfig`](crate::NodeConfig)).
//!
//! ```text
//!  accept ──► Admission::admit(peer IP)            (accept loop, before any TLS work)
//!              cool-off? connections/IP/window? max_links? max_links_per_ip?
//!              max_handshakes?  ── no ──► closed at once (counted, logged at most 1/s)
//!              │ yes: a Ticket (one link, one handshake slot; released on drop)
//!              ▼
//!  TLS handshake ──► MWIR Hello/Welcome/Resume     both within handshake_timeout of accept
//!              │ engine: node cooling off? links/node/window?  ── Close(Refused, why)
//!              ▼ link up: Ticket::handshake_done frees the handshake slot
//!  link ──► pings/node/window ──► strikes ──► Close(Refused, why) + cool-off
//!       ──► bytes queued > max_pending_bytes ──► congested ──► SlowConsumer after the timeout
//! ```
//!
//! | part | what |
//! |---|---|
//! | [`strikes`] | `Strikes<K>`: windowed counts, strikes, cool-offs, in a bounded table; sans-IO (time is a parameter) |
//! | [`admission`] | `Admission`: the accept-time gate and its `Ticket`s |
//! | [`LogThrottle`] | at most one log line a second per kind of refusal, with the count of those left out |
//!
//! Per-IP limits do not apply to Unix-socket and `mem:` connections: they
//! have no address, and come from this host or process.

pub(crate) mod admission;
pub(crate) mod strikes;

use std::time::{Duration, Instant};

/// Rate-limits a log line: a flood must not turn into a flood of logs.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    last: Option<Instant>,
    skipped: u64,
}

impl LogThrottle {
    const EVERY: Duration = Duration::from_secs(1);

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// left out since the last one; `None` (and counted) otherwise.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.allow(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(t.allow(t0 + Duration::from_millis(1500)), None);
    }
}
