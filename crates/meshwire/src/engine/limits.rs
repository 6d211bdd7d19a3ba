//! The engine's share of the abuse limits (`crate::abuse` has the map):
//! strikes against nodes that ping or reconnect too often, and the byte
//! bound on what is queued for one peer. The accept-time limits run
//! before the engine sees a connection (`abuse::admission`).

use super::handshake::send_close;
use super::{Engine, Peer};
use crate::abuse::strikes::{Count, Verdict};
use crate::config::NodeConfig;
use meshwire_proto::session::Session;
use meshwire_proto::wire::{CloseCode, Message as Wire, NodeId};
use std::time::Instant;

/// True when what is queued for a peer is past a limit: more messages
/// than `peer_high_water` or more bytes than `max_pending_bytes`.
pub(crate) fn over_limits(cfg: &NodeConfig, s: &Session) -> bool {
    s.outbox_len() > cfg.peer_high_water || s.queued_bytes() > cfg.max_pending_bytes
}

/// True when a congested peer has caught up: under half of both limits.
pub(crate) fn drained(cfg: &NodeConfig, s: &Session) -> bool {
    s.outbox_len() < cfg.peer_high_water / 2 && s.queued_bytes() <= cfg.max_pending_bytes / 2
}

/// True when a disconnected client's retained session holds too much to
/// keep: more messages than `retained_max_messages` or more bytes than
/// `max_pending_bytes`.
pub(crate) fn over_retention(cfg: &NodeConfig, s: &Session) -> bool {
    s.outbox_len() > cfg.retained_max_messages || s.queued_bytes() > cfg.max_pending_bytes
}

/// Queues a best-effort message unless it would take the peer's queue
/// past `max_pending_bytes`; a message dropped either way is counted.
pub(crate) fn send_best_effort(cfg: &NodeConfig, p: &mut Peer, msg: Wire) {
    let fits = p.session.queued_bytes() + msg.payload_len() <= cfg.max_pending_bytes;
    if !fits || !p.session.send_best_effort(msg) {
        metrics::counter!("meshwire_best_effort_dropped_total").increment(1);
    }
}

/// Why a slow consumer is cut off, with both limits and where it stands.
pub(crate) fn slow_consumer_reason(cfg: &NodeConfig, s: &Session) -> String {
    format!(
        "consumer behind for over {:?}: {} messages unacknowledged (peer_high_water {}), \
         {} bytes queued (max_pending_bytes {})",
        cfg.slow_consumer_timeout,
        s.outbox_len(),
        cfg.peer_high_water,
        s.queued_bytes(),
        cfg.max_pending_bytes
    )
}

impl Engine {
    /// On an accepted connection's `Hello` from `node`: refuses it (and
    /// returns true) while `node` is cooling off, or when this link is its
    /// last strike for reconnecting too often.
    pub(crate) fn refuse_flooding_node(&mut self, now: Instant, conn: u64, node: NodeId) -> bool {
        if let Some((left, why)) = self.strikes.refused(&node, now) {
            let reason = format!(
                "node refused for another {:.0} s ({})",
                left.as_secs_f64().ceil(),
                self.strikes.rule(why)
            );
            // Like `refuse`, but logged at most once a second: a node that
            // keeps knocking must not flood the log.
            if let Some(c) = self.conns.remove(&conn) {
                metrics::counter!("meshwire_links_refused_total").increment(1);
                if let Some(skipped) = self.strike_log.allow(now) {
                    tracing::warn!(remote = %c.remote, peer = %node, %reason, skipped, "link refused");
                }
                send_close(&c.out, CloseCode::Refused, &reason);
            }
            return true;
        }
        match self.strike(now, node, Count::Link) {
            Some(reason) => {
                self.refuse(conn, CloseCode::Refused, reason);
                true
            }
            None => false,
        }
    }

    /// Counts a `Ping` from peer `idx`. At its last strike the link is
    /// closed with `Close(Refused)` saying why (and true is returned: the
    /// rest of what the link sent is not looked at).
    pub(crate) fn count_ping(&mut self, now: Instant, idx: u64) -> bool {
        let Some(node) = self.peers.get(&idx).map(|p| p.node) else {
            return false;
        };
        let Some(reason) = self.strike(now, node, Count::Ping) else {
            return false;
        };
        if let Some(p) = self.peers.get_mut(&idx) {
            p.session.close(CloseCode::Refused, reason);
        }
        self.touch(idx);
        true
    }

    /// Counts one `what` by `node`; at its last strike, returns the
    /// `Close` reason (the node is refused from now on, for the cool-off).
    fn strike(&mut self, now: Instant, node: NodeId, what: Count) -> Option<String> {
        match self.strikes.record(node, what, now) {
            Verdict::Fine => None,
            Verdict::Strike(n) => {
                self.note_strike(now, node, what, n);
                None
            }
            Verdict::StruckOut => Some(self.struck_out(now, node, what)),
        }
    }

    fn note_strike(&mut self, now: Instant, node: NodeId, what: Count, n: u32) {
        metrics::counter!("meshwire_strikes_total", "count" => what.label()).increment(1);
        if let Some(skipped) = self.strike_log.allow(now) {
            tracing::warn!(peer = %node, strike = n, count = what.label(), skipped, "strike");
        }
    }

    /// Counts and logs the last strike; returns the `Close` reason.
    fn struck_out(&mut self, now: Instant, node: NodeId, what: Count) -> String {
        metrics::counter!("meshwire_strikes_total", "count" => what.label()).increment(1);
        metrics::counter!("meshwire_nodes_refused_total", "count" => what.label()).increment(1);
        let reason = format!(
            "refused for {:.0} s: {}",
            self.cfg.strikes.cool_off.as_secs_f64(),
            self.strikes.rule(what)
        );
        if let Some(skipped) = self.strike_log.allow(now) {
            tracing::warn!(peer = %node, %reason, skipped, "node struck out; link closed");
        }
        reason
    }
}
