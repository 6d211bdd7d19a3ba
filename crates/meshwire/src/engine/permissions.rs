//! Permissions in the engine. A router applies its [`Permissions`] to
//! its client peers: each gets its effective [`Rules`] when its link comes
//! up, told to it in a `Grants` message; a refused `Publish` or
//! `Subscribe` is dropped, counted, logged once per (peer, operation,
//! pattern) and answered with `Denied`. A reload swaps the table, re-checks
//! every client subscription (revoking what is no longer allowed) and
//! sends fresh `Grants`, without touching links. A client keeps what its
//! router granted in [`Granted`](crate::security::permissions::Granted)
//! (checked by the API before anything is sent) and turns `Denied` into
//! typed errors.

use super::{Engine, Level, PeerKey};
use crate::security::permissions::{notice_name, Denial, Permissions, Rules};
use meshwire_proto::wire::{
    Grants, Lane, Message as Wire, NodeId, Operation, Role, Subject, PERMISSIONS_VERSION,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Distinct (peer, operation, pattern) denials logged between reloads.
/// Past it denials are still counted, not logged: a client probing many
/// subjects must not flood the log or grow this set.
const DENIAL_LOG_MAX: usize = 4096;

/// Which denials were logged already.
#[derive(Debug, Default)]
pub(crate) struct DenialLog {
    seen: HashSet<(NodeId, Operation, String)>,
    full: bool,
}

impl DenialLog {
    /// True the first time a key is seen (while there is room).
    fn first(&mut self, key: (NodeId, Operation, String)) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen.len() >= DENIAL_LOG_MAX {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    max = DENIAL_LOG_MAX,
                    "more distinct permission denials than are remembered; further ones are \
                     counted (meshwire_permission_denied_total) but not logged until the next \
                     reload"
                );
            }
            return false;
        }
        self.seen.insert(key)
    }
}

