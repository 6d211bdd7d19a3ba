//! Snapshots on disk: at most one current snapshot in `<dir>/snapshots/`,
//! written whole and atomically, checksummed twice (the data that travels
//! to followers carries its own checksum; the file wraps data and metadata
//! in another).
//!
//! ```text
//! <dir>/snapshots/00000000000000010042.snap   file:  "MWRSNAP1" | frame(postcard(meta, data))
//!                                               data:  "MWRDATA1" | frame(postcard(maps))
//! ```
//!
//! The name's number is the last log index the snapshot covers; a crash
//! between writing a new snapshot and removing the old one leaves two, and
//! opening keeps the newest.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::SnapshotMeta;

use super::disk::{create_dir_durably, decode_file, encode_file, replace_file, sync_dir};
use super::error::{Corruption, StoreError};
use super::kv::{applied_index, Snapshotted, SnapshottedRef};
use super::types::{Member, RaftNodeId};

/// Format tag of a snapshot file.
const FILE_MAGIC: &[u8; 8] = b"MWRSNAP1";
/// Format tag of snapshot data (what followers receive).
// Version 2: the remembered requests joined the maps.
const DATA_MAGIC: &[u8; 8] = b"MWRDATA2";
/// The frame format holds at most 4 GiB; a state that large would not fit
/// a member's memory twice over anyway.
const MAX_SNAPSHOT_LEN: u32 = u32::MAX;

/// openraft's snapshot metadata for our types.
pub(super) type Meta = SnapshotMeta<RaftNodeId, Member>;

/// What a snapshot file holds.
#[derive(serde::Deserialize)]
struct SnapshotFile {
    meta: Meta,
    data: Vec<u8>,
}

/// [`SnapshotFile`] borrowed, to write one without copying the data (serde
/// encodes a slice and a `Vec` alike).
#[derive(serde::Serialize)]
struct SnapshotFileRef<'a> {
    meta: &'a Meta,
    data: &'a [u8],
}

/// Encodes the maps as snapshot data.
pub(super) fn encode_data(state: &SnapshottedRef<'_>) -> io::Result<Vec<u8>> {
    let payload = postcard::to_allocvec(state).map_err(io::Error::other)?;
    check_len(payload.len())?;
    Ok(encode_file(DATA_MAGIC, &payload))
}

/// Decodes snapshot data, checking its checksum.
pub(super) fn decode_data(data: &[u8]) -> Result<Snapshotted, Corruption> {
    let payload = decode_file(DATA_MAGIC, data, MAX_SNAPSHOT_LEN).map_err(|(_, kind)| kind)?;
    postcard::from_bytes(payload).map_err(|e| Corruption::Undecodable(e.to_string()))
}

fn check_len(len: usize) -> io::Result<()> {
    if len > MAX_SNAPSHOT_LEN as usize {
        return Err(io::Error::other(format!(
            "snapshot of {len} bytes exceeds the format's 4 GiB limit"
        )));
    }
    Ok(())
}

/// The snapshot directory and which snapshot in it is current.
#[derive(Debug)]
pub(super) struct SnapshotStore {
    dir: PathBuf,
    /// The current snapshot's metadata. The lock is held through every
    /// save and read, so a save never removes a file being read and two
    /// saves never race over which one is current.
    current: Mutex<Option<Meta>>,
}

/// A snapshot read back from disk.
pub(super) struct Loaded {
    pub(super) meta: Meta,
    pub(super) data: Vec<u8>,
}

impl SnapshotStore {
    /// Opens `<dir>/snapshots`, removing leftovers of interrupted writes,
    /// and returns the newest snapshot with its maps.
    pub(super) fn open_blocking(
        dir: &Path,
    ) -> Result<(SnapshotStore, Option<(Loaded, Snapshotted)>), StoreError> {
        let dir = dir.join("snapshots");
        create_dir_durably(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut snapshots = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let path = item.map_err(|e| StoreError::io(&dir, e))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("snap") => snapshots.push(path),
                // A write a crash interrupted: never renamed, never current.
                Some("tmp") => fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?,
                _ => {}
            }
        }
        // Names are zero-padded indexes: the last in order is the newest.
        snapshots.sort();
        let Some(newest) = snapshots.pop() else {
            return Ok((
                SnapshotStore {
                    dir,
                    current: Mutex::new(None),
                },
                None,
            ));
        };
        for old in &snapshots {
            fs::remove_file(old).map_err(|e| StoreError::io(old, e))?;
        }
        let loaded = read_file(&newest)?;
        // A damaged newest snapshot is refused, not skipped for an older
        // one: the log may already be purged past the older one, and
        // starting from it would leave a hole in the applied history.
        let maps =
            decode_data(&loaded.data).map_err(|kind| StoreError::corrupt(&newest, 0, kind))?;
        let store = SnapshotStore {
            dir,
            current: Mutex::new(Some(loaded.meta.clone())),
        };
        Ok((store, Some((loaded, maps))))
    }

    /// Writes a snapshot and makes it current, unless the current one is
    /// newer (a build that finished after an install overtook it), in which
    /// case nothing is written and `false` returned.
    pub(super) fn save_blocking(&self, meta: &Meta, data: &[u8]) -> io::Result<bool> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        let payload =
            postcard::to_allocvec(&SnapshotFileRef { meta, data }).map_err(io::Error::other)?;
        check_len(payload.len())?;
        let path = self.path_for(meta);
        replace_file(&path, &encode_file(FILE_MAGIC, &payload))?;
        *current = Some(meta.clone());
        // Only now that the new one is durable may the old ones go.
        let mut removed = false;
        for item in fs::read_dir(&self.dir)? {
            let other = item?.path();
            if other != path && other.extension().is_some_and(|e| e == "snap") {
                fs::remove_file(&other)?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(true)
    }

    /// Reads the current snapshot back, checking it.
    pub(super) fn read_current_blocking(&self) -> io::Result<Option<Loaded>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(meta) = current.as_ref() else {
            return Ok(None);
        };
        let path = self.path_for(meta);
        read_file(&path)
            .map(Some)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn path_for(&self, meta: &Meta) -> PathBuf {
        self.dir
            .join(format!("{:020}.snap", applied_index(meta.last_log_id)))
    }
}

fn read_file(path: &Path) -> Result<Loaded, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let payload = decode_file(FILE_MAGIC, &bytes, MAX_SNAPSHOT_LEN)
        .map_err(|(offset, kind)| StoreError::corrupt(path, offset, kind))?;
    let file: SnapshotFile = postcard::from_bytes(payload)
        .map_err(|e| StoreError::corrupt(path, 8, Corruption::Undecodable(e.to_string())))?;
    Ok(Loaded {
        meta: file.meta,
        data: file.data,
    })
}
