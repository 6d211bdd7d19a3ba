//! Raft storage and the replicated key-value state machine behind
//! meshwire's linearizable maps, on [`openraft`] 0.9.
//!
//! One Raft group runs on the routers and holds every linearizable map.
//! This module is its storage half; the network (openraft RPCs over
//! meshwire request/reply), forwarding to the leader and the user-facing
//! map API sit on top of it.
//!
//! ```text
//!              openraft::Raft<TypeConfig>
//!              │                       │
//!   LogStore (RaftLogStorage)   StateMachineStore (RaftStateMachine) ──► KvReader (get, list, watch)
//!   <dir>/log/*.seg, meta         in-memory maps + change history          shared, cheap, Clone
//!   writer thread, fsync          <dir>/snapshots/*.snap
//! ```
//!
//! Start with [`open`] and [`raft_config`]:
//!
//! ```no_run
//! # async fn demo(network: impl openraft::RaftNetworkFactory<meshwire::state::raft::TypeConfig>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use meshwire::state::raft::{open, raft_config, StoreConfig};
//! let (log, state_machine, reader) = open("data/raft".as_ref(), StoreConfig::default()).await?;
//! let raft = openraft::Raft::new(1, raft_config().into(), network, log, state_machine).await?;
//! # Ok(()) }
//! ```
//!
//! | file | what |
//! |---|---|
//! | `types.rs` | the contract: [`TypeConfig`], [`Command`], [`CommandResult`], [`Change`], [`Member`], the input validators |
//! | `log_store/` | [`LogStore`]: segment files, CRC per record, fsync before an append is reported flushed, torn-tail repair on open (`replay.rs`), a writer thread (`writer.rs`) |
//! | `state_machine.rs` | [`StateMachineStore`], [`SnapshotBuilder`] |
//! | `kv.rs` | applying commands, the change history, [`KvReader`] |
//! | `snapshot_store.rs` | snapshot files: atomic, checksummed, newest kept |
//! | `disk.rs` | frames (`len | crc32 | payload`) and atomic file replacement |
//! | `sim_network.rs` | an in-process network with seeded faults, for tests (hidden from docs) |
//!
//! **Durability.** An append is reported flushed only after its fsync; a
//! vote is durable before `save_vote` returns. The state machine is
//! persisted by snapshots only: on restart it is the newest snapshot plus
//! the log re-applied after it.

mod disk;
mod error;
mod kv;
mod log_store;
#[doc(hidden)]
pub mod sim_network;
mod snapshot_store;
mod state_machine;
#[cfg(test)]
mod tests;
mod types;

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

pub use error::{Corruption, ReadError, StoreError};
pub use kv::{KvReader, Listed};
pub use log_store::{LogReader, LogStore};
pub use state_machine::{SnapshotBuilder, StateMachineStore};
pub use types::{
    validate_key, validate_map_name, validate_value, Change, Command, CommandResult, InvalidInput,
    Member, RaftNodeId, TypeConfig, DEFAULT_MAP, MAX_KEY_LEN, MAX_MAP_NAME_LEN, MAX_VALUE_LEN,
};

use kv::{applied_index, HistoryLimits, KvState};
use snapshot_store::SnapshotStore;

/// Settings of the Raft storage, with defaults for a router.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The most changes the in-memory history keeps for `watch` (default
    /// 100 000). A watcher further behind gets [`ReadError::Compacted`].
    pub history_changes: usize,
    /// The most bytes of keys and values that history keeps (default
    /// 64 MiB): with values up to 1 MiB, a count alone would not bound
    /// memory.
    pub history_bytes: usize,
    /// A log segment file is closed and a new one started once it passes
    /// this size (default 64 MiB). Purging deletes whole segments.
    pub segment_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_changes: 100_000,
            history_bytes: 64 << 20,
            segment_bytes: 64 << 20,
        }
    }
}

/// Opens (or creates) the Raft storage in `dir` (a node uses its data
/// directory + `/raft`): the log, the state machine rebuilt from the newest
/// snapshot, and a read handle on the state machine's maps.
///
/// Refuses, with [`StoreError::Corrupt`] naming the file and offset, to
/// open on damaged data that a crash cannot explain; a torn last log
/// record (a crash mid-append) is cut off and reported in the log.
///
/// Only one process may use `dir` at a time; nothing here checks that.
pub async fn open(
    dir: &Path,
    config: StoreConfig,
) -> Result<(LogStore, StateMachineStore, KvReader), StoreError> {
    let dir = dir.to_path_buf();
    let io_dir = dir.clone();
    tokio::task::spawn_blocking(move || open_blocking(&dir, &config))
        .await
        .map_err(|e| StoreError::io(io_dir, std::io::Error::other(e)))?
}

fn open_blocking(
    dir: &Path,
    config: &StoreConfig,
) -> Result<(LogStore, StateMachineStore, KvReader), StoreError> {
    disk::create_dir_durably(dir).map_err(|e| StoreError::io(dir, e))?;
    let log = LogStore::open_blocking(dir, config.segment_bytes.max(1))?;
    let (snapshots, newest) = SnapshotStore::open_blocking(dir)?;
    let limits = HistoryLimits {
        changes: config.history_changes,
        bytes: config.history_bytes,
    };
    let mut state = KvState::new(limits);
    if let Some((loaded, maps)) = newest {
        state.restore(maps, loaded.meta.last_log_id, loaded.meta.last_membership);
    }
    let (applied_tx, applied_rx) = watch::channel(applied_index(state.last_applied));
    let state = Arc::new(RwLock::new(state));
    let reader = KvReader::new(Arc::clone(&state), applied_rx);
    Ok((
        log,
        StateMachineStore::new(state, applied_tx, snapshots),
        reader,
    ))
}

/// The Raft timing and snapshot settings meshwire uses: heartbeats every
/// 100 ms, elections after 400–800 ms of silence (several lost heartbeats,
/// so one slow link does not depose a leader), a snapshot every 10 000
/// log entries (bounding both the log on disk and the entries kept in
/// memory), snapshot chunks of 512 KiB.
///
/// A network carrying these RPCs over size-limited messages should answer
/// an `AppendEntries` that does not fit with `RPCError::PayloadTooLarge`
/// (openraft then sends fewer entries); one entry with a 1 MiB value does
/// not fit a default 1 MiB meshwire payload on its own.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "meshwire".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        // Keep some entries after a snapshot so a follower slightly behind
        // catches up from the log rather than with a whole snapshot.
        max_in_snapshot_log_to_keep: 1_000,
        // Snapshot chunks travel as meshwire messages: half the default
        // 1 MiB payload limit leaves room for the envelope.
        snapshot_max_chunk_size: 512 * 1024,
        ..openraft::Config::default()
    }
}

/// Locks for reading. The state behind these locks is only changed by
/// code that does not panic half-way, so a poisoned lock still holds
/// consistent data and is used as is.
fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Locks for writing; see [`read_lock`] about poisoning.
fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
