//! Deciding one operation: which rules govern a subject (RPC and inbox
//! subjects map to serve/call or to nothing), then allow and deny.

use meshwire_proto::routing::{covers, matches, overlaps, SubscriptionTable};
use meshwire_proto::wire::{Grants, NodeId, Operation, Subject};

/// One node's effective rules, ready for checking: what a router applies
/// to a client, and what the client checks itself against before sending.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The node they apply to, as text (its own inbox and RPC instance
    /// subjects are recognised by it).
    me: String,
    grants: Grants,
    /// The publish patterns again as tries: publications are checked per
    /// message, so that check costs the subject's length, not the rule
    /// count.
    publish_allow: SubscriptionTable<()>,
    publish_deny: SubscriptionTable<()>,
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// The rules that refused it.
    pub(crate) op: Operation,
    /// What they were applied to: the subject or pattern, or for serve and
    /// call the service's name.
    pub(crate) name: String,
    /// The deny pattern that refused it; `None` when no allow pattern
    /// took it in.
    pub(crate) by: Option<String>,
}

/// What governs a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Governed<'a> {
    /// Nothing: always allowed (replies, the node's own inbox).
    Free,
    /// The publish or subscribe rules.
    Subject(Operation),
    /// The serve or call rules, for this service; allowed when any of the
    /// operations allows it (the first is the one reported).
    Service(&'a str, &'static [Operation]),
}

/// `_RPC.<a>.<b>` with literal `a` and `b`.
fn rpc_parts(s: &str) -> Option<(&str, &str)> {
    let mut t = s.strip_prefix("_RPC.")?.split('.');
    match (t.next(), t.next(), t.next()) {
        (Some(a), Some(b), None) if ![a, b].iter().any(|x| *x == "*" || *x == ">") => Some((a, b)),
        _ => None,
    }
}

/// The service an RPC subject (`_RPC.HB.S`, `_RPC.PROBE.S`, `_RPC.S.N`)
/// belongs to.
pub(super) fn service_of(subject: &str) -> Option<&str> {
    match rpc_parts(subject)? {
        ("HB" | "PROBE", s) | (s, _) => Some(s),
    }
}

/// What governs publishing on the literal `subject` (the RPC subjects are
/// in `rpc/envelope.rs`).
fn publish_target(subject: &str) -> Governed<'_> {
    use Operation::{Call, Serve};
    if subject.starts_with("_INBOX.") {
        // Replies: whoever may be asked may answer.
        return Governed::Free;
    }
    match rpc_parts(subject) {
        Some(("HB", s)) => Governed::Service(s, &[Serve]),
        Some(("PROBE", s)) => Governed::Service(s, &[Call]),
        // A call (or its cancellation) to one instance.
        Some((s, _)) => Governed::Service(s, &[Call]),
        None => Governed::Subject(Operation::Publish),
    }
}

/// What governs subscribing to `pattern` for node `me`.
fn subscribe_target<'a>(me: &str, pattern: &'a str) -> Governed<'a> {
    use Operation::{Call, Serve};
    let own_inbox = pattern
        .strip_prefix("_INBOX.")
        .and_then(|r| r.strip_prefix(me))
        .is_some_and(|r| r.len() > 1 && r.starts_with('.'));
    if own_inbox {
        return Governed::Free;
    }
    match rpc_parts(pattern) {
        // Heartbeats: callers discover instances, servers may watch peers.
        Some(("HB", s)) => Governed::Service(s, &[Call, Serve]),
        Some(("PROBE", s)) => Governed::Service(s, &[Serve]),
        // Calls to this node's own instance; another node's are explicit
        // subscribe rules (that would be listening in).
        Some((s, node)) if node == me => Governed::Service(s, &[Serve]),
        _ => Governed::Subject(Operation::Subscribe),
    }
}

impl Rules {
    /// Rules `grants` for node `me`.
    pub(crate) fn new(me: NodeId, grants: Grants) -> Self {
        let table = |list: &[Subject]| {
            let mut t = SubscriptionTable::new();
            for p in list {
                t.insert(p, None, ());
            }
            t
        };
        let publish = grants.get(Operation::Publish);
        Self {
            me: me.to_string(),
            publish_allow: table(&publish.allow),
            publish_deny: table(&publish.deny),
            grants,
        }
    }

