//! Reading the log back on open: every segment, every record checked.
//!
//! Only the end of the last segment can be torn by a crash (appends go to
//! the tail and are fsynced before anything acknowledges them; a new
//! segment starts only after the previous one was fsynced). So damage is
//! judged by where it is: damage after which no valid record follows, in
//! the last segment, is a torn write and is cut off (nothing there was
//! acknowledged); damage anywhere else is corruption of acknowledged data
//! and the store refuses to open.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::Path;

use openraft::Entry;

use super::super::disk::{decode_frame, sync_dir, Frame};
use super::super::error::{Corruption, StoreError};
use super::super::types::TypeConfig;
use super::meta::LogMeta;
use super::writer::{segment_path, Segment};
use super::MAX_ENTRY_LEN;

/// The log as found on disk.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The entries after the purge point, in order.
    pub(super) entries: VecDeque<Entry<TypeConfig>>,
    /// The segments left on disk.
    pub(super) segments: Vec<Segment>,
}

/// Reads every segment in `dir`, cuts a torn tail off, finishes a purge
/// that a crash interrupted, and returns the entries after `meta.purged`.
pub(super) fn replay(dir: &Path, meta: &LogMeta) -> Result<Recovered, StoreError> {
    let firsts = list_segments(dir)?;
    let purged_index = meta.purged.map(|p| p.index);
    let mut segments = Vec::with_capacity(firsts.len());
    let mut entries = VecDeque::new();
    let mut expected: Option<u64> = None;
    for (pos, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        let is_last = pos + 1 == firsts.len();
        if let Some(expected) = expected {
            if first != expected {
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    Corruption::IndexGap {
                        expected,
                        found: first,
                    },
                ));
            }
        }
        let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        let mut segment = Segment {
            first,
            offsets: Vec::new(),
            len: 0,
        };
        let mut at = 0;
        while at < bytes.len() {
            let frame = decode_frame(&bytes, at, MAX_ENTRY_LEN);
            let Frame::Complete { payload, next } = frame else {
                if is_last && !valid_frame_after(&bytes, at) {
                    cut_torn_tail(&path, at as u64, bytes.len() as u64)?;
                    break;
                }
                return Err(StoreError::corrupt(&path, at as u64, frame.damage()));
            };
            let entry: Entry<TypeConfig> = postcard::from_bytes(payload).map_err(|e| {
                StoreError::corrupt(&path, at as u64, Corruption::Undecodable(e.to_string()))
            })?;
            let index = segment.next_index();
            if entry.log_id.index != index {
                let gap = Corruption::IndexGap {
                    expected: index,
                    found: entry.log_id.index,
                };
                return Err(StoreError::corrupt(&path, at as u64, gap));
            }
            segment.offsets.push(at as u64);
            if purged_index.is_none_or(|p| index > p) {
                entries.push_back(entry);
            }
            at = next;
        }
        segment.len = at as u64;
        expected = Some(segment.next_index());
        if segment.offsets.is_empty() && !is_last {
            // Segments are created only to receive a write that is
            // fsynced before the next segment is started.
            return Err(StoreError::corrupt(&path, 0, Corruption::Truncated));
        }
        segments.push(segment);
    }
    drop_finished_segments(dir, &mut segments, purged_index)?;
    if let (Some(purged), Some(first)) = (purged_index, entries.front()) {
        // Records up to the purge point may remain on disk, but the first
        // one after it must be there: anything else is a hole.
        if first.log_id.index != purged + 1 {
            let file = segment_path(dir, segments.first().map_or(0, |s| s.first));
            let gap = Corruption::IndexGap {
                expected: purged + 1,
                found: first.log_id.index,
            };
            return Err(StoreError::corrupt(file, 0, gap));
        }
    }
    Ok(Recovered { entries, segments })
}

/// The first indexes of the segment files in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut firsts = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let item = item.map_err(|e| StoreError::io(dir, e))?;
        let name = item.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        firsts.push(first);
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Whether any valid frame starts after the damaged one at `at`. Torn
/// writes leave only garbage or nothing after the damage; a valid record
/// after it means acknowledged data around the damage.
fn valid_frame_after(bytes: &[u8], at: usize) -> bool {
    (at + 1..bytes.len()).any(|p| {
        matches!(
            decode_frame(bytes, p, MAX_ENTRY_LEN),
            Frame::Complete { .. }
        )
    })
}

fn cut_torn_tail(path: &Path, at: u64, len: u64) -> Result<(), StoreError> {
    tracing::warn!(
        file = %path.display(),
        offset = at,
        dropped_bytes = len - at,
        "cutting off a torn record at the end of the Raft log (a crash during a write it never acknowledged)"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    file.set_len(at).map_err(|e| StoreError::io(path, e))?;
    file.sync_all().map_err(|e| StoreError::io(path, e))
}

/// Deletes segments wholly at or before the purge point (a purge
/// interrupted by a crash) and an empty tail segment (a crash right after
/// creating it), so that the next append starts a correctly named one.
fn drop_finished_segments(
    dir: &Path,
    segments: &mut Vec<Segment>,
    purged: Option<u64>,
) -> Result<(), StoreError> {
    let mut removed = false;
    let remove = |first: u64| {
        let path = segment_path(dir, first);
        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))
    };
    while let Some(first) = segments.first() {
        if purged.is_none_or(|p| first.next_index() > p + 1) {
            break;
        }
        remove(first.first)?;
        segments.remove(0);
        removed = true;
    }
    if segments.last().is_some_and(|s| s.offsets.is_empty()) {
        if let Some(empty) = segments.pop() {
            remove(empty.first)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    Ok(())
}
