//! Errors of the Raft storage: opening it ([`StoreError`]) and reading the
//! replicated maps ([`ReadError`]). While Raft runs, failures go to
//! openraft as its own `StorageError`, which stops the Raft node: after a
//! failed write or fsync the state of the files is unknown, so carrying on
//! could serve or acknowledge data that is not on disk.

use std::io;
use std::path::PathBuf;

/// Why the Raft storage could not be opened. Every variant is fatal for
/// this directory: retrying without a change gives the same answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing or creating a file failed.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file holds damaged data where a crash cannot have left it (before
    /// the last record of the log, or in a file that is only ever replaced
    /// whole). The store refuses to start rather than serve or lose
    /// acknowledged data.
    #[error(
        "{} is corrupt at byte {offset}: {kind}; this is not what a crash leaves behind, \
         so the node will not start on it: restore the directory from a backup, or remove it \
         so that the node rejoins empty and catches up from the leader",
        file.display()
    )]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where in the file the damage starts.
        offset: u64,
        /// What is wrong there.
        kind: Corruption,
    },
}

impl StoreError {
    pub(super) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(super) fn corrupt(file: impl Into<PathBuf>, offset: u64, kind: Corruption) -> Self {
        StoreError::Corrupt {
            file: file.into(),
            offset,
            kind,
        }
    }
}

/// What kind of damage [`StoreError::Corrupt`] found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A record's checksum does not match its bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// A record header with length 0 (never written).
    #[error("record of length 0")]
    ZeroLength,
    /// A record claims more bytes than any record may have.
    #[error("record length {0} is beyond the limit")]
    TooLong(u32),
    /// A record runs past the end of its file, yet valid data follows it.
    #[error("record runs past the end of the file")]
    Truncated,
    /// A file does not start with the expected format tag.
    #[error("not a meshwire Raft file (unknown format tag)")]
    BadMagic,
    /// A record's checksum matches but its contents do not decode.
    #[error("undecodable record: {0}")]
    Undecodable(String),
    /// Log entries are not consecutive.
    #[error("expected log index {expected}, found {found}")]
    IndexGap {
        /// The index that should come next.
        expected: u64,
        /// The index found.
        found: u64,
    },
}

/// Why a read of the replicated maps failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The map was never created.
    #[error("no map named {0:?}: create it first")]
    UnknownMap(String),
    /// The change history no longer reaches back to the version asked for
    /// (it is bounded, and a snapshot install or restart resets it). List
    /// the map again and watch from the index that listing returns.
    #[error("changes after version {asked} are no longer kept (history starts after {oldest}): list the map again")]
    Compacted {
        /// The version asked for.
        asked: u64,
        /// The smallest `after` that can be answered: history is complete
        /// for versions above it.
        oldest: u64,
    },
}
