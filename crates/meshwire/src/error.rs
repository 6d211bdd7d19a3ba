//! The errors users of the public API see.

use meshwire_proto::wire::{Operation, SubjectError};
use std::time::Duration;

/// What went wrong with a meshwire operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject or pattern that is not valid (fatal: fix the name).
    #[error("invalid subject: {0}")]
    Subject(#[from] SubjectError),
    /// The payload exceeds the frame limit (fatal: send less, or raise
    /// `NodeBuilder::max_payload` on every node).
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request found no subscriber for its subject anywhere in the mesh
    /// (reported at once, not after the timeout).
    #[error("no responders for subject {subject:?}")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },
    /// A request got no reply in time (retryable).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The node was shut down, or its engine stopped.
    #[error("the node is shut down")]
    Closed,
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// An address that is neither `HOST:PORT` nor `mem:NAME`.
    #[error("invalid address {0:?}: use HOST:PORT (e.g. 127.0.0.1:4700) or mem:NAME")]
    Address(String),
    /// The builder was given settings that do not fit together.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// A client reached none of its routers in time (retryable).
    #[error(
        "could not attach to any router at {addrs:?} within {waited:?}: {}",
        last_error.as_deref().unwrap_or("no answer; is a `meshwire node` listening there?")
    )]
    Unreachable {
        /// The addresses tried.
        addrs: Vec<String>,
        /// How long it tried.
        waited: Duration,
        /// Why the last attempt failed (refused by the router, TLS on one
        /// side only, connection refused...), when known.
        last_error: Option<String>,
    },
    /// The node's data directory could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The router's permissions do not allow this node to do this (fatal
    /// for this operation: change the permissions file, or do something
    /// else). Returned before anything is sent when the client knows its
    /// rules, or when the router's notice comes back (a request fails at
    /// once; a revoked subscription ends, see
    /// [`Subscription::error`](crate::Subscription::error)).
    #[error("{}", permission_message(*op, subject, denied_by.as_deref()))]
    PermissionDenied {
        /// What was refused.
        op: Operation,
        /// The subject published or the pattern subscribed to; for serve
        /// and call, the service's name.
        subject: String,
        /// The deny pattern that refused it; `None` when no allow pattern
        /// takes it in (or the router did not say).
        denied_by: Option<String>,
    },
    /// A permissions file could not be used (at start: fix it; on a
    /// reload: the rules in force stay).
    #[error(transparent)]
    Permissions(#[from] crate::security::PermissionsError),
    /// The node's TLS identity or trust configuration could not be used
    /// (a key or trust file that cannot be read or parsed, bad CA roots).
    #[error("security set-up: {0}")]
    Security(#[from] crate::security::SecurityError),
}

impl Error {
    /// True for errors where trying the same thing again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::NoResponders { .. } | Error::Unreachable { .. }
        )
    }
}

pub(crate) fn permission_message(op: Operation, subject: &str, denied_by: Option<&str>) -> String {
    let what = match op {
        Operation::Serve | Operation::Call => format!("{op} service {subject:?}"),
        _ => format!("{op} {subject:?}"),
    };
    match denied_by {
        Some(d) => format!(
            "permission denied: this node may not {what}: the {op} deny pattern {d:?} in its \
             router's permissions file refuses it (deny wins over allow); narrow or remove that \
             pattern and reload the router's permissions (SIGHUP)"
        ),
        None => format!(
            "permission denied: this node may not {what}: no {op} allow pattern for this node in \
             its router's permissions file takes it in{}; add one to the node's entry \
             ([nodes.\"<node id>\"] {op} = {{ allow = [...] }}) and reload the router's \
             permissions (SIGHUP)",
            if op == Operation::Subscribe {
                " (a subscription is allowed only if every subject it could receive is: \
                 subscribe narrower, or widen the allow pattern)"
            } else {
                ""
            }
        ),
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
