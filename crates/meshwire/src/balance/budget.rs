//! A retry budget: retries are allowed as a fraction of recent calls.
//!
//! A fixed "retry 3 times" policy turns an overloaded service into a service
//! with four times the load, exactly when it can least afford it. A budget
//! bounds the extra load instead: every call deposits `ratio` of a retry,
//! every retry withdraws one, and only what was deposited in the last `ttl`
//! counts. With the default ratio 0.2, retries add at most 20 % to the
//! traffic however badly things go. A small reserve (`min_per_sec × ttl`
//! retries) lets a client that makes few calls still retry the odd failure.
//!
//! This is tower's `TpsBudget` (itself Finagle's `RetryBudget`), sans-IO:
//! `now` is a parameter, so tests drive time by hand.

use std::time::{Duration, Instant};

/// Slots in the sliding window. Deposits leave the window one slot at a time,
/// so one lives between `9/10 × ttl` and `ttl`; more slots would be finer and
/// cost more per call. Ten is tower's choice.
const SLOTS: usize = 10;

/// One retry, in the fixed-point unit the balance is kept in. Integer
/// arithmetic keeps the budget exact (1/0.2 in `f32` is not quite 5).
const RETRY: i64 = 1000;

/// Retries as a fraction of recent calls, plus a reserve; see the module docs.
///
/// Call order: [`deposit`](Self::deposit) once for every call (first
/// attempts, not retries), then [`withdraw`](Self::withdraw) before each
/// retry; retry only if it returned true.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Net balance per slot: deposits minus withdrawals, in `RETRY` units.
    slots: [i64; SLOTS],
    /// The slot that `head_start` begins.
    head: usize,
    /// Start of the head slot; `None` until first used.
    head_start: Option<Instant>,
    slot_len: Duration,
    /// What one call deposits, in `RETRY` units.
    deposit: i64,
    /// Always available, in `RETRY` units.
    reserve: i64,
}

impl Default for RetryBudget {
    /// 20 % of calls, at least 10 retries per second, over 10 seconds.
    fn default() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per call (0.2 = one retry per five
    /// calls; clamped to `0..=1000`, NaN counts as 0), plus `min_per_sec`
    /// retries per second whatever the traffic, both counted over the last
    /// `ttl`.
    pub fn new(ratio: f32, min_per_sec: u32, ttl: Duration) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            f64::from(ratio).clamp(0.0, 1000.0)
        };
        let deposit = (ratio * RETRY as f64).round() as i64;
        let reserve = (f64::from(min_per_sec) * ttl.as_secs_f64() * RETRY as f64) as i64;
        Self {
            slots: [0; SLOTS],
            head: 0,
            head_start: None,
            // A zero ttl would give zero-length slots; one nanosecond keeps the
            // window arithmetic defined and still forgets everything at once.
            slot_len: (ttl / SLOTS as u32).max(Duration::from_nanos(1)),
            deposit,
            reserve,
        }
    }

    /// Records a call (a first attempt) made at `now`.
    pub fn deposit(&mut self, now: Instant) {
        self.advance(now);
        self.slots[self.head] = self.slots[self.head].saturating_add(self.deposit);
    }

    /// Asks for one retry at `now`: true (and the retry is charged) if the
    /// budget allows it, false if the caller must give up instead.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.advance(now);
        if self.balance() < RETRY {
            return false;
        }
        self.slots[self.head] = self.slots[self.head].saturating_sub(RETRY);
        true
    }

    /// Retries available at `now` (whole ones), without charging any.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.advance(now);
        u32::try_from(self.balance().max(0) / RETRY).unwrap_or(u32::MAX)
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .fold(self.reserve, |acc, &s| acc.saturating_add(s))
    }

    /// Moves the window so that the head slot contains `now`, emptying the
    /// slots that fall out. A `now` before the head slot (timestamps taken on
    /// different threads) is treated as inside it.
    fn advance(&mut self, now: Instant) {
        let Some(start) = self.head_start else {
            self.head_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let steps = elapsed.as_nanos() / self.slot_len.as_nanos();
        if steps == 0 {
            return;
        }
        if steps >= SLOTS as u128 {
            self.slots = [0; SLOTS];
        } else {
            for _ in 0..steps {
                self.head = (self.head + 1) % SLOTS;
                self.slots[self.head] = 0;
            }
        }
        // Keep slot boundaries on the original grid, so how often the budget
        // is touched never changes when a deposit expires.
        let moved = u32::try_from(steps)
            .ok()
            .and_then(|s| self.slot_len.checked_mul(s))
            .and_then(|d| start.checked_add(d))
            .unwrap_or(now);
        self.head_start = Some(moved);
    }
}
