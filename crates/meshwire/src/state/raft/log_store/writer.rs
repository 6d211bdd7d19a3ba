//! The log's writer thread: the only code that changes log files.
//!
//! Why a thread of its own: every append ends in an fsync, which can take
//! milliseconds; doing it on a tokio worker would stall every task on that
//! worker. One thread also serialises all writes (appends, truncations,
//! purges, votes) in the order openraft issued them, which the storage
//! contract requires, and lets appends that queue up while an fsync runs
//! share the next fsync (group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use openraft::{LogId, Vote};
use tokio::sync::oneshot;

use super::super::disk::sync_dir;
use super::super::types::{RaftNodeId, TypeConfig};
use super::meta::LogMeta;

/// A request to the writer thread, in the order openraft made it.
pub(super) enum WriteOp {
    /// Write these entries and report them flushed once fsynced.
    Append {
        /// The encoded entries.
        batch: EncodedBatch,
        /// Told when the entries are durable (or the write failed).
        done: LogFlushed<TypeConfig>,
    },
    /// Remove entries from `from` on.
    Truncate {
        /// The first index removed.
        from: u64,
        /// Told when the removal is durable.
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Remove entries up to `upto`, inclusive.
    Purge {
        /// The last log id removed.
        upto: LogId<RaftNodeId>,
        /// Told when the purge point is durable.
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Persist a vote.
    SaveVote {
        /// The vote.
        vote: Vote<RaftNodeId>,
        /// Told when the vote is durable.
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Persist the committed log id, whenever convenient: it is a restart
    /// hint, so nobody waits for it and consecutive ones are coalesced into
    /// one write of the metadata file.
    SaveCommitted(Option<LogId<RaftNodeId>>),
}

/// Entries encoded as consecutive frames, ready to write with one call.
#[derive(Debug, Default)]
pub(super) struct EncodedBatch {
    /// The index of the first entry.
    pub(super) first_index: u64,
    /// The frames.
    pub(super) bytes: Vec<u8>,
    /// The length of each frame, in order, to know where each entry starts.
    pub(super) frame_lens: Vec<u32>,
}

/// One segment file: consecutive entries starting at `first` (the number in
/// its name).
#[derive(Debug)]
pub(super) struct Segment {
    /// The index of its first record.
    pub(super) first: u64,
    /// The byte offset of each record; record `k` holds index `first + k`.
    pub(super) offsets: Vec<u64>,
    /// The file's length.
    pub(super) len: u64,
}

impl Segment {
    /// The index the next record appended to this segment would have.
    pub(super) fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// The file name of the segment whose first index is `first`.
pub(super) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// The running writer thread. Dropping it lets the thread finish what is
/// queued and waits for it, so that when a `LogStore` is gone its files are
/// settled and the directory can be opened again (a member restarted in
/// the same process). The wait is bounded by one group of writes.
pub(super) struct WriterThread {
    requests: Option<mpsc::Sender<WriteOp>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterThread {
    pub(super) fn spawn(writer: SegmentWriter) -> io::Result<WriterThread> {
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("meshwire-raft-log".into())
            .spawn(move || writer.run(queue))?;
        Ok(WriterThread {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Queues a request; fails only if the thread is gone (it panicked).
    pub(super) fn send(&self, op: WriteOp) -> io::Result<()> {
        let gone = || io::Error::other("the Raft log writer thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(op)
            .map_err(|_| gone())
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the Raft log writer thread panicked");
            }
        }
    }
}

/// The state the writer thread owns: the segments on disk and the metadata.
pub(super) struct SegmentWriter {
    dir: PathBuf,
    meta_path: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment, open for appending; `None` until needed again
    /// after a truncation or purge touched it.
    tail: Option<File>,
    meta: LogMeta,
    meta_dirty: bool,
    /// Set after any I/O error. From then on every request fails: after a
    /// failed write or fsync the kernel may have dropped the dirty pages,
    /// so the files' contents are unknown and nothing may be acknowledged.
    failed: Option<String>,
}

impl SegmentWriter {
    pub(super) fn new(
        dir: PathBuf,
        meta_path: PathBuf,
        segment_bytes: u64,
        segments: Vec<Segment>,
        meta: LogMeta,
    ) -> Self {
        SegmentWriter {
            dir,
            meta_path,
            segment_bytes,
            segments,
            tail: None,
            meta,
            meta_dirty: false,
            failed: None,
        }
    }

    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, requests: Receiver<WriteOp>) {
        while let Ok(first) = requests.recv() {
            // Whatever queued up while the last fsync ran is handled as one
            // group: consecutive appends share one fsync.
            let mut ops = vec![first];
            ops.extend(requests.try_iter());
            self.handle(ops);
        }
    }

    fn handle(&mut self, ops: Vec<WriteOp>) {
        let mut appends = Vec::new();
        for op in ops {
            match op {
                WriteOp::Append { batch, done } => appends.push((batch, done)),
                WriteOp::SaveCommitted(committed) => {
                    self.meta.committed = committed;
                    self.meta_dirty = true;
                }
                WriteOp::Truncate { from, done } => {
                    self.flush_appends(&mut appends);
                    let result = self.guarded(|w| w.truncate(from));
                    let _ = done.send(result);
                }
                WriteOp::Purge { upto, done } => {
                    self.flush_appends(&mut appends);
                    let result = self.guarded(|w| w.purge(upto));
                    let _ = done.send(result);
                }
                WriteOp::SaveVote { vote, done } => {
                    self.flush_appends(&mut appends);
                    self.meta.vote = Some(vote);
                    let result = self.guarded(SegmentWriter::store_meta);
                    let _ = done.send(result);
                }
            }
        }
        self.flush_appends(&mut appends);
        if self.meta_dirty {
            if let Err(e) = self.guarded(SegmentWriter::store_meta) {
                tracing::error!(error = %e, "cannot persist the Raft committed index");
            }
        }
    }

    /// Runs `op` unless an earlier error stopped the writer; records its
    /// error if it fails.
    fn guarded(&mut self, op: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if let Some(earlier) = &self.failed {
            return Err(io::Error::other(format!(
                "the Raft log stopped after an earlier error: {earlier}"
            )));
        }
        let result = op(self);
        if let Err(e) = &result {
            tracing::error!(dir = %self.dir.display(), error = %e, "Raft log write failed; the log stops");
            self.failed = Some(e.to_string());
        }
        result
    }

    fn flush_appends(&mut self, appends: &mut Vec<(EncodedBatch, LogFlushed<TypeConfig>)>) {
        if appends.is_empty() {
            return;
        }
        let (batches, callbacks): (Vec<EncodedBatch>, Vec<_>) = appends.drain(..).unzip();
        let result = self.guarded(|w| w.write_batches(&batches));
        for done in callbacks {
            // io::Error is not Clone; every waiter gets the same kind and text.
            done.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }

    /// Writes the batches to the tail segment(s), then fsyncs once.
    fn write_batches(&mut self, batches: &[EncodedBatch]) -> io::Result<()> {
        let mut created = false;
        for batch in batches {
            created |= self.prepare_tail(batch.first_index)?;
            let file = self.tail_file()?;
            file.write_all(&batch.bytes)?;
            let Some(segment) = self.segments.last_mut() else {
                return Err(io::Error::other("no tail segment after preparing one"));
            };
            let mut offset = segment.len;
            for len in &batch.frame_lens {
                segment.offsets.push(offset);
                offset += u64::from(*len);
            }
            segment.len = offset;
        }
        // fdatasync also persists the file size, which is all the metadata
        // reading the records back needs.
        self.tail_file()?.sync_data()?;
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Makes sure the tail segment can take entries from `first_index`,
    /// starting a new segment when there is none or the tail is full.
    /// Returns whether a segment file was created.
    fn prepare_tail(&mut self, first_index: u64) -> io::Result<bool> {
        if let Some(tail) = self.segments.last() {
            if tail.next_index() != first_index {
                // The log store checks contiguity before queueing, so this
                // would be a bug; writing would leave a hole in the log.
                return Err(io::Error::other(format!(
                    "append at index {first_index} does not follow the log's end at {}",
                    tail.next_index()
                )));
            }
            if tail.len < self.segment_bytes {
                return Ok(false);
            }
        }
        if let Some(full) = self.tail.take() {
            // The full segment got writes in this group: make them durable
            // before moving on, as the group's final fsync covers only the
            // new tail.
            full.sync_data()?;
        }
        let path = segment_path(&self.dir, first_index);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        self.segments.push(Segment {
            first: first_index,
            offsets: Vec::new(),
            len: 0,
        });
        self.tail = Some(file);
        Ok(true)
    }

    fn tail_file(&mut self) -> io::Result<&mut File> {
        let Some(segment) = self.segments.last() else {
            return Err(io::Error::other("the log has no segment to write to"));
        };
        let path = segment_path(&self.dir, segment.first);
        match &mut self.tail {
            Some(file) => Ok(file),
            slot @ None => Ok(slot.insert(OpenOptions::new().append(true).open(path)?)),
        }
    }

    /// Removes entries from `from` on. Later segments go first, newest
    /// first, and their removal is made durable before the segment holding
    /// `from` is cut: a crash at any point leaves a prefix of the old log,
    /// never a log with a hole in it.
    fn truncate(&mut self, from: u64) -> io::Result<()> {
        self.tail = None;
        let mut removed = false;
        while let Some(last) = self.segments.last() {
            if last.first < from {
                break;
            }
            fs::remove_file(segment_path(&self.dir, last.first))?;
            self.segments.pop();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(last) = self.segments.last_mut() {
            let keep = usize::try_from(from - last.first).unwrap_or(usize::MAX);
            if let Some(&cut_at) = last.offsets.get(keep) {
                let file = OpenOptions::new()
                    .write(true)
                    .open(segment_path(&self.dir, last.first))?;
                file.set_len(cut_at)?;
                file.sync_all()?;
                last.offsets.truncate(keep);
                last.len = cut_at;
            }
        }
        Ok(())
    }

    /// Removes entries up to `upto`. The purge point is persisted first;
    /// then whole segments are deleted oldest first, so a crash leaves
    /// records that replay skips, never a gap.
    fn purge(&mut self, upto: LogId<RaftNodeId>) -> io::Result<()> {
        self.meta.purged = Some(upto);
        self.store_meta()?;
        let mut removed = false;
        while let Some(first) = self.segments.first() {
            if first.next_index() > upto.index + 1 {
                break;
            }
            if self.segments.len() == 1 {
                self.tail = None;
            }
            fs::remove_file(segment_path(&self.dir, first.first))?;
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn store_meta(&mut self) -> io::Result<()> {
        self.meta.store(&self.meta_path)?;
        self.meta_dirty = false;
        Ok(())
    }
}
