//! A linearizability checker for meshwire's replicated key-value maps.
//!
//! A test runs concurrent clients against a map, logs each operation's
//! invocation and return through a shared [`Recorder`], and hands the
//! resulting [`History`] to [`check`]. The checker answers whether some
//! sequential order of the operations — one that respects real time (an
//! operation that returned before another was invoked comes first) — is
//! explained by the model below, and when none is, says which key broke
//! and how.
//!
//! ```
//! use meshwire::testkit::linearizability::{check, CheckResult, KvOp, KvOutcome, Recorder};
//! use std::time::Duration;
//!
//! let recorder = Recorder::new();
//! // Each client, around each call to the map:
//! let call = recorder.invoke(1, KvOp::put("k", "a"));
//! call.finish(KvOutcome::Put(7));
//! let call = recorder.invoke(2, KvOp::get("k"));
//! call.finish(KvOutcome::Got(Some((b"a".to_vec(), 7))));
//!
//! let history = recorder.history().expect("outcomes match their operations");
//! assert!(matches!(check(&history, Duration::from_secs(10)), CheckResult::Ok));
//! ```
//!
//! ## The model
//!
//! A map is a set of independent registers, one per key. A key holds a
//! value and a *version*: the Raft log index of the write that last
//! changed it. Log indices are global to the map, so versions grow
//! strictly from one write to the next over the whole map (with gaps: other
//! keys' writes take indices too). Version 0 means "absent".
//!
//! | operation | outcome | allowed when | effect |
//! |---|---|---|---|
//! | `get(k)` | `Got(Some((value, v)))` | `k` holds `value` written at `v` | none |
//! | `get(k)` | `Got(None)` | `k` is absent | none |
//! | `put(k, x)` | `Put(v)` | `v` is above the version of every write on `k` before it | `k` holds `x` at `v` |
//! | `delete(k)` | `Deleted { existed, version: v }` | `existed` says whether `k` was present; `v` as for `put` | `k` absent |
//! | `cas(k, e, x)` | `Cas(Ok(v))` | `k`'s version is `e` (0: absent); `v` as for `put` | `k` holds `x` at `v` |
//! | `cas(k, e, x)` | `Cas(Err(c))` | `k`'s version is `c` and `c != e` | none |
//!
//! Deleting an absent key is still a write: it takes a log index.
//!
//! An **unknown** outcome ([`KvOutcome::Unknown`]: the client timed out,
//! crashed, or never finished) means the operation may or may not have
//! taken effect, at any moment after its invocation; its return time is
//! taken as infinity, as porcupine and Knossos do. If it took effect, its
//! version is unknown but still a log index, so it leaves room below the
//! next write's version; a later read that sees its value tells the
//! version. An unknown `get` says nothing and is ignored.
//!
//! Two operations whose times tie (one returned at the tick the other was
//! invoked) are taken as concurrent: the lenient reading, so a tie never
//! makes a history fail. [`Recorder`] hands out distinct ticks, so ties only
//! appear in histories built by hand.
//!
//! ## How it checks
//!
//! Operations on different keys commute, so the history is split per key
//! and each part is checked on its own (P-compositionality), with Wing &
//! Gong's search and Lowe's memoization, the way porcupine does it: a
//! depth-first search over which pending operation takes effect next,
//! skipping any (set of operations done, state of the key) already seen.
//! Each check is exact for its key: it reports a violation if and only if
//! no linearization of that key's operations exists.
//!
//! Because versions are indices of one log, more must hold across keys,
//! and is checked: no two writes return the same version; a write that
//! returned before another was invoked has the lower version; and a
//! version seen on a key (by a read, or a cas's expected or current
//! version) is not that of a write to another key. These are necessary,
//! not sufficient, for one linearization of the whole map: a history that
//! passes everything may in rare cases still have no single linearization
//! that orders every key's versions at once. Everything reported is a real
//! violation.
//!
//! The search is exponential in the worst case: [`check`] takes a
//! [`Budget`] and answers [`CheckResult::Unknown`] when it runs out. It
//! remembers every (operations done, state) pair it visits, a bitset of
//! the key's operations each: memory grows with steps times operations
//! per key, which is small for histories of a few thousand operations per
//! key.
//!
//! One history describes one map: two maps have separate logs, so their
//! versions are unrelated and would trip the cross-key checks.