    /// The rules as sent to the client.
    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }

    /// May this node publish on the literal `subject`?
    pub(crate) fn check_publish(&self, subject: &Subject) -> Result<(), Denial> {
        match publish_target(subject.as_str()) {
            Governed::Free => Ok(()),
            Governed::Service(name, ops) => self.check_service(name, ops),
            Governed::Subject(op) => {
                let denial = |by: Option<&Subject>| Denial {
                    op,
                    name: subject.as_str().to_owned(),
                    by: by.map(|p| p.as_str().to_owned()),
                };
                if self.publish_deny.has_match(subject) {
                    let by = self
                        .grants
                        .get(op)
                        .deny
                        .iter()
                        .find(|d| matches(d.as_str(), subject.as_str()));
                    return Err(denial(by));
                }
                if !self.publish_allow.has_match(subject) {
                    return Err(denial(None));
                }
                Ok(())
            }
        }
    }

    /// May this node subscribe to `pattern`? Only when every subject the
    /// pattern matches is allowed: an allow pattern covers it and no deny
    /// pattern overlaps it.
    pub(crate) fn check_subscribe(&self, pattern: &Subject) -> Result<(), Denial> {
        let p = pattern.as_str();
        match subscribe_target(&self.me, p) {
            Governed::Free => Ok(()),
            Governed::Service(name, ops) => self.check_service(name, ops),
            Governed::Subject(op) => {
                let rules = self.grants.get(op);
                let by = rules.deny.iter().find(|d| overlaps(d.as_str(), p));
                if by.is_some() || !rules.allow.iter().any(|a| covers(a.as_str(), p)) {
                    return Err(Denial {
                        op,
                        name: p.to_owned(),
                        by: by.map(|d| d.as_str().to_owned()),
                    });
                }
                Ok(())
            }
        }
    }

    /// May this node serve (or call) `service`?
    pub(crate) fn check_service(&self, service: &str, ops: &[Operation]) -> Result<(), Denial> {
        let mut first = None;
        for &op in ops {
            let rules = self.grants.get(op);
            let by = rules.deny.iter().find(|d| matches(d.as_str(), service));
            if by.is_none() && rules.allow.iter().any(|a| matches(a.as_str(), service)) {
                return Ok(());
            }
            first.get_or_insert(Denial {
                op,
                name: service.to_owned(),
                by: by.map(|d| d.as_str().to_owned()),
            });
        }
        Err(first.unwrap_or(Denial {
            op: Operation::Call,
            name: service.to_owned(),
            by: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_subjects_map_to_their_rules() {
        use Governed::*;
        use Operation::*;
        let me = "aaaa";
        assert_eq!(publish_target("_INBOX.bbbb.7"), Free);
        assert_eq!(publish_target("_RPC.HB.Calc"), Service("Calc", &[Serve]));
        assert_eq!(publish_target("_RPC.PROBE.Calc"), Service("Calc", &[Call]));
        assert_eq!(publish_target("_RPC.Calc.bbbb"), Service("Calc", &[Call]));
        assert_eq!(publish_target("_RPC.Calc"), Subject(Publish));
        assert_eq!(publish_target("_RPC.a.b.c"), Subject(Publish));
        assert_eq!(publish_target("orders.eu"), Subject(Publish));

        assert_eq!(subscribe_target(me, "_INBOX.aaaa.>"), Free);
        assert_eq!(subscribe_target(me, "_INBOX.aaaa.7"), Free);
        assert_eq!(subscribe_target(me, "_INBOX.aaaab.>"), Subject(Subscribe));
        assert_eq!(subscribe_target(me, "_INBOX.bbbb.>"), Subject(Subscribe));
        assert_eq!(subscribe_target(me, "_INBOX.>"), Subject(Subscribe));
        assert_eq!(
            subscribe_target(me, "_RPC.HB.Calc"),
            Service("Calc", &[Call, Serve])
        );
        assert_eq!(
            subscribe_target(me, "_RPC.PROBE.Calc"),
            Service("Calc", &[Serve])
        );
        assert_eq!(
            subscribe_target(me, "_RPC.Calc.aaaa"),
            Service("Calc", &[Serve])
        );
        // Another instance's calls, or wildcards: plain subscribe rules.
        assert_eq!(subscribe_target(me, "_RPC.Calc.bbbb"), Subject(Subscribe));
        assert_eq!(subscribe_target(me, "_RPC.HB.*"), Subject(Subscribe));
        assert_eq!(subscribe_target(me, "_RPC.>"), Subject(Subscribe));
    }
}
