//! Phi-accrual failure detection (Hayashibara et al., as in Akka and
//! Cassandra), sans-IO: time is a parameter.
//!
//! Instead of "dead after T", phi says how unlikely the current silence is
//! given the heartbeat intervals seen so far: phi = -log10(P(silence this
//! long)). A steady instance is suspected soon after it misses a few beats;
//! a jittery one gets more slack. A hard cap (the client's detection time,
//! 3 s by default) bounds detection whatever the history.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Intervals remembered per instance.
const SAMPLES: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct PhiDetector {
    intervals_ms: VecDeque<f64>,
    last: Instant,
    /// Lower bound on the standard deviation: perfectly regular beats
    /// would otherwise make the detector trigger on the first late one.
    min_std_ms: f64,
    /// Extra silence tolerated on top of the mean (GC pauses, scheduling).
    pause_ms: f64,
}

impl PhiDetector {
    /// A detector for an instance first heard at `now`, expected to beat
    /// every `interval`.
    pub(crate) fn new(now: Instant, interval: Duration) -> Self {
        let ms = interval.as_secs_f64() * 1e3;
        // Seed with the advertised interval (±25 %) so the first silence
        // is judged sensibly before real samples accumulate.
        let intervals_ms = VecDeque::from(vec![ms * 0.75, ms * 1.25]);
        Self {
            intervals_ms,
            last: now,
            min_std_ms: (ms / 4.0).max(50.0),
            pause_ms: ms,
        }
    }

    pub(crate) fn heartbeat(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last).as_secs_f64() * 1e3;
        self.last = now;
        if self.intervals_ms.len() == SAMPLES {
            self.intervals_ms.pop_front();
        }
        self.intervals_ms.push_back(gap);
    }

    pub(crate) fn last(&self) -> Instant {
        self.last
    }

    /// How suspicious the silence since the last heartbeat is.
    pub(crate) fn phi(&self, now: Instant) -> f64 {
        let n = self.intervals_ms.len() as f64;
        let mean = self.intervals_ms.iter().sum::<f64>() / n;
        let var = self
            .intervals_ms
            .iter()
            .map(|x| (x - mean) * (x - mean))
            .sum::<f64>()
            / n;
        let std = var.sqrt().max(self.min_std_ms);
        let t = now.saturating_duration_since(self.last).as_secs_f64() * 1e3;
        // Logistic approximation of the normal CDF (Akka's).
        let y = (t - (mean + self.pause_ms)) / std;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if t > mean + self.pause_ms {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        -p_later.max(f64::MIN_POSITIVE).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_millis(500);

    fn detection_time(d: &PhiDetector, threshold: f64) -> Duration {
        let mut t = Duration::ZERO;
        while d.phi(d.last() + t) < threshold {
            t += Duration::from_millis(10);
            assert!(t < Duration::from_secs(60), "phi never crossed");
        }
        t
    }

    #[test]
    fn steady_beats_are_trusted_and_silence_is_suspected_in_time() {
        let t0 = Instant::now();
        let mut d = PhiDetector::new(t0, BEAT);
        let mut now = t0;
        for _ in 0..40 {
            now += BEAT;
            d.heartbeat(now);
        }
        // One late beat is not a failure.
        assert!(d.phi(now + Duration::from_millis(700)) < 1.0);
        let det = detection_time(&d, 8.0);
        assert!(
            det > Duration::from_millis(900) && det < Duration::from_millis(2500),
            "{det:?}"
        );
    }

    #[test]
    fn jittery_beats_get_more_slack() {
        let t0 = Instant::now();
        let (mut steady, mut jittery) = (PhiDetector::new(t0, BEAT), PhiDetector::new(t0, BEAT));
        let (mut a, mut b) = (t0, t0);
        for i in 0..40u64 {
            a += BEAT;
            steady.heartbeat(a);
            b += Duration::from_millis(if i % 2 == 0 { 150 } else { 850 });
            jittery.heartbeat(b);
        }
        assert!(detection_time(&jittery, 8.0) > detection_time(&steady, 8.0));
    }

    #[test]
    fn phi_grows_with_silence() {
        let t0 = Instant::now();
        let d = PhiDetector::new(t0, BEAT);
        let mut last = -1.0;
        for ms in (0..5000).step_by(100) {
            let p = d.phi(t0 + Duration::from_millis(ms));
            assert!(p >= last, "phi fell at {ms} ms");
            last = p;
        }
        assert!(last > 8.0);
    }
}