mod checker;
mod log_order;
mod model;
mod recorder;
mod search;

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod simulation_tests;
#[cfg(test)]
mod tests;

pub use checker::{check, Budget, CheckResult, Violation};
pub use recorder::{OpHandle, Recorder};

use std::fmt;

/// Who issued an operation: any number that tells the test's clients
/// apart. It is only used to explain violations.
pub type ClientId = u64;

/// An operation on a replicated map, as a client invoked it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvOp {
    /// Read a key.
    Get {
        /// The key read.
        key: String,
    },
    /// Write a key unconditionally.
    Put {
        /// The key written.
        key: String,
        /// The value written.
        value: Vec<u8>,
    },
    /// Remove a key (a write even when the key is absent).
    Delete {
        /// The key removed.
        key: String,
    },
    /// Write a key if its version is `expected`.
    Cas {
        /// The key written.
        key: String,
        /// The version the key must have; 0 means it must be absent.
        expected: u64,
        /// The value written.
        value: Vec<u8>,
    },
}

impl KvOp {
    /// A `get` of `key`.
    pub fn get(key: impl Into<String>) -> Self {
        Self::Get { key: key.into() }
    }

    /// A `put` of `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A `delete` of `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// A `cas` of `key` from version `expected` (0: absent) to `value`.
    pub fn cas(key: impl Into<String>, expected: u64, value: impl Into<Vec<u8>>) -> Self {
        Self::Cas {
            key: key.into(),
            expected,
            value: value.into(),
        }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Get { key } | Self::Put { key, .. } | Self::Delete { key } => key,
            Self::Cas { key, .. } => key,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
            Self::Cas { .. } => "cas",
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get { key } => write!(f, "get({key:?})"),
            Self::Put { key, value } => write!(f, "put({key:?}, {})", ShowBytes(value)),
            Self::Delete { key } => write!(f, "delete({key:?})"),
            Self::Cas {
                key,
                expected,
                value,
            } => write!(f, "cas({key:?}, v{expected}, {})", ShowBytes(value)),
        }
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvOutcome {
    /// A `get`: the value and its version, or `None` when absent.
    Got(Option<(Vec<u8>, u64)>),
    /// A `put`: the version it wrote.
    Put(u64),
    /// A `delete`: whether the key was present, and the version (log
    /// index) of the delete.
    Deleted {
        /// Whether the key was present.
        existed: bool,
        /// The log index of the delete.
        version: u64,
    },
    /// A `cas`: `Ok(version written)`, or `Err(the key's version)` when it
    /// was not `expected` (0: absent).
    Cas(Result<u64, u64>),
    /// The client does not know: it timed out, crashed or gave up. The
    /// operation may have taken effect, at any time after its invocation.
    Unknown,
}

impl KvOutcome {
    fn name(&self) -> &'static str {
        match self {
            Self::Got(_) => "get result",
            Self::Put(_) => "put result",
            Self::Deleted { .. } => "delete result",
            Self::Cas(_) => "cas result",
            Self::Unknown => "unknown outcome",
        }
    }

    /// Whether this outcome can be the answer to `op`.
    fn answers(&self, op: &KvOp) -> bool {
        matches!(
            (op, self),
            (_, Self::Unknown)
                | (KvOp::Get { .. }, Self::Got(_))
                | (KvOp::Put { .. }, Self::Put(_))
                | (KvOp::Delete { .. }, Self::Deleted { .. })
                | (KvOp::Cas { .. }, Self::Cas(_))
        )
    }
}

impl fmt::Display for KvOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Got(None) => f.write_str("absent"),
            Self::Got(Some((value, version))) => write!(f, "{} at v{version}", ShowBytes(value)),
            Self::Put(version) => write!(f, "v{version}"),
            Self::Deleted { existed, version } => {
                let what = if *existed { "existed" } else { "was absent" };
                write!(f, "{what}, v{version}")
            }
            Self::Cas(Ok(version)) => write!(f, "ok, v{version}"),
            Self::Cas(Err(current)) => write!(f, "failed, key at v{current}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// One operation of a history: who, when, what, and what came back.
///
/// Times are ticks of one clock shared by every client (any monotone
/// counter: [`Recorder`] uses an atomic one). `invoked` is taken before
/// the request leaves the client, `returned` after its answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it.
    pub client: ClientId,
    /// When it was invoked.
    pub invoked: u64,
    /// When it returned. Required when the outcome is known; for an
    /// unknown outcome it is when the client gave up (if it did), shown in
    /// explanations but otherwise ignored: the return is at infinity.
    pub returned: Option<u64>,
    /// What was asked.
    pub op: KvOp,
    /// What came back.
    pub outcome: KvOutcome,
}

