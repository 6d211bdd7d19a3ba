//! Strikes against sources that do something too often: windowed counts,
//! strikes, and cool-offs, in a table that never grows past its bound.
//! Sans-IO like the core: `now` is a parameter, nothing here reads the
//! clock, so the rules are tested on made-up time.
//!
//! The counts are fixed windows of [`StrikeConfig::window`]: within one,
//! the event that goes past the limit is a strike and the count starts
//! again, so a burst collects its strikes at once and a sustained rate one
//! per window. At [`StrikeConfig::strikes_to_refuse`] strikes the source
//! is refused for [`StrikeConfig::cool_off`] and its strikes are cleared;
//! strikes are forgotten one cool-off after the last.

use crate::config::StrikeConfig;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// A `Ping` frame from a node.
    Ping,
    /// A link (MWIR `Hello`) from a node.
    Link,
    /// A connection accepted from an IP address.
    Connection,
}

impl Count {
    fn index(self) -> usize {
        match self {
            Count::Ping => 0,
            Count::Link => 1,
            Count::Connection => 2,
        }
    }

    /// For metrics labels.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Count::Ping => "pings",
            Count::Link => "links",
            Count::Connection => "connections",
        }
    }
}

/// What one more event means for its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Fine,
    /// Over the limit: strike `n`, not yet enough to refuse.
    Strike(u32),
    /// The last strike: refuse the source now and for the cool-off.
    StruckOut,
}

#[derive(Debug)]
struct Record {
    window_start: Instant,
    counts: [u32; 3],
    strikes: u32,
    last_strike: Option<Instant>,
    refused_until: Option<Instant>,
    /// What got it refused.
    why: Count,
}

/// The strike table for one kind of source (IP addresses, or NodeIds).
#[derive(Debug)]
pub(crate) struct Strikes<K> {
    cfg: StrikeConfig,
    table: HashMap<K, Record>,
    /// When full, pruning (a pass over the table) runs at most this often.
    next_prune: Option<Instant>,
    /// Events not counted because the table was full and nothing in it
    /// could be forgotten.
    untracked: u64,
}

impl<K: Hash + Eq + Copy> Strikes<K> {
    pub(crate) fn new(cfg: StrikeConfig) -> Self {
        Self {
            cfg,
            table: HashMap::new(),
            next_prune: None,
            untracked: 0,
        }
    }

    fn limit(&self, what: Count) -> u32 {
        match what {
            Count::Ping => self.cfg.max_pings,
            Count::Link => self.cfg.max_links_per_node,
            Count::Connection => self.cfg.max_connections_per_ip,
        }
    }

    /// The rule `what` breaks, in words, for logs and `Close` reasons.
    pub(crate) fn rule(&self, what: Count) -> String {
        let per = match what {
            Count::Ping => "pings",
            Count::Link => "links from one node",
            Count::Connection => "connections from one address",
        };
        format!(
            "more than {} {per} in {} s, {} times",
            self.limit(what),
            self.cfg.window.as_secs_f64(),
            self.cfg.strikes_to_refuse
        )
    }

    /// While `key` is refused: how much longer, and what got it refused.
    pub(crate) fn refused(&self, key: &K, now: Instant) -> Option<(Duration, Count)> {
        let r = self.table.get(key)?;
        let until = r.refused_until.filter(|t| *t > now)?;
        Some((until - now, r.why))
    }

    /// Counts one `what` by `key` at `now`.
    pub(crate) fn record(&mut self, key: K, what: Count, now: Instant) -> Verdict {
        let limit = self.limit(what);
        if limit == 0 {
            return Verdict::Fine;
        }
        if !self.table.contains_key(&key) && self.table.len() >= self.cfg.max_tracked {
            self.prune(now);
            if self.table.len() >= self.cfg.max_tracked {
                self.untracked += 1;
                metrics::counter!("meshwire_strikes_untracked_total").increment(1);
                return Verdict::Fine;
            }
        }
        let cfg = self.cfg;
        let r = self.table.entry(key).or_insert(Record {
            window_start: now,
            counts: [0; 3],
            strikes: 0,
            last_strike: None,
            refused_until: None,
            why: what,
        });
        if now.saturating_duration_since(r.window_start) >= cfg.window {
            r.window_start = now;
            r.counts = [0; 3];
        }
        if r.last_strike
            .is_some_and(|t| now.saturating_duration_since(t) >= cfg.cool_off)
        {
            r.strikes = 0;
            r.last_strike = None;
        }
        let count = &mut r.counts[what.index()];
        *count += 1;
        if *count <= limit {
            return Verdict::Fine;
        }
        *count = 0;
        r.strikes += 1;
        r.last_strike = Some(now);
        if r.strikes < cfg.strikes_to_refuse.max(1) {
            return Verdict::Strike(r.strikes);
        }
        r.strikes = 0;
        r.last_strike = None;
        r.refused_until = Some(now + cfg.cool_off);
        r.why = what;
        Verdict::StruckOut
    }

