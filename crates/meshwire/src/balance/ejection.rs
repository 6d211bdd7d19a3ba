//! Outlier ejection: take an endpoint that keeps failing out of rotation for
//! a while, longer each time it comes back and fails again.
//!
//! Failure detection (membership) removes endpoints that are *dead*; ejection
//! handles the ones that are alive but broken — answering every call with an
//! error, often faster than healthy ones, which makes them attractive to a
//! latency-driven policy. The rules follow Envoy's consecutive-errors
//! detector:
//!
//! - `consecutive_failures` failed calls in a row eject the endpoint; any
//!   success resets the count (one success shows the endpoint can serve).
//! - The k-th ejection lasts `base × 2^(k-1)`, capped at `max`: an endpoint
//!   that fails right after returning is given exponentially more time.
//! - The ejection count is forgiven gradually: it drops by one for every full
//!   `max` period the endpoint spends back in service, so an endpoint that
//!   recovered for good returns to short ejections, while one that flaps keeps
//!   long ones.
//! - An ejection ends by time only. Calls that were in flight when it began
//!   may still report, and the balancer may still pick an ejected endpoint
//!   when every candidate is ejected; those results do not extend or lift it.

use std::time::{Duration, Instant};

/// When an endpoint is ejected, and for how long.
///
/// The defaults (5 failures, 1 s, 30 s) match Envoy's outlier detection.
/// Set `consecutive_failures` to 0 to turn ejection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EjectionConfig {
    /// Failed calls in a row that eject an endpoint; 0 disables ejection.
    pub consecutive_failures: u32,
    /// Length of a first ejection; each further one doubles it.
    pub base: Duration,
    /// The longest an ejection lasts, and the time in service after which one
    /// past ejection is forgiven.
    pub max: Duration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl EjectionConfig {
    /// A configuration that never ejects.
    pub const fn disabled() -> Self {
        Self {
            consecutive_failures: 0,
            base: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    /// Length of the `k`-th ejection (`k ≥ 1`): `base × 2^(k-1)`, capped at `max`.
    fn backoff(&self, k: u32) -> Duration {
        let shift = k.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// One endpoint's failure history.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outlier {
    /// Failures since the last success or ejection.
    failures: u32,
    /// Ejections not yet forgiven.
    ejections: u32,
    /// The current or last ejection: `(start, end)`.
    ejected: Option<(Instant, Instant)>,
}

impl Outlier {
    /// Whether the endpoint is out of rotation at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected.is_some_and(|(_, until)| now < until)
    }

    /// When the current or last ejection started.
    pub(crate) fn ejected_at(&self) -> Option<Instant> {
        self.ejected.map(|(at, _)| at)
    }

    /// A call succeeded.
    pub(crate) fn on_success(&mut self) {
        self.failures = 0;
    }

    /// A call failed at `now`. Returns true if this ejected the endpoint.
    pub(crate) fn on_failure(&mut self, now: Instant, cfg: &EjectionConfig) -> bool {
        if cfg.consecutive_failures == 0 || self.is_ejected(now) {
            // Off, or already out: results of calls that were in flight when
            // it was ejected say nothing new.
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures < cfg.consecutive_failures {
            return false;
        }
        self.forgive(now, cfg);
        self.ejections = self.ejections.saturating_add(1);
        let until = now.checked_add(cfg.backoff(self.ejections)).unwrap_or(now);
        self.ejected = Some((now, until));
        self.failures = 0;
        true
    }

    /// Forgets one past ejection per full `max` spent in service since the
    /// last one ended.
    fn forgive(&mut self, now: Instant, cfg: &EjectionConfig) {
        let Some((_, until)) = self.ejected else {
            return;
        };
        let served = now.saturating_duration_since(until);
        if cfg.max.is_zero() {
            self.ejections = 0;
            return;
        }
        let periods = served.as_nanos() / cfg.max.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.ejections = self.ejections.saturating_sub(periods);
    }
}