impl Operation {
    /// The time after which the operation can no longer take effect:
    /// `u64::MAX` (infinity) when its outcome is unknown.
    fn deadline(&self) -> u64 {
        match (&self.outcome, self.returned) {
            (KvOutcome::Unknown, _) | (_, None) => u64::MAX,
            (_, Some(returned)) => returned,
        }
    }

    /// The version a write returned, if it is a write that completed.
    fn written_version(&self) -> Option<u64> {
        match self.outcome {
            KvOutcome::Put(version)
            | KvOutcome::Deleted { version, .. }
            | KvOutcome::Cas(Ok(version)) => Some(version),
            _ => None,
        }
    }

    fn validate(&self, index: usize) -> Result<(), HistoryError> {
        if !self.outcome.answers(&self.op) {
            return Err(HistoryError::OutcomeMismatch {
                index,
                op: self.op.name(),
                outcome: self.outcome.name(),
            });
        }
        match self.returned {
            None if self.outcome != KvOutcome::Unknown => {
                Err(HistoryError::MissingReturn { index })
            }
            Some(returned) if returned < self.invoked => Err(HistoryError::ReturnedBeforeInvoked {
                index,
                invoked: self.invoked,
                returned,
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {} -> {} [t{}..",
            self.client, self.op, self.outcome, self.invoked
        )?;
        match (&self.outcome, self.returned) {
            (KvOutcome::Unknown, Some(gave_up)) => write!(f, "inf, gave up at t{gave_up}]"),
            (KvOutcome::Unknown, None) | (_, None) => f.write_str("inf]"),
            (_, Some(returned)) => write!(f, "t{returned}]"),
        }
    }
}

/// Operations recorded by concurrent clients, checked for consistency
/// (every outcome answers its operation, nothing returns before it was
/// invoked). Order does not matter: times do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// A history of `operations`, after checking that each is well formed.
    pub fn new(operations: Vec<Operation>) -> Result<Self, HistoryError> {
        for (index, operation) in operations.iter().enumerate() {
            operation.validate(index)?;
        }
        Ok(Self { operations })
    }

    /// The operations, in the order given (a violation names them by
    /// their index here).
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// A history that cannot be checked because an operation is malformed:
/// a bug in the test that recorded it, not in the system under test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// An outcome of the wrong kind for its operation (a `put` answered
    /// with a `get` result).
    #[error("operation {index}: a {op} cannot have a {outcome}")]
    OutcomeMismatch {
        /// Index of the operation.
        index: usize,
        /// The operation's kind.
        op: &'static str,
        /// The outcome's kind.
        outcome: &'static str,
    },
    /// A known outcome without a return time: record when it returned, or
    /// make the outcome unknown.
    #[error("operation {index} has an outcome but no return time")]
    MissingReturn {
        /// Index of the operation.
        index: usize,
    },
    /// A return time before the invocation: the ticks do not come from one
    /// monotone clock.
    #[error("operation {index} returned at t{returned}, before it was invoked at t{invoked}")]
    ReturnedBeforeInvoked {
        /// Index of the operation.
        index: usize,
        /// When it was invoked.
        invoked: u64,
        /// When it returned.
        returned: u64,
    },
}

/// Shows a value in an explanation: quoted text when it is short UTF-8,
/// else its length and first bytes in hex (values can be large binary
/// blobs, and an explanation must stay readable).
struct ShowBytes<'a>(&'a [u8]);

impl fmt::Display for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 24;
        match std::str::from_utf8(self.0) {
            Ok(text) if text.len() <= SHOWN => write!(f, "{text:?}"),
            _ => {
                write!(f, "<{} bytes:", self.0.len())?;
                for byte in self.0.iter().take(SHOWN / 2) {
                    write!(f, " {byte:02x}")?;
                }
                let more = if self.0.len() > SHOWN / 2 {
                    " ..>"
                } else {
                    ">"
                };
                f.write_str(more)
            }
        }
    }
}
