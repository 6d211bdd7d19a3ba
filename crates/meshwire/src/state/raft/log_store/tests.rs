//! The log on disk: what survives a reopen, what a crash can leave behind
//! and how it is repaired, and which damage is refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

use super::super::disk::{decode_frame, Frame};
use super::super::error::{Corruption, StoreError};
use super::super::types::{Command, TypeConfig};
use super::meta::LogMeta;
use super::{LogStore, MAX_ENTRY_LEN};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let command = Command::Put {
        map: "default".into(),
        key: format!("k{index}"),
        value: vec![index as u8; 20],
    };
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    indexes.map(|i| entry(term, i)).collect()
}

fn open(dir: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
    LogStore::open_blocking(dir, segment_bytes)
}

async fn all(log: &mut LogStore) -> Result<Vec<LogId<u64>>, Box<dyn std::error::Error>> {
    Ok(log
        .try_get_log_entries(..)
        .await?
        .into_iter()
        .map(|e| e.log_id)
        .collect())
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// The byte offset of every record in a segment file.
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = fs::read(path).unwrap_or_default();
    let mut offsets = Vec::new();
    let mut at = 0;
    while let Frame::Complete { next, .. } = decode_frame(&bytes, at, MAX_ENTRY_LEN) {
        offsets.push(at);
        at = next;
    }
    offsets
}

const ONE_SEGMENT: u64 = 64 << 20;
/// About one entry per segment.
const SMALL: u64 = 40;

#[tokio::test]
async fn entries_vote_and_committed_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), ONE_SEGMENT)?;
        log.blocking_append(entries(1, 1..=3)).await?;
        log.blocking_append(entries(1, 4..=10)).await?;
        log.save_vote(&Vote::new_committed(1, 1)).await?;
        log.save_committed(Some(log_id(1, 7))).await?;
    }
    let mut log = open(dir.path(), ONE_SEGMENT)?;
    assert_eq!(
        all(&mut log).await?,
        (1..=10).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(log.read_vote().await?, Some(Vote::new_committed(1, 1)));
    assert_eq!(log.read_committed().await?, Some(log_id(1, 7)));
    let reread = log.try_get_log_entries(4..5).await?;
    assert_eq!(reread, vec![entry(1, 4)], "entries come back whole");
    Ok(())
}

#[tokio::test]
async fn a_reader_sees_entries_as_soon_as_append_returns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path(), ONE_SEGMENT)?;
    let mut reader = log.get_log_reader().await;
    log.blocking_append(entries(1, 1..=4)).await?;
    assert_eq!(reader.try_get_log_entries(2..=3).await?.len(), 2);
    assert_eq!(reader.try_get_log_entries(5..).await?, vec![]);
    Ok(())
}

#[tokio::test]
async fn an_append_that_would_leave_a_hole_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = open(dir.path(), ONE_SEGMENT)?;
    log.blocking_append(entries(1, 1..=3)).await?;
    assert!(log.blocking_append(entries(1, 5..=6)).await.is_err());
    assert_eq!(
        all(&mut log).await?.len(),
        3,
        "nothing of the refused batch is kept"
    );
    log.blocking_append(entries(1, 4..=4)).await?;
    Ok(())
}

#[tokio::test]
async fn truncation_replaces_a_conflicting_suffix_across_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        // Small segments: the suffix spans several files.
        let mut log = open(dir.path(), SMALL)?;
        for i in 1..=10 {
            log.blocking_append(entries(1, i..=i)).await?;
        }
        assert!(segment_files(dir.path()).len() > 3);
        log.truncate(log_id(1, 4)).await?;
        log.blocking_append(entries(2, 4..=6)).await?;
    }
    let mut log = open(dir.path(), SMALL)?;
    let expected: Vec<_> = (1..=3)
        .map(|i| log_id(1, i))
        .chain((4..=6).map(|i| log_id(2, i)))
        .collect();
    assert_eq!(all(&mut log).await?, expected);
    Ok(())
}

#[tokio::test]
async fn a_truncation_interrupted_after_removing_later_segments_leaves_a_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), SMALL)?;
        for i in 1..=6 {
            log.blocking_append(entries(1, i..=i)).await?;
        }
    }
    // Truncating from 3 removes the newest segments first; a crash after
    // two of them went leaves 1..=4 on disk: shorter, but without a hole.
    let mut segments = segment_files(dir.path());
    for _ in 0..2 {
        fs::remove_file(segments.pop().ok_or("too few segments")?)?;
    }
    let mut log = open(dir.path(), SMALL)?;
    assert_eq!(
        all(&mut log).await?,
        (1..=4).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    log.truncate(log_id(1, 3)).await?;
    log.blocking_append(entries(2, 3..=3)).await?;
    assert_eq!(
        all(&mut log).await?,
        vec![log_id(1, 1), log_id(1, 2), log_id(2, 3)]
    );
    Ok(())
}

