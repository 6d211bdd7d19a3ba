//! The errors of the replicated-map core.

use super::hlc::ClockError;

/// The longest part of a key quoted in an error message: enough to find
/// it, not enough to make a log line of a megabyte.
const QUOTED_KEY_CHARS: usize = 64;

/// Quotes the start of a key for an error message.
pub(crate) fn quote_key(key: &str) -> String {
    key.chars().take(QUOTED_KEY_CHARS).collect()
}

/// Why a write or a merge was refused. Nothing was changed by a call that
/// returns one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// Keys are at least one byte long.
    #[error("a key must not be empty")]
    EmptyKey,
    /// The key is longer than the configured limit. Permanent: retrying
    /// the same key fails the same way.
    #[error("key {key:?}... is {len} bytes; the limit is {max} bytes")]
    KeyTooLong {
        /// The start of the key.
        key: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key holds a control character (newlines, NUL, escapes): they
    /// make keys that print ambiguously in logs and in the CLI.
    #[error("key {key:?} holds a control character; use printable text")]
    ControlCharInKey {
        /// The start of the key.
        key: String,
    },
    /// The value is larger than the configured limit. Permanent.
    #[error("value for key {key:?} is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge {
        /// The start of the key.
        key: String,
        /// The value's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A remote entry carries time 0, which no clock issues (version 0
    /// means "absent"): the sender is broken.
    #[error("entry for key {key:?} carries timestamp 0, which no clock issues")]
    ZeroTime {
        /// The start of the key.
        key: String,
    },
    /// A compare-and-swap found another version than it expected. Retryable:
    /// read the key again and decide anew.
    #[error(
        "key {key:?} is at version {actual}, not the expected {expected}; read it again and retry"
    )]
    VersionMismatch {
        /// The start of the key.
        key: String,
        /// The version the caller expected.
        expected: u64,
        /// The version in the replica (0: absent or deleted).
        actual: u64,
    },
    /// The local clock cannot issue a timestamp.
    #[error(transparent)]
    Clock(#[from] ClockError),
}

/// Why bytes are not an encoded [`Delta`](super::Delta),
/// [`Digest`](super::Digest) or [`Buckets`](super::Buckets). The decoder
/// allocates nothing that the input does not already hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The first byte is not the tag of the expected message (or of any).
    #[error("unknown or unexpected replicated-map message tag 0x{0:02x}")]
    UnknownTag(u8),
    /// The input ended in the middle of a field.
    #[error("replicated-map message truncated while reading {0}")]
    Truncated(&'static str),
    /// The input is longer than its fields.
    #[error("{0} unexpected bytes after a replicated-map message")]
    TrailingBytes(usize),
    /// A field holds a value it cannot hold.
    #[error("invalid {0} in a replicated-map message")]
    InvalidValue(&'static str),
    /// Encoding only: a field is longer than its length prefix can say
    /// (a key over 65 535 bytes, a value over `u32::MAX`).
    #[error("{what} of {len} bytes is too long to encode")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// A digest bucket count that is not a power of two between 1 and
/// [`Digest::MAX_BUCKETS`](super::Digest::MAX_BUCKETS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a digest has a power of two of buckets, from 1 to {max} (got {0})",
    max = super::Digest::MAX_BUCKETS
)]
pub struct BucketCountError(pub u32);
