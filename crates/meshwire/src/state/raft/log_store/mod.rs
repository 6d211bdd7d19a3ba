//! The Raft log on disk: openraft's [`RaftLogStorage`].
//!
//! ```text
//! <dir>/log/meta                      vote, committed, purge point (replaced whole)
//! <dir>/log/00000000000000000001.seg  entries 1.. as frames: len | crc32 | postcard(Entry)
//! <dir>/log/00000000000000052113.seg  the next segment, named by its first index
//! ```
//!
//! Entries are kept in memory too (a `VecDeque` from the purge point to
//! the end), which is where every read is served from: replication reads
//! recent entries over and over, and the snapshot policy bounds how many
//! stay unpurged. Writes go to the writer thread (`writer.rs`), which
//! fsyncs before reporting an append flushed. Opening replays the segments
//! (`replay.rs`).

mod meta;
mod replay;
mod writer;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::oneshot;

use super::disk::{create_dir_durably, encode_frame, temp_path};
use super::error::StoreError;
use super::types::{RaftNodeId, TypeConfig};
use super::{read_lock, write_lock};
use meta::LogMeta;
use writer::{EncodedBatch, SegmentWriter, WriteOp, WriterThread};

/// The largest encoded entry the log accepts. Values are limited to 1 MiB
/// ([`MAX_VALUE_LEN`](super::types::MAX_VALUE_LEN)), so this only stops
/// runaway proposals; on replay a larger length is damage.
pub(super) const MAX_ENTRY_LEN: u32 = 64 << 20;

type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

/// The entries between the purge point and the end of the log, shared by
/// the store and its readers.
#[derive(Default)]
struct LogCache {
    purged: Option<LogId<RaftNodeId>>,
    entries: VecDeque<Entry<TypeConfig>>,
}

impl Debug for LogCache {
    // A summary: the entries themselves may be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCache")
            .field("purged", &self.purged)
            .field("first", &self.first_index())
            .field("last", &self.last_log_id())
            .finish()
    }
}

impl LogCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn last_log_id(&self) -> Option<LogId<RaftNodeId>> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }

    /// The index the next append must start at; `None` when the log has
    /// never held anything, where any start is accepted.
    fn next_index(&self) -> Option<u64> {
        self.last_log_id().map(|id| id.index + 1)
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
        let Some(first) = self.first_index() else {
            return Vec::new();
        };
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        }
        .min(first + self.entries.len() as u64);
        if start >= end {
            return Vec::new();
        }
        // Both bounds are within the deque, whose length is a usize.
        let (from, to) = ((start - first) as usize, (end - first) as usize);
        self.entries.range(from..to).cloned().collect()
    }

    fn truncate(&mut self, from: u64) {
        if let Some(first) = self.first_index() {
            self.entries
                .truncate(usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX));
        }
    }

    fn purge(&mut self, upto: LogId<RaftNodeId>) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= upto.index)
        {
            self.entries.pop_front();
        }
        self.purged = Some(upto);
    }
}

/// A cheap, cloneable reader of the log, for openraft's replication tasks.
#[derive(Clone, Debug)]
pub struct LogReader {
    cache: Arc<RwLock<LogCache>>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_lock(&self.cache).range(range))
    }
}

