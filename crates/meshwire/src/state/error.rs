//! What can go wrong with a shared map, in one typed enum.

use std::time::Duration;

/// Why a shared-map operation failed.
///
/// Errors before anything was sent (bad keys, values, map names) are
/// *definite*: nothing was written. [`MapError::Indeterminate`] is the one
/// error after which a write may or may not have taken effect (the reply was
/// lost); read the key to find out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The map was never created (create it with `Node::shared_map`, or
    /// `meshwire kv --map NAME create`). Nothing was written.
    #[error("unknown map {map:?}: create it first (Node::shared_map, or `meshwire kv --map {map} create`)")]
    UnknownMap {
        /// The map's name.
        map: String,
    },
    /// A key, value or map name broke a limit or a rule. Nothing was written.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A key or value could not be turned into (or back from) its stored
    /// JSON form.
    #[error("{what} does not (de)serialise as JSON: {reason}")]
    Codec {
        /// "key" or "value".
        what: &'static str,
        /// What serde said.
        reason: String,
    },
    /// No member of the Raft group answered: no node was started with
    /// `--raft` (or `.raft()`), or none is reachable from here.
    #[error(
        "no Raft group is reachable for linearizable maps: start routers with `meshwire node \
         --raft --data DIR` (or NodeBuilder::raft), or use Consistency::Eventual"
    )]
    NoGroup,
    /// The group has no leader at the moment (an election is in progress,
    /// or a majority of members is down). Nothing was written; retry later.
    #[error("the Raft group has no leader right now ({0}); nothing was written, retry shortly")]
    NoLeader(String),
    /// The reply to a write was lost (timeout, or the member died): the
    /// write may or may not have been applied. Read the key to find out.
    #[error(
        "no reply within {waited:?}: the write may or may not have been applied; read the key \
         to find out"
    )]
    Indeterminate {
        /// How long the call waited.
        waited: Duration,
    },
    /// A read or watch got no answer in time. Nothing was changed.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A watch asked to resume from a version older than the history kept:
    /// list the map again and watch from the list's version.
    #[error(
        "watch history before version {oldest} is gone (asked from {from}): list the map again \
         and watch from the list's version"
    )]
    Compacted {
        /// The version the watch asked to resume after.
        from: u64,
        /// The oldest version still available.
        oldest: u64,
    },
    /// A member reported an internal failure (storage, Raft).
    #[error("the Raft group failed: {0}")]
    Group(String),
    /// A peer sent bytes that do not decode as a reply.
    #[error("malformed reply from a map member: {0}")]
    Protocol(String),
    /// The node under the map failed (shut down, permission denied, …).
    #[error(transparent)]
    Node(#[from] crate::Error),
}

impl MapError {
    /// True when retrying the same call later may succeed and nothing was
    /// written by the failed attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MapError::NoGroup | MapError::NoLeader(_) | MapError::Timeout(_)
        )
    }
}
