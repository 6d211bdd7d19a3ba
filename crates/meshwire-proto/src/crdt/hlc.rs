//! The hybrid logical clock that stamps every write of a replicated map.
//!
//! A reading is wall-clock milliseconds (48 bits, good until the year
//! 10889) and a logical counter (16 bits), packed into one `u64` with the
//! milliseconds on top, so readings order as plain integers and the packed
//! value doubles as the entry's *version*. Why a hybrid clock and not the
//! wall clock alone: two writes on one node in the same millisecond, or a
//! wall clock that steps backwards (NTP), would otherwise get equal or
//! decreasing stamps and a later write could lose to an earlier one. Why
//! not a pure logical clock: last-writer-wins should match what people
//! call "later" whenever the clocks are roughly right.
//!
//! The clock never reads time itself (the crate is sans-IO): every call
//! takes `wall_ms`, milliseconds since the Unix epoch from the driver.

use std::fmt;

/// One reading of a [`Hlc`]: `physical_ms << 16 | logical`.
///
/// `Timestamp::ZERO` is below every reading a clock gives, which is why
/// version 0 can mean "absent".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Below every reading: the version of an absent key.
    pub const ZERO: Self = Self(0);
    /// The largest physical time a timestamp holds (2^48 - 1 ms).
    pub const MAX_PHYSICAL_MS: u64 = (1 << 48) - 1;

    /// A timestamp from its parts. `physical_ms` above
    /// [`Timestamp::MAX_PHYSICAL_MS`] is clamped to it (it is past the
    /// year 10889; no real clock gets there).
    pub const fn new(physical_ms: u64, logical: u16) -> Self {
        let ms = if physical_ms > Self::MAX_PHYSICAL_MS {
            Self::MAX_PHYSICAL_MS
        } else {
            physical_ms
        };
        Self(ms << 16 | logical as u64)
    }

    /// The packed form (the version of an entry stamped with it).
    pub const fn from_u64(packed: u64) -> Self {
        Self(packed)
    }

    /// The packed form: orders like the timestamp itself.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> 16
    }

    /// The counter that orders readings within one millisecond.
    pub const fn logical(self) -> u16 {
        // The low 16 bits, by construction of the packing.
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms+{})", self.physical_ms(), self.logical())
    }
}

/// Why the clock refused a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A remote timestamp is further ahead of our wall clock than the skew
    /// bound allows. Accepting it would let one node with a bad clock win
    /// every later write to the keys it touched (and drag every clock that
    /// observes it into the future). Not fatal: the same stamp is accepted
    /// once our clock has caught up to within the bound.
    #[error(
        "remote timestamp {remote_ms} ms is {ahead_ms} ms ahead of our clock ({wall_ms} ms), \
         more than the allowed {max_skew_ms} ms; check that the writer's clock is synchronised"
    )]
    TooFarAhead {
        /// The remote reading's physical time.
        remote_ms: u64,
        /// Our wall clock when we saw it.
        wall_ms: u64,
        /// `remote_ms - wall_ms`.
        ahead_ms: u64,
        /// The configured bound.
        max_skew_ms: u64,
    },
    /// The clock has reached the largest timestamp and cannot advance
    /// (only a wall clock at the year 10889 gets here). Fatal for this
    /// clock.
    #[error("the clock has reached its largest timestamp and cannot advance")]
    Exhausted,
}

/// A hybrid logical clock (Kulkarni et al., 2014) over packed
/// [`Timestamp`]s.
///
/// Guarantees, whatever `wall_ms` the caller passes:
/// - every [`Hlc::now`] is strictly greater than every earlier `now` and
///   than every timestamp passed to a successful [`Hlc::observe`]
///   (monotonic even when the wall clock steps back);
/// - readings stay close to the wall clock: a reading is ahead of the
///   largest `wall_ms` seen only by what was observed (bounded by the skew
///   bound) or by logical overflow (1 ms per 65 536 readings within one
///   millisecond, carried into the physical part rather than wrapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hlc {
    last: Timestamp,
    max_skew_ms: u64,
}

impl Default for Hlc {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_SKEW_MS)
    }
}

impl Hlc {
    /// The default bound on how far ahead of our clock a remote timestamp
    /// may be: NTP keeps hosts within milliseconds, a VM resumed from a
    /// pause or a host without NTP may be seconds off; ten seconds accepts
    /// those and bounds how long a wrong clock can make its writes win.
    pub const DEFAULT_MAX_SKEW_MS: u64 = 10_000;

    /// A clock that has issued nothing yet and accepts remote timestamps
    /// at most `max_skew_ms` ahead of the wall clock.
    pub const fn new(max_skew_ms: u64) -> Self {
        Self {
            last: Timestamp::ZERO,
            max_skew_ms,
        }
    }

    /// The largest timestamp issued or observed so far.
    pub const fn last(&self) -> Timestamp {
        self.last
    }