/// The Raft log store: give it to `openraft::Raft::new`.
pub struct LogStore {
    cache: Arc<RwLock<LogCache>>,
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<LogId<RaftNodeId>>,
    writer: WriterThread,
    dir: PathBuf,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir)
            .field("vote", &self.vote)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log under `dir/log`, replaying what is there.
    /// Blocking: call it from `spawn_blocking`.
    pub(super) fn open_blocking(dir: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
        let dir = dir.join("log");
        create_dir_durably(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let meta_path = dir.join("meta");
        remove_if_present(&temp_path(&meta_path))?;
        let mut meta = LogMeta::load(&meta_path)?;
        let recovered = replay::replay(&dir, &meta)?;
        let cache = LogCache {
            purged: meta.purged,
            entries: recovered.entries,
        };
        // The committed id is a hint written after the entries it covers;
        // never let it claim more than the log holds.
        let last = cache.last_log_id();
        if meta.committed.is_some_and(|c| Some(c) > last) {
            meta.committed = last;
        }
        let (vote, committed) = (meta.vote, meta.committed);
        let writer = SegmentWriter::new(
            dir.clone(),
            meta_path,
            segment_bytes,
            recovered.segments,
            meta,
        );
        let writer = WriterThread::spawn(writer).map_err(|e| StoreError::io(&dir, e))?;
        Ok(LogStore {
            cache: Arc::new(RwLock::new(cache)),
            vote,
            committed,
            writer,
            dir,
        })
    }

    /// Sends a request and waits until the writer thread has made it durable.
    async fn send_and_wait(
        &self,
        op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> WriteOp,
    ) -> StorageResult<()> {
        let (done, wait) = oneshot::channel();
        self.writer.send(op(done)).map_err(write_error)?;
        match wait.await {
            Ok(result) => result.map_err(write_error),
            Err(_) => Err(write_error(io::Error::other(
                "the Raft log writer thread is gone",
            ))),
        }
    }
}

/// Encodes entries as frames, checking that they continue the log at
/// `expected` without a hole and that none is over the size limit.
fn encode_batch(entries: &[Entry<TypeConfig>], expected: u64) -> io::Result<EncodedBatch> {
    let mut batch = EncodedBatch {
        first_index: expected,
        ..EncodedBatch::default()
    };
    for (expected, entry) in (expected..).zip(entries) {
        if entry.log_id.index != expected {
            return Err(io::Error::other(format!(
                "append of index {} where the log expects {expected}: it would leave a hole",
                entry.log_id.index
            )));
        }
        let payload = postcard::to_allocvec(entry).map_err(io::Error::other)?;
        if payload.len() > MAX_ENTRY_LEN as usize {
            return Err(io::Error::other(format!(
                "log entry {} of {} bytes is larger than the limit of {MAX_ENTRY_LEN}",
                entry.log_id.index,
                payload.len()
            )));
        }
        let before = batch.bytes.len();
        encode_frame(&payload, &mut batch.bytes);
        // At most MAX_ENTRY_LEN plus the header: fits a u32.
        batch.frame_lens.push((batch.bytes.len() - before) as u32);
    }
    Ok(batch)
}

fn write_error(e: io::Error) -> StorageError<RaftNodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_lock(&self.cache).range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let cache = read_lock(&self.cache);
        Ok(LogState {
            last_purged_log_id: cache.purged,
            last_log_id: cache.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            cache: Arc::clone(&self.cache),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.send_and_wait(|done| WriteOp::SaveVote { vote, done })
            .await?;
        self.vote = Some(vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftNodeId>>> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> StorageResult<()> {
        // Not waited for: see `WriteOp::SaveCommitted`.
        self.writer
            .send(WriteOp::SaveCommitted(committed))
            .map_err(write_error)?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftNodeId>>> {
        Ok(self.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(first) = entries.first() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Encoding happens here, outside any lock; the cache is updated only
        // once every entry has passed, so a refused batch leaves no trace.
        let expected = read_lock(&self.cache)
            .next_index()
            .unwrap_or(first.log_id.index);
        let batch = encode_batch(&entries, expected).map_err(write_error)?;
        write_lock(&self.cache).entries.extend(entries);
        self.writer
            .send(WriteOp::Append {
                batch,
                done: callback,
            })
            .map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        write_lock(&self.cache).truncate(log_id.index);
        self.send_and_wait(|done| WriteOp::Truncate {
            from: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        write_lock(&self.cache).purge(log_id);
        self.send_and_wait(|done| WriteOp::Purge { upto: log_id, done })
            .await
    }
}

#[cfg(test)]
mod tests;
