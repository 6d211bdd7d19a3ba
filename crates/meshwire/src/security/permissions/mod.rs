//! Authorization: what each node may publish, subscribe to, serve and
//! call, per NodeId or named group, from a TOML file on the router.
//!
//! ```toml
//! [groups]
//! ops = ["<nodeid>", "<nodeid>"]
//!
//! [nodes."<nodeid>"]            # or [nodes."group:ops"], or [nodes."*"] for everyone
//! publish   = { allow = ["orders.>"], deny = ["orders.secret.>"] }
//! subscribe = { allow = ["orders.*"] }
//! serve     = { allow = ["Calculator"] }
//! call      = { allow = ["*"], deny = ["Admin"] }
//! ```
//!
//! The rules for a node are the union of its own entry, the entries of
//! every group it is in, and the `"*"` entry. An operation is allowed when
//! an allow pattern takes it in and no deny pattern touches it: deny wins,
//! across entries too. A node no entry names may do nothing. Patterns are
//! subject patterns (`*` one token, `>` the rest) and, for serve and call,
//! service names (one token, `*` or `>`).
//!
//! - publish on subject `s`: some allow pattern matches `s`, no deny
//!   pattern matches `s`;
//! - subscribe to pattern `p`: some allow pattern *covers* `p` (matches
//!   every subject `p` matches) and no deny pattern *overlaps* `p` (could
//!   match a subject `p` matches). A subscription that could receive a
//!   denied subject is refused as a whole: subscribe narrower.
//! - RPC and reply subjects are governed by what they are for, not by
//!   publish/subscribe rules: replies (`_INBOX.…`) may always be published
//!   and a node may always subscribe to its own inbox; heartbeats, probes
//!   and calls of service S need `serve S` or `call S` (table in
//!   `docs/SECURITY.md`).
//!
//! Who enforces: each router, for the clients attached to it (routers
//! peering with each other are members of the mesh and not governed). It
//! sends each client its effective rules (`Grants`) when the link comes up
//! and after every reload, so the client refuses a denied operation itself,
//! synchronously, with [`Error::PermissionDenied`](crate::Error::PermissionDenied);
//! the router's own check stays authoritative.
//!
//! | part | what |
//! |---|---|
//! | [`Permissions`] | a parsed file: [`Permissions::load`], [`Permissions::grants_for`] |
//! | [`PermissionsError`] | why a file cannot be used, with file:line and what to write |
//! | `check` (private) | which rules govern a subject, and the verdict |
//! | `file` (private) | TOML parsing and validation |

mod check;
mod file;
#[cfg(test)]
mod tests;

pub(crate) use check::{Denial, Rules};
pub(crate) use file::read_text;
pub use file::PermissionsError;

use meshwire_proto::wire::{Grants, NodeId, Operation, Subject};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A parsed permissions file. See the [module docs](self) for the format
/// and the rules.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    groups: HashMap<String, Vec<NodeId>>,
    entries: Vec<(Who, Grants)>,
}

/// Whom an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Node(NodeId),
    Group(String),
    Everyone,
}

impl Permissions {
    /// Reads and checks a permissions file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PermissionsError> {
        let path = path.as_ref();
        Self::parse(&file::read_text(path)?, path)
    }

    /// [`Permissions::load`] on text in memory; `path` only names the
    /// source in error messages.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, PermissionsError> {
        file::parse(text, path.as_ref())
    }

    /// The rules that apply to `node`: its own entry, its groups' and the
    /// `"*"` entry, merged (duplicates removed). Empty lists everywhere
    /// when no entry applies: such a node may do nothing.
    pub fn grants_for(&self, node: NodeId) -> Grants {
        let mut out = Grants::default();
        for (who, grants) in &self.entries {
            let applies = match who {
                Who::Everyone => true,
                Who::Node(id) => *id == node,
                Who::Group(g) => self.groups.get(g).is_some_and(|m| m.contains(&node)),
            };
            if !applies {
                continue;
            }
            for (into, from) in out.ops.iter_mut().zip(&grants.ops) {
                merge(&mut into.allow, &from.allow);
                merge(&mut into.deny, &from.deny);
            }
        }
        out
    }

    /// [`Permissions::grants_for`], ready for checking.
    pub(crate) fn rules_for(&self, node: NodeId) -> Rules {
        Rules::new(node, self.grants_for(node))
    }
}

fn merge(into: &mut Vec<Subject>, from: &[Subject]) {
    for p in from {
        if !into.contains(p) {
            into.push(p.clone());
        }
    }
}

impl From<Denial> for crate::Error {
    fn from(d: Denial) -> Self {
        crate::Error::PermissionDenied {
            op: d.op,
            subject: d.name,
            denied_by: d.by,
        }
    }
}

/// A client's copy of the rules its router applies to it: the engine
/// stores what the router's `Grants` said, the API checks every operation
/// against it before sending, so a denied one fails at once with a typed
/// error. Unrestricted until told otherwise (a router without
/// permissions, or one too old to send `Grants`).
#[derive(Debug, Default)]
pub(crate) struct Granted {
    /// Set while rules are in force: an unrestricted node's checks cost
    /// one atomic load, no lock.
    restricted: AtomicBool,
    rules: RwLock<Option<Arc<Rules>>>,
}

impl Granted {
    /// Replaces the rules (`None`: unrestricted).
    pub(crate) fn set(&self, rules: Option<Rules>) {
        let restricted = rules.is_some();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = rules.map(Arc::new);
        self.restricted.store(restricted, Ordering::Release);
    }

    fn check(&self, f: impl FnOnce(&Rules) -> Result<(), Denial>) -> crate::Result<()> {
        if !self.restricted.load(Ordering::Acquire) {
            return Ok(());
        }
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        match rules.as_deref().map(f) {
            Some(Err(d)) => {
                metrics::counter!("meshwire_permission_denied_total", "op" => d.op.as_str())
                    .increment(1);
                Err(d.into())
            }
            _ => Ok(()),
        }
    }

    /// May this node publish on `subject`?
    pub(crate) fn check_publish(&self, subject: &Subject) -> crate::Result<()> {
        self.check(|r| r.check_publish(subject))
    }

    /// May this node subscribe to `pattern`?
    pub(crate) fn check_subscribe(&self, pattern: &Subject) -> crate::Result<()> {
        self.check(|r| r.check_subscribe(pattern))
    }

    /// May this node call `service`?
    pub(crate) fn check_call(&self, service: &str) -> crate::Result<()> {
        self.check(|r| r.check_service(service, &[Operation::Call]))
    }
}

/// What a router's `Denied` notice about `subject` is about: the subject
/// or pattern, or for serve and call the service's name.
pub(crate) fn notice_name(op: Operation, subject: &Subject) -> String {
    let service = match op {
        Operation::Serve | Operation::Call => check::service_of(subject.as_str()),
        _ => None,
    };
    service.unwrap_or(subject.as_str()).to_owned()
}