impl Engine {
    /// Installs a new permissions table (a reload): every client's rules
    /// are recomputed, its subscriptions re-checked, its grants re-sent.
    pub(crate) fn set_permissions(&mut self, now: Instant, permissions: Arc<Permissions>) {
        self.permissions = Some(permissions);
        self.denial_log = DenialLog::default();
        let clients: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.role == Role::Client)
            .map(|(&i, _)| i)
            .collect();
        let n = clients.len();
        for idx in clients {
            self.apply_rules(now, idx);
        }
        tracing::info!(clients = n, "permissions in force");
    }

    /// Computes a client peer's rules, tells it (if its link is up), and
    /// ends its subscriptions they no longer allow. Called on every
    /// link-up (the node behind a named session may have changed, and the
    /// rules may have changed while it was away) and on every reload.
    pub(crate) fn apply_rules(&mut self, now: Instant, idx: u64) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        let rules = self
            .permissions
            .as_ref()
            .map(|t| Arc::new(t.rules_for(p.node)));
        p.rules = rules.clone();
        // The grants go first, so that a client that learns of a revoked
        // subscription already holds the rules that revoked it.
        if p.session.is_up() && p.version >= PERMISSIONS_VERSION {
            let grants = rules.as_ref().map(|r| Box::new(r.grants().clone()));
            self.send_to(
                now,
                idx,
                Level::Reliable(Lane::Ordered),
                Wire::Grants { rules: grants },
            );
        }
        let (Some(rules), Some(p)) = (rules, self.peers.get(&idx)) else {
            return;
        };
        let mut revoked: Vec<(u64, Subject, Denial)> = p
            .subs
            .iter()
            .filter_map(|(&sid, (pattern, _))| {
                let d = rules.check_subscribe(pattern).err()?;
                Some((sid, pattern.clone(), d))
            })
            .collect();
        revoked.sort_by_key(|r| r.0);
        for (sid, pattern, denial) in revoked {
            self.client_unsubscribe(now, idx, sid);
            self.deny(now, idx, denial, pattern, Some(sid), None);
        }
    }

    /// Why a client peer's rules refuse what `check` checks, if they do.
    /// Costs nothing (no lookup) on a router without permissions; borrows
    /// the rules rather than cloning them, since it runs per publication.
    pub(crate) fn refused(
        &self,
        idx: u64,
        check: impl FnOnce(&Rules) -> Result<(), Denial>,
    ) -> Option<Denial> {
        self.permissions.as_ref()?;
        let rules = self.peers.get(&idx)?.rules.as_deref()?;
        check(rules).err()
    }

    /// A client's operation was refused: count it, log it once per peer
    /// and pattern, and tell the client when that helps it (a subscription
    /// to end, a request to fail) or when it is the first such denial.
    pub(crate) fn deny(
        &mut self,
        now: Instant,
        idx: u64,
        denial: Denial,
        subject: Subject,
        sid: Option<u64>,
        reply_to: Option<Subject>,
    ) {
        let Some(p) = self.peers.get(&idx) else {
            return;
        };
        let (node, version) = (p.node, p.version);
        self.denied += 1;
        metrics::counter!("meshwire_permission_denied_total", "op" => denial.op.as_str())
            .increment(1);
        let key = denial.by.clone().unwrap_or_else(|| denial.name.clone());
        let first = self.denial_log.first((node, denial.op, key));
        if first {
            tracing::warn!(
                peer = %node,
                op = %denial.op,
                name = %denial.name,
                denied_by = denial.by.as_deref().unwrap_or("(no allow pattern)"),
                "permission denied (logged once per peer and pattern)"
            );
        }
        if version >= PERMISSIONS_VERSION && (first || sid.is_some() || reply_to.is_some()) {
            self.send_to(
                now,
                idx,
                Level::Reliable(Lane::Ordered),
                Wire::Denied {
                    op: denial.op,
                    subject,
                    sid,
                    reply_to,
                },
            );
        }
    }

    /// Client: the router says what this node may do.
    pub(crate) fn on_grants(&mut self, rules: Option<Box<Grants>>) {
        let restricted = rules.is_some();
        self.granted.set(rules.map(|g| Rules::new(self.id, *g)));
        tracing::debug!(restricted, "permissions granted by the router");
        if std::mem::take(&mut self.awaiting_grants) {
            let _ = self.ready.send(true);
        }
    }

    /// Client: the router refused a publication or a subscription.
    pub(crate) fn on_denied(
        &mut self,
        op: Operation,
        subject: Subject,
        sid: Option<u64>,
        reply_to: Option<Subject>,
    ) {
        tracing::warn!(%op, %subject, "the router refused this by its permissions");
        let name = notice_name(op, &subject);
        if let Some(sid) = sid {
            if let Some(sub) = self.user_subs.remove(&sid) {
                if let Some(sink) = &sub.sink {
                    let _ = sink.shared.denied.set((op, name.clone()));
                }
                if Some(sid) == self.inbox_sid {
                    // Never expected (a node's own inbox is always allowed);
                    // a new one is made at the next request.
                    self.inbox_sid = None;
                }
                // Dropping the sink ends the stream; the router already
                // forgot the subscription, so no Unsubscribe.
                self.update_freeze();
            }
        }
        if let Some(reply_to) = reply_to {
            if let Some(token) = self.request_token(&reply_to) {
                if let Some((_, sink)) = self.requests.remove(&token) {
                    sink.send(Err(crate::Error::PermissionDenied {
                        op,
                        subject: name,
                        denied_by: None,
                    }));
                }
            }
        }
    }

    /// Client: a link to a router came up. Wait for its grants before
    /// calling the node ready, so the first operation is checked, unless
    /// the session resumed (the grants we hold are its; fresh ones follow)
    /// or the router predates permissions.
    pub(crate) fn client_link_up(&mut self, idx: u64, peer_fresh: bool) {
        let version = self.peers.get(&idx).map_or(0, |p| p.version);
        debug_assert!(self
            .peers
            .get(&idx)
            .is_some_and(|p| p.key == PeerKey::Upstream));
        if version < PERMISSIONS_VERSION {
            self.granted.set(None);
            self.awaiting_grants = false;
        } else if peer_fresh || self.awaiting_grants {
            // (Still awaiting: the link that should have brought them
            // dropped first; the router resends them on this one.)
            self.awaiting_grants = true;
            return;
        }
        let _ = self.ready.send(true);
    }
}
