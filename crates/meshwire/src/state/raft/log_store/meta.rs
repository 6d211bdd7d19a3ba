//! The log's small metadata file: the vote, the committed log id and the
//! last purged log id, replaced whole on every change (see
//! [`replace_file`](super::super::disk::replace_file)).

use std::io;
use std::path::Path;

use openraft::{LogId, Vote};

use super::super::disk::{decode_file, encode_file, replace_file};
use super::super::error::{Corruption, StoreError};
use super::super::types::RaftNodeId;

/// The file's format tag (and version).
const META_MAGIC: &[u8; 8] = b"MWRMETA1";
/// Far above what the three fields take; anything larger is damage.
const MAX_META_LEN: u32 = 64 * 1024;

/// What the log persists besides its entries. One file holds all three, so
/// that they change together and a crash never leaves them out of step.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct LogMeta {
    /// The last vote saved (must be durable before `save_vote` returns).
    pub(super) vote: Option<Vote<RaftNodeId>>,
    /// The last committed log id saved (a hint for restart: openraft
    /// re-applies the log up to it, so a restarted member serves no older
    /// state than it had).
    pub(super) committed: Option<LogId<RaftNodeId>>,
    /// Everything up to this log id is purged. Written before segments are
    /// deleted, so a crash in between leaves records that replay skips,
    /// never a log that seems to start later than it does.
    pub(super) purged: Option<LogId<RaftNodeId>>,
}

impl LogMeta {
    /// Reads the file, or the default when it does not exist yet.
    pub(super) fn load(path: &Path) -> Result<LogMeta, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LogMeta::default()),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let payload = decode_file(META_MAGIC, &bytes, MAX_META_LEN)
            .map_err(|(offset, kind)| StoreError::corrupt(path, offset, kind))?;
        postcard::from_bytes(payload)
            .map_err(|e| StoreError::corrupt(path, 8, Corruption::Undecodable(e.to_string())))
    }

    /// Replaces the file with this metadata, durably.
    pub(super) fn store(&self, path: &Path) -> io::Result<()> {
        let payload = postcard::to_allocvec(self).map_err(io::Error::other)?;
        replace_file(path, &encode_file(META_MAGIC, &payload))
    }
}