    /// The bound on remote clock skew, in milliseconds.
    pub const fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// A fresh reading for a local event: the wall clock if it is ahead
    /// of everything seen, else one tick after the last reading. The
    /// packed `+ 1` carries a full logical counter into the milliseconds,
    /// which is how overflow is handled: never a wrap, never a repeat.
    pub fn now(&mut self, wall_ms: u64) -> Result<Timestamp, ClockError> {
        let next = self.last.0.checked_add(1).ok_or(ClockError::Exhausted)?;
        let t = Timestamp(next.max(Timestamp::new(wall_ms, 0).0));
        self.last = t;
        Ok(t)
    }

    /// Checks that a remote timestamp is within the skew bound of
    /// `wall_ms`, without changing the clock. What [`Hlc::observe`]
    /// checks; a replica uses it to vet a whole batch first.
    pub fn check(&self, remote: Timestamp, wall_ms: u64) -> Result<(), ClockError> {
        let limit = wall_ms.saturating_add(self.max_skew_ms);
        if remote.physical_ms() > limit {
            return Err(ClockError::TooFarAhead {
                remote_ms: remote.physical_ms(),
                wall_ms,
                ahead_ms: remote.physical_ms() - wall_ms,
                max_skew_ms: self.max_skew_ms,
            });
        }
        Ok(())
    }

    /// Takes a remote timestamp into account, so that every later
    /// [`Hlc::now`] is greater than it (a write made after seeing a remote
    /// value wins over that value). Refuses, and changes nothing, if the
    /// timestamp is too far ahead.
    ///
    /// Unlike the textbook receive event this issues no reading of its
    /// own: a replica observes every entry it merges and never needs a
    /// stamp for the merge itself, so ticking here would only burn
    /// logical counter values.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<(), ClockError> {
        self.check(remote, wall_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_pack_into_an_ordered_integer() {
        let t = Timestamp::new(1_700_000_000_123, 7);
        assert_eq!(t.physical_ms(), 1_700_000_000_123);
        assert_eq!(t.logical(), 7);
        assert_eq!(Timestamp::from_u64(t.as_u64()), t);
        assert!(Timestamp::new(5, u16::MAX) < Timestamp::new(6, 0));
        assert_eq!(
            Timestamp::new(u64::MAX, 1).physical_ms(),
            Timestamp::MAX_PHYSICAL_MS
        );
    }

    #[test]
    fn now_follows_the_wall_clock_and_ticks_within_a_millisecond() {
        let mut c = Hlc::default();
        assert_eq!(c.now(100).unwrap(), Timestamp::new(100, 0));
        assert_eq!(c.now(100).unwrap(), Timestamp::new(100, 1));
        assert_eq!(c.now(101).unwrap(), Timestamp::new(101, 0));
    }

    #[test]
    fn now_stays_monotonic_when_the_wall_clock_steps_back() {
        let mut c = Hlc::default();
        let a = c.now(5_000).unwrap();
        let b = c.now(1_000).unwrap();
        let d = c.now(4_999).unwrap();
        assert!(a < b && b < d, "{a:?} {b:?} {d:?}");
        assert_eq!(d, Timestamp::new(5_000, 2));
    }

    #[test]
    fn logical_overflow_carries_into_the_milliseconds() {
        let mut c = Hlc::default();
        c.observe(Timestamp::new(10, u16::MAX), 10).unwrap();
        assert_eq!(c.now(10).unwrap(), Timestamp::new(11, 0));
    }

    #[test]
    fn an_exhausted_clock_says_so_instead_of_repeating() {
        let mut c = Hlc::new(u64::MAX);
        c.observe(Timestamp::from_u64(u64::MAX), 0).unwrap();
        assert_eq!(c.now(u64::MAX), Err(ClockError::Exhausted));
        assert_eq!(c.last(), Timestamp::from_u64(u64::MAX));
    }

    #[test]
    fn observe_moves_later_readings_past_the_remote_stamp() {
        let mut c = Hlc::new(1_000);
        c.now(100).unwrap();
        c.observe(Timestamp::new(900, 3), 100).unwrap();
        assert_eq!(c.now(100).unwrap(), Timestamp::new(900, 4));
        // An older remote stamp does not move the clock back.
        c.observe(Timestamp::new(50, 0), 100).unwrap();
        assert_eq!(c.now(100).unwrap(), Timestamp::new(900, 5));
    }

    #[test]
    fn far_future_remote_stamps_are_refused_and_change_nothing() {
        let mut c = Hlc::new(1_000);
        c.now(10_000).unwrap();
        let before = c.last();
        let err = c.observe(Timestamp::new(11_001, 0), 10_000).unwrap_err();
        assert_eq!(
            err,
            ClockError::TooFarAhead {
                remote_ms: 11_001,
                wall_ms: 10_000,
                ahead_ms: 1_001,
                max_skew_ms: 1_000,
            }
        );
        assert_eq!(c.last(), before);
        // Exactly at the bound is accepted.
        c.observe(Timestamp::new(11_000, 9), 10_000).unwrap();
        assert_eq!(c.last(), Timestamp::new(11_000, 9));
    }
}
