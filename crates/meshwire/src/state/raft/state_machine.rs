//! openraft's [`RaftStateMachine`] over the in-memory maps (`kv.rs`) and
//! the snapshot directory (`snapshot_store.rs`).
//!
//! The maps are not persisted on every apply: a snapshot is, and on
//! restart the state is the newest snapshot plus the log after it, which
//! openraft re-applies (up to the committed index the log store saved). So
//! `apply` costs no I/O, and what survives a crash is exactly what the log
//! and snapshot made durable.

use std::io::{self, Cursor};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use tokio::sync::watch;

use super::kv::{applied_index, KvState};
use super::snapshot_store::{decode_data, encode_data, Meta, SnapshotStore};
use super::types::{CommandResult, Member, RaftNodeId, TypeConfig};
use super::{read_lock, write_lock};

type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

/// The replicated key-value state machine: give it to `openraft::Raft::new`
/// and read through the [`KvReader`](super::KvReader) returned beside it.
#[derive(Debug)]
pub struct StateMachineStore {
    state: Arc<RwLock<KvState>>,
    applied: watch::Sender<u64>,
    snapshots: Arc<SnapshotStore>,
}

impl StateMachineStore {
    pub(super) fn new(
        state: Arc<RwLock<KvState>>,
        applied: watch::Sender<u64>,
        snapshots: SnapshotStore,
    ) -> Self {
        StateMachineStore {
            state,
            applied,
            snapshots: Arc::new(snapshots),
        }
    }
}

/// Builds snapshots of a [`StateMachineStore`] for openraft.
#[derive(Debug)]
pub struct SnapshotBuilder {
    state: Arc<RwLock<KvState>>,
    snapshots: Arc<SnapshotStore>,
}

fn snapshot_error(meta: Option<&Meta>, e: impl std::fmt::Display) -> StorageError<RaftNodeId> {
    let source = AnyError::error(e);
    StorageIOError::write_snapshot(meta.map(Meta::signature), source).into()
}

/// The id openraft uses to tell snapshots apart while streaming one. Two
/// snapshots at the same log id hold the same state, so the log id is
/// enough.
fn snapshot_id(last: Option<LogId<RaftNodeId>>) -> String {
    last.map_or_else(|| "empty".to_owned(), |id| id.to_string())
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let state = Arc::clone(&self.state);
        let snapshots = Arc::clone(&self.snapshots);
        let (meta, data) = blocking(move || {
            // Encoding under the read lock keeps one copy of the state, not
            // two; apply waits for it, readers do not.
            let (meta, data) = {
                let state = read_lock(&state);
                let meta = Meta {
                    last_log_id: state.last_applied,
                    last_membership: state.membership.clone(),
                    snapshot_id: snapshot_id(state.last_applied),
                };
                (meta, encode_data(&state.snapshotted())?)
            };
            if !snapshots.save_blocking(&meta, &data)? {
                tracing::debug!(snapshot = %meta, "built snapshot is older than the current one; not kept");
            }
            Ok((meta, data))
        })
        .await
        .map_err(|e| snapshot_error(None, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<RaftNodeId>>,
        StoredMembership<RaftNodeId, Member>,
    )> {
        let state = read_lock(&self.state);
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (results, applied) = {
            let mut state = write_lock(&self.state);
            let results: Vec<CommandResult> = entries
                .into_iter()
                .map(|entry| state.apply(entry))
                .collect();
            (results, applied_index(state.last_applied))
        };
        // After the lock is released, so a woken watcher finds the changes.
        self.applied.send_replace(applied);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: Arc::clone(&self.state),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        // Check the data before anything is replaced: a damaged transfer
        // must leave the current state alone.
        let maps = decode_data(&data).map_err(|kind| {
            let source = AnyError::error(format!("received snapshot data is damaged: {kind}"));
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                source,
            ))
        })?;
        let snapshots = Arc::clone(&self.snapshots);
        let saved_meta = meta.clone();
        let saved = blocking(move || snapshots.save_blocking(&saved_meta, &data))
            .await
            .map_err(|e| snapshot_error(Some(meta), e))?;
        if !saved {
            // openraft installs only snapshots newer than what was applied,
            // and every snapshot kept is of applied state: a bug, and
            // installing would leave the state older than its snapshot.
            let reason = "received snapshot is older than the current one";
            return Err(snapshot_error(Some(meta), reason));
        }
        let applied = {
            let mut state = write_lock(&self.state);
            state.restore(maps, meta.last_log_id, meta.last_membership.clone());
            applied_index(state.last_applied)
        };
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let snapshots = Arc::clone(&self.snapshots);
        let loaded = blocking(move || snapshots.read_current_blocking())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(loaded.map(|l| Snapshot {
            meta: l.meta,
            snapshot: Box::new(Cursor::new(l.data)),
        }))
    }
}
