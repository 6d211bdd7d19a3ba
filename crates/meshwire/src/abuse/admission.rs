//! The accept-time gate: whether a new connection may take the node's
//! time at all. It runs in the accept loop before any TLS work, so a
//! refused connection costs an `accept` and a `close`.
//!
//! An admitted connection holds a [`Ticket`]: one place under
//! `max_links` (and its address's `max_links_per_ip`) for as long as the
//! connection lives, and one handshake slot under `max_handshakes` (and
//! its address's `max_handshakes_per_ip`) until [`Ticket::handshake_done`]
//! (link up) or the connection ends. The per-address cap on handshakes is
//! what keeps a flood from a few addresses from taking every slot: other
//! addresses still get to shake hands. The ticket
//! travels with the connection (accept task, then the engine's `Conn`) and
//! gives everything back when dropped, however the connection ends.

use super::strikes::{Count, Strikes, Verdict};
use super::LogThrottle;
use crate::config::NodeConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a connection was turned away at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    MaxLinks(usize),
    MaxLinksPerIp(usize),
    MaxHandshakes(usize),
    MaxHandshakesPerIp(usize),
    /// The address is refused for this much longer, after this rule.
    CoolingOff(Duration, String),
    /// This connection was the address's last strike.
    StruckOut(String),
}

impl Rejection {
    /// The `reason` label of `meshwire_connections_refused_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Rejection::MaxLinks(_) => "max_links",
            Rejection::MaxLinksPerIp(_) => "max_links_per_ip",
            Rejection::MaxHandshakes(_) => "max_handshakes",
            Rejection::MaxHandshakesPerIp(_) => "max_handshakes_per_ip",
            Rejection::CoolingOff(..) => "cooling_off",
            Rejection::StruckOut(_) => "struck_out",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::MaxLinks(n) => write!(f, "too many links (max_links {n})"),
            Rejection::MaxLinksPerIp(n) => {
                write!(f, "too many links from this address (max_links_per_ip {n})")
            }
            Rejection::MaxHandshakes(n) => {
                write!(f, "too many handshakes in progress (max_handshakes {n})")
            }
            Rejection::MaxHandshakesPerIp(n) => write!(
                f,
                "too many handshakes in progress from this address (max_handshakes_per_ip {n})"
            ),
            Rejection::CoolingOff(left, rule) => write!(
                f,
                "address refused for another {:.0} s ({rule})",
                left.as_secs_f64().ceil()
            ),
            Rejection::StruckOut(rule) => write!(f, "address refused ({rule})"),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    links: usize,
    handshakes: usize,
}

#[derive(Debug)]
struct State {
    links: usize,
    handshakes: usize,
    /// Per address: its links, and how many of them are in their
    /// handshake. An entry goes with its last link, so the map is bounded
    /// by `max_links`.
    per_ip: HashMap<IpAddr, PerIp>,
    strikes: Strikes<IpAddr>,
    log: LogThrottle,
    strike_log: LogThrottle,
}

/// The gate, shared by the accept loop and every ticket.
#[derive(Debug)]
pub(crate) struct Admission {
    max_links: usize,
    max_links_per_ip: usize,
    max_handshakes: usize,
    max_handshakes_per_ip: usize,
    state: Mutex<State>,
}