#[tokio::test]
async fn purge_deletes_whole_segments_and_survives_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), SMALL)?;
        for i in 1..=10 {
            log.blocking_append(entries(1, i..=i)).await?;
        }
        let before = segment_files(dir.path()).len();
        log.purge(log_id(1, 6)).await?;
        assert!(
            segment_files(dir.path()).len() < before,
            "purged segments are deleted"
        );
        let state = log.get_log_state().await?;
        assert_eq!(
            (state.last_purged_log_id, state.last_log_id),
            (Some(log_id(1, 6)), Some(log_id(1, 10)))
        );
    }
    let mut log = open(dir.path(), SMALL)?;
    assert_eq!(
        all(&mut log).await?,
        (7..=10).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    // Purging past the end empties the log; appends resume after the point.
    log.purge(log_id(2, 20)).await?;
    log.blocking_append(entries(2, 21..=22)).await?;
    drop(log);
    let mut log = open(dir.path(), SMALL)?;
    let state = log.get_log_state().await?;
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(log_id(2, 20)), Some(log_id(2, 22)))
    );
    assert_eq!(all(&mut log).await?, vec![log_id(2, 21), log_id(2, 22)]);
    Ok(())
}

#[tokio::test]
async fn a_purge_interrupted_before_deleting_segments_is_finished_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), SMALL)?;
        for i in 1..=6 {
            log.blocking_append(entries(1, i..=i)).await?;
        }
    }
    let before = segment_files(dir.path()).len();
    // The state a crash leaves between saving the purge point and removing
    // the segments: the point saved, every file still there.
    let meta = LogMeta {
        purged: Some(log_id(1, 4)),
        ..LogMeta::default()
    };
    meta.store(&dir.path().join("log").join("meta"))?;
    let mut log = open(dir.path(), SMALL)?;
    assert_eq!(all(&mut log).await?, vec![log_id(1, 5), log_id(1, 6)]);
    let after = segment_files(dir.path()).len();
    assert!(
        after < before,
        "wholly purged segments are removed on open ({before} -> {after})"
    );
    Ok(())
}

/// Writes 1..=5 in one segment and returns the segment's path.
async fn five_entries(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let mut log = open(dir, ONE_SEGMENT)?;
    log.blocking_append(entries(1, 1..=5)).await?;
    drop(log);
    segment_files(dir)
        .pop()
        .ok_or_else(|| "no segment written".into())
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_and_the_log_goes_on() -> TestResult {
    // Every way a crash can tear the last write: a prefix of the record,
    // space the file system extended but never filled, a record whose
    // bytes did not all reach the disk.
    let record = {
        let mut bytes = Vec::new();
        super::super::disk::encode_frame(&postcard::to_allocvec(&entry(1, 6))?, &mut bytes);
        bytes
    };
    let mut garbled = record.clone();
    let last = garbled.len() - 1;
    garbled[last] ^= 0xff;
    let tails: [(&str, Vec<u8>); 4] = [
        ("half a header", record[..5].to_vec()),
        ("half a record", record[..record.len() / 2].to_vec()),
        ("zeroed space", vec![0; 4096]),
        ("damaged last record", garbled),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir()?;
        let segment = five_entries(dir.path()).await?;
        let good_len = fs::metadata(&segment)?.len();
        OpenOptions::new()
            .append(true)
            .open(&segment)?
            .write_all(&tail)?;
        let mut log = open(dir.path(), ONE_SEGMENT).map_err(|e| format!("{what}: {e}"))?;
        assert_eq!(all(&mut log).await?.len(), 5, "{what}");
        assert_eq!(
            fs::metadata(&segment)?.len(),
            good_len,
            "{what}: the torn bytes are gone"
        );
        log.blocking_append(entries(1, 6..=6)).await?;
        drop(log);
        let mut log = open(dir.path(), ONE_SEGMENT)?;
        assert_eq!(
            all(&mut log).await?.len(),
            6,
            "{what}: appends after the repair stick"
        );
    }
    Ok(())
}

#[tokio::test]
async fn damage_before_the_last_record_is_refused_with_file_and_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let segment = five_entries(dir.path()).await?;
    let offsets = record_offsets(&segment);
    assert_eq!(offsets.len(), 5);
    let mut bytes = fs::read(&segment)?;
    bytes[offsets[2] + 12] ^= 0x01;
    fs::write(&segment, &bytes)?;
    match open(dir.path(), ONE_SEGMENT) {
        Err(StoreError::Corrupt { file, offset, kind }) => {
            assert_eq!(file, segment);
            assert_eq!(offset, offsets[2] as u64);
            assert_eq!(kind, Corruption::Checksum);
        }
        other => return Err(format!("expected Corrupt, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn damage_at_the_end_of_an_earlier_segment_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), SMALL)?;
        for i in 1..=6 {
            log.blocking_append(entries(1, i..=i)).await?;
        }
    }
    let first = segment_files(dir.path()).remove(0);
    let len = fs::metadata(&first)?.len();
    OpenOptions::new()
        .write(true)
        .open(&first)?
        .set_len(len - 3)?;
    match open(dir.path(), SMALL) {
        Err(StoreError::Corrupt { file, .. }) => assert_eq!(file, first),
        other => return Err(format!("expected Corrupt, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn a_damaged_metadata_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut log = open(dir.path(), ONE_SEGMENT)?;
        log.save_vote(&Vote::new(3, 2)).await?;
    }
    let meta = dir.path().join("log").join("meta");
    let mut bytes = fs::read(&meta)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&meta, &bytes)?;
    assert!(matches!(
        open(dir.path(), ONE_SEGMENT),
        Err(StoreError::Corrupt {
            kind: Corruption::Checksum,
            ..
        })
    ));
    Ok(())
}
