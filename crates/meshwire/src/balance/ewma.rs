//! Peak EWMA latency, the load signal of [`Policy::LeastLoaded`](super::Policy::LeastLoaded).
//!
//! This is Finagle's "peak EWMA" (also in tower and linkerd), with one change
//! that suits a sans-IO core: reading the estimate never changes it, so the
//! result of a pick depends only on what was observed and on `now`, not on
//! how often someone looked.
//!
//! - **Peak-sensitive.** A sample above the current estimate replaces it at
//!   once. A slow endpoint must stop receiving traffic on the first slow
//!   answer, not after an average catches up.
//! - **Time-decayed, not count-decayed.** A sample's weight is
//!   `1 - exp(-Δt / τ)`, where `Δt` is the time since the previous sample. A
//!   busy endpoint and an idle one then forget at the same rate in wall-clock
//!   terms; with a per-sample weight, a busy endpoint would forget a latency
//!   spike in milliseconds and an idle one would remember it for hours.
//! - **Decays toward zero between samples.** An endpoint that was slow and
//!   then got no traffic looks cheaper and cheaper until it is tried again;
//!   that probe is how a recovered endpoint wins its traffic back.

use std::time::{Duration, Instant};

/// τ, the decay constant: after `τ` without samples an estimate is down to
/// `1/e` (37 %) of its value. Finagle's default.
pub(crate) const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// One endpoint's latency estimate, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakEwma {
    /// Estimate at `stamp`; `None` until the first sample.
    last: Option<(f64, Instant)>,
}

impl PeakEwma {
    /// An estimate with no samples.
    pub(crate) const fn new() -> Self {
        Self { last: None }
    }

    /// The estimate at `now`, in nanoseconds, or `None` before any sample
    /// (the caller substitutes a neutral value).
    pub(crate) fn estimate(&self, now: Instant, tau: Duration) -> Option<f64> {
        self.last.map(|(cost, stamp)| cost * decay(now, stamp, tau))
    }

    /// Adds a sample observed at `now`.
    pub(crate) fn observe(&mut self, now: Instant, latency: Duration, tau: Duration) {
        let rtt = latency.as_nanos() as f64;
        let cost = match self.last {
            None => rtt,
            Some((cost, stamp)) => {
                let w = decay(now, stamp, tau);
                let decayed = cost * w;
                if rtt > decayed {
                    rtt
                } else {
                    decayed + rtt * (1.0 - w)
                }
            }
        };
        // A `now` earlier than the stamp (callers racing on timestamps) keeps
        // the newer stamp, so time never runs backwards for this estimate.
        let stamp = match self.last {
            Some((_, stamp)) if stamp > now => stamp,
            _ => now,
        };
        self.last = Some((cost, stamp));
    }

    /// Records a failure observed at `now` after `latency`.
    ///
    /// Failures often come back fast (connection refused, an immediate error
    /// reply); averaging those in would make a broken endpoint look like the
    /// fastest one and pull more traffic into it. So a failure can raise the
    /// estimate but never lower it. Outlier ejection deals with the failures
    /// themselves.
    pub(crate) fn observe_failure(&mut self, now: Instant, latency: Duration, tau: Duration) {
        let current = self.estimate(now, tau).unwrap_or(0.0);
        let rtt = latency.as_nanos() as f64;
        if rtt > current || self.last.is_none() {
            self.observe(now, latency, tau);
        }
    }
}

/// `exp(-Δt / τ)`, the share of an estimate that survives `Δt`.
fn decay(now: Instant, stamp: Instant, tau: Duration) -> f64 {
    let tau = tau.as_nanos() as f64;
    if tau <= 0.0 {
        // No memory at all: only the latest sample counts.
        return if now > stamp { 0.0 } else { 1.0 };
    }
    let elapsed = now.saturating_duration_since(stamp).as_nanos() as f64;
    (-elapsed / tau).exp()
}