impl Admission {
    pub(crate) fn new(cfg: &NodeConfig) -> Arc<Self> {
        Arc::new(Self {
            max_links: cfg.max_links,
            max_links_per_ip: cfg.max_links_per_ip,
            max_handshakes: cfg.max_handshakes,
            max_handshakes_per_ip: cfg.max_handshakes_per_ip,
            state: Mutex::new(State {
                links: 0,
                handshakes: 0,
                per_ip: HashMap::new(),
                strikes: Strikes::new(cfg.strikes),
                log: LogThrottle::default(),
                strike_log: LogThrottle::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip` (`None`: a Unix socket or `mem:`), or
    /// says why not. Refusals are counted and logged (at most a line a
    /// second) here.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        remote: &str,
        now: Instant,
    ) -> Result<Ticket, Rejection> {
        let mut st = self.lock();
        let verdict = self.check(&mut st, ip, now);
        match verdict {
            Ok(()) => {
                st.links += 1;
                st.handshakes += 1;
                if let Some(ip) = ip {
                    let here = st.per_ip.entry(ip).or_default();
                    here.links += 1;
                    here.handshakes += 1;
                }
                Ok(Ticket {
                    admission: self.clone(),
                    ip,
                    handshaking: true,
                })
            }
            Err(rejection) => {
                metrics::counter!("meshwire_connections_refused_total", "reason" => rejection.label())
                    .increment(1);
                if let Some(skipped) = st.log.allow(now) {
                    tracing::warn!(
                        %remote,
                        reason = %rejection,
                        skipped,
                        links = st.links,
                        handshakes = st.handshakes,
                        "connection refused at accept"
                    );
                }
                Err(rejection)
            }
        }
    }

    fn check(&self, st: &mut State, ip: Option<IpAddr>, now: Instant) -> Result<(), Rejection> {
        if let Some(ip) = ip {
            if let Some((left, why)) = st.strikes.refused(&ip, now) {
                return Err(Rejection::CoolingOff(left, st.strikes.rule(why)));
            }
            match st.strikes.record(ip, Count::Connection, now) {
                Verdict::Fine => {}
                Verdict::Strike(n) => {
                    metrics::counter!("meshwire_strikes_total", "count" => Count::Connection.label())
                        .increment(1);
                    if let Some(skipped) = st.strike_log.allow(now) {
                        tracing::warn!(%ip, strike = n, skipped, "strike: too many new connections");
                    }
                }
                Verdict::StruckOut => {
                    metrics::counter!("meshwire_strikes_total", "count" => Count::Connection.label())
                        .increment(1);
                    return Err(Rejection::StruckOut(st.strikes.rule(Count::Connection)));
                }
            }
        }
        if st.links >= self.max_links {
            return Err(Rejection::MaxLinks(self.max_links));
        }
        let here = ip
            .and_then(|ip| st.per_ip.get(&ip).copied())
            .unwrap_or_default();
        if ip.is_some() && self.max_links_per_ip > 0 && here.links >= self.max_links_per_ip {
            return Err(Rejection::MaxLinksPerIp(self.max_links_per_ip));
        }
        if st.handshakes >= self.max_handshakes {
            return Err(Rejection::MaxHandshakes(self.max_handshakes));
        }
        if ip.is_some()
            && self.max_handshakes_per_ip > 0
            && here.handshakes >= self.max_handshakes_per_ip
        {
            return Err(Rejection::MaxHandshakesPerIp(self.max_handshakes_per_ip));
        }
        Ok(())
    }

    /// Links and handshakes held now (for tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.links, st.handshakes, st.per_ip.len())
    }
}

/// An admitted connection's places under the limits; see the module docs.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    handshaking: bool,
}

impl Ticket {
    /// The handshake is over (link up): the handshake slot is free again.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            let mut st = self.admission.lock();
            st.handshakes -= 1;
            if let Some(here) = self.ip.and_then(|ip| st.per_ip.get_mut(&ip)) {
                here.handshakes -= 1;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshake_done();
        let mut st = self.admission.lock();
        st.links -= 1;
        if let Some(ip) = self.ip {
            if let Some(here) = st.per_ip.get_mut(&ip) {
                here.links -= 1;
                if here.links == 0 {
                    st.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// How a connection came to be, for the engine: when it was opened (the
/// handshake deadline counts from then) and, if accepted, its ticket.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) at: Instant,
    pub(crate) ticket: Option<Ticket>,
}

impl Opened {
    /// A connection this node dialled: no ticket.
    pub(crate) fn dialled(at: Instant) -> Self {
        Self { at, ticket: None }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is how a test reports failure
    use super::*;

    fn gate(links: usize, per_ip: usize, handshakes: usize) -> Arc<Admission> {
        Admission::new(&NodeConfig {
            max_links: links,
            max_links_per_ip: per_ip,
            max_handshakes: handshakes,
            max_handshakes_per_ip: 0,
            ..NodeConfig::default()
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn each_limit_refuses_the_one_past_it_and_tickets_give_back_their_places() {
        let now = Instant::now();
        let g = gate(4, 2, 3);
        let mut a = g.admit(ip(1), "a", now).unwrap();
        let b = g.admit(ip(1), "b", now).unwrap();
        assert_eq!(
            g.admit(ip(1), "c", now).unwrap_err(),
            Rejection::MaxLinksPerIp(2)
        );
        let c = g.admit(ip(2), "c", now).unwrap();
        assert_eq!(
            g.admit(ip(3), "d", now).unwrap_err(),
            Rejection::MaxHandshakes(3)
        );
        a.handshake_done();
        a.handshake_done(); // once only
        let d = g.admit(None, "unix", now).unwrap();
        assert_eq!(g.admit(None, "e", now).unwrap_err(), Rejection::MaxLinks(4));
        assert_eq!(g.held(), (4, 3, 2));
        drop((a, b, c, d));
        assert_eq!(g.held(), (0, 0, 0), "every place is given back");
    }

    #[test]
    fn one_address_cannot_take_every_handshake_slot() {
        let now = Instant::now();
        let g = Admission::new(&NodeConfig {
            max_handshakes: 4,
            max_handshakes_per_ip: 2,
            ..NodeConfig::default()
        });
        let mut a = g.admit(ip(1), "a", now).unwrap();
        let _b = g.admit(ip(1), "b", now).unwrap();
        assert_eq!(
            g.admit(ip(1), "c", now).unwrap_err(),
            Rejection::MaxHandshakesPerIp(2)
        );
        let _c = g.admit(ip(2), "other", now).unwrap();
        // A link that is up no longer counts as a handshake.
        a.handshake_done();
        let _d = g.admit(ip(1), "d", now).unwrap();
        assert_eq!(g.held(), (4, 3, 2));
    }

    #[test]
    fn unix_and_mem_connections_have_no_per_address_limit() {
        let now = Instant::now();
        let g = gate(100, 1, 100);
        let held: Vec<Ticket> = (0..50).map(|_| g.admit(None, "u", now).unwrap()).collect();
        assert_eq!(g.held(), (50, 50, 0));
        drop(held);
    }

    #[test]
    fn an_address_that_opens_too_many_connections_is_cooled_off() {
        let now = Instant::now();
        let mut cfg = NodeConfig::default();
        cfg.strikes.max_connections_per_ip = 10;
        cfg.strikes.strikes_to_refuse = 2;
        let g = Admission::new(&cfg);
        let mut last = None;
        for i in 0..22 {
            match g.admit(ip(9), "flood", now) {
                Ok(t) => drop(t),
                Err(e) => {
                    last = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = last.unwrap();
        assert_eq!(i, 21, "10 allowed, a strike, 10 more, the last strike");
        assert!(matches!(e, Rejection::StruckOut(_)), "{e}");
        let e = g.admit(ip(9), "again", now).unwrap_err();
        assert!(matches!(e, Rejection::CoolingOff(..)), "{e}");
        assert!(e.to_string().contains("refused for another 30 s"), "{e}");
        g.admit(ip(8), "neighbour", now).unwrap();
        g.admit(ip(9), "later", now + cfg.strikes.cool_off).unwrap();
    }
}