    /// Forgets sources with nothing against them: no refusal running, no
    /// strike within a cool-off, no count in the current window. When the
    /// table is full this runs at most once a second.
    fn prune(&mut self, now: Instant) {
        if self.next_prune.is_some_and(|t| now < t) {
            return;
        }
        self.next_prune = Some(now + Duration::from_secs(1));
        let cfg = self.cfg;
        self.table.retain(|_, r| {
            r.refused_until.is_some_and(|t| t > now)
                || r.last_strike
                    .is_some_and(|t| now.saturating_duration_since(t) < cfg.cool_off)
                || now.saturating_duration_since(r.window_start) < cfg.window
        });
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Events not counted because the table was full.
    #[cfg(test)]
    pub(crate) fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StrikeConfig {
        StrikeConfig {
            window: Duration::from_secs(10),
            max_pings: 5,
            max_links_per_node: 2,
            max_connections_per_ip: 3,
            strikes_to_refuse: 3,
            cool_off: Duration::from_secs(30),
            max_tracked: 4,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_collects_its_strikes_at_once_and_is_refused_for_the_cool_off() {
        let t0 = Instant::now();
        let mut s = Strikes::new(cfg());
        let verdicts: Vec<Verdict> = (0..18).map(|_| s.record(1u8, Count::Ping, t0)).collect();
        // 5 allowed, the 6th a strike, and so on: 3 strikes at the 18th.
        assert_eq!(verdicts[4], Verdict::Fine);
        assert_eq!(verdicts[5], Verdict::Strike(1));
        assert_eq!(verdicts[11], Verdict::Strike(2));
        assert_eq!(verdicts[17], Verdict::StruckOut);
        assert_eq!(verdicts.iter().filter(|v| **v != Verdict::Fine).count(), 3);
        let (left, why) = s.refused(&1, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((left, why), (Duration::from_secs(20), Count::Ping));
        assert!(s.refused(&1, t0 + Duration::from_secs(30)).is_none());
        assert!(s.refused(&2, t0).is_none(), "other sources are not touched");
    }

    #[test]
    fn a_rate_under_the_limit_is_never_struck() {
        let t0 = Instant::now();
        let mut s = Strikes::new(cfg());
        // 5 pings per 10 s window, for 10 minutes.
        for i in 0..300u32 {
            let now = t0 + Duration::from_secs(2) * i;
            assert_eq!(s.record(1u8, Count::Ping, now), Verdict::Fine, "ping {i}");
        }
    }

    #[test]
    fn strikes_are_forgotten_one_cool_off_after_the_last() {
        let t0 = Instant::now();
        let mut s = Strikes::new(cfg());
        let strike = |s: &mut Strikes<u8>, at: Instant| {
            let mut last = Verdict::Fine;
            for _ in 0..3 {
                last = s.record(7, Count::Link, at);
            }
            last
        };
        assert_eq!(strike(&mut s, t0), Verdict::Strike(1));
        assert_eq!(
            strike(&mut s, t0 + Duration::from_secs(11)),
            Verdict::Strike(2)
        );
        // A cool-off later, the slate is clean: strike 1 again.
        assert_eq!(
            strike(&mut s, t0 + Duration::from_secs(42)),
            Verdict::Strike(1)
        );
    }

    #[test]
    fn counts_are_kept_apart_and_a_zero_limit_counts_nothing() {
        let t0 = Instant::now();
        let mut s = Strikes::new(StrikeConfig {
            max_connections_per_ip: 0,
            ..cfg()
        });
        for _ in 0..100 {
            assert_eq!(s.record(1u8, Count::Connection, t0), Verdict::Fine);
        }
        assert_eq!(s.len(), 0, "an uncounted event takes no room");
        for _ in 0..2 {
            assert_eq!(s.record(1u8, Count::Link, t0), Verdict::Fine);
        }
        for _ in 0..5 {
            assert_eq!(s.record(1u8, Count::Ping, t0), Verdict::Fine);
        }
        assert_eq!(s.record(1u8, Count::Link, t0), Verdict::Strike(1));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_refused() {
        let t0 = Instant::now();
        let mut s = Strikes::new(cfg());
        for _ in 0..18 {
            s.record(0u32, Count::Ping, t0);
        }
        assert!(s.refused(&0, t0).is_some());
        // A thousand sources, one event each, within one window.
        for k in 1..1000u32 {
            s.record(k, Count::Ping, t0 + MS * k);
        }
        assert_eq!(s.len(), 4, "the table never grows past max_tracked");
        assert!(s.untracked() > 0);
        // After a window, the idle ones make room; the refused one stays.
        let later = t0 + Duration::from_secs(11);
        s.record(5000, Count::Ping, later);
        assert!(s.refused(&0, later).is_some());
        assert_eq!(s.len(), 2);
    }
}
