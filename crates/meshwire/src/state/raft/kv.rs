//! The replicated maps in memory: how a [`Command`] changes them, the
//! bounded change history behind `watch`, and [`KvReader`], the read handle
//! the rest of meshwire uses beside openraft.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use openraft::{Entry, EntryPayload, LogId, StoredMembership};
use tokio::sync::watch;

use super::error::ReadError;
use super::read_lock;
use super::types::{Change, Command, CommandResult, Member, RaftNodeId, TypeConfig, DEFAULT_MAP};

/// Every map: name → key → (value, version).
pub(super) type Maps = BTreeMap<String, BTreeMap<String, (Vec<u8>, u64)>>;

/// How many answered requests are remembered for deduplication
/// ([`Command::Once`]). A client re-proposes within its timeout (seconds),
/// so this covers far more than any retry can lag; eviction is by log
/// order, the same on every member.
const REMEMBERED_REQUESTS: usize = 100_000;

/// What a snapshot holds: the maps and the remembered requests (so a
/// member restored from a snapshot still answers a retry rather than
/// applying it twice).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Snapshotted {
    pub(super) maps: Maps,
    /// (request id, log index applied at, what it answered), in log order.
    pub(super) requests: Vec<(u128, u64, CommandResult)>,
}

/// [`Snapshotted`] borrowed from the live state (encodes identically).
#[derive(serde::Serialize)]
pub(super) struct SnapshottedRef<'a> {
    maps: &'a Maps,
    requests: Vec<(u128, u64, &'a CommandResult)>,
}

/// How much change history to keep.
#[derive(Clone, Copy, Debug)]
pub(super) struct HistoryLimits {
    /// At most this many changes.
    pub(super) changes: usize,
    /// At most this many bytes of keys and values.
    pub(super) bytes: usize,
}

/// The state machine's state: the maps, where in the log they are, the
/// membership, and the recent changes.
pub(super) struct KvState {
    pub(super) maps: Maps,
    pub(super) last_applied: Option<LogId<RaftNodeId>>,
    pub(super) membership: StoredMembership<RaftNodeId, Member>,
    /// Changes in version order, all those with a version above `floor`.
    history: VecDeque<Change>,
    history_floor: u64,
    history_bytes: usize,
    limits: HistoryLimits,
    /// Answered `Once` requests by id, and their ids in log order.
    requests: BTreeMap<u128, (u64, CommandResult)>,
    request_order: VecDeque<u128>,
}

impl KvState {
    /// The state before any entry: only the default map.
    pub(super) fn new(limits: HistoryLimits) -> KvState {
        let mut state = KvState {
            maps: Maps::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            history: VecDeque::new(),
            history_floor: 0,
            history_bytes: 0,
            limits,
            requests: BTreeMap::new(),
            request_order: VecDeque::new(),
        };
        state.maps.insert(DEFAULT_MAP.to_owned(), BTreeMap::new());
        state
    }

    /// Replaces everything with a snapshot's contents. What happened before
    /// the snapshot is unknown, so history restarts at its index.
    pub(super) fn restore(
        &mut self,
        snapshotted: Snapshotted,
        last_applied: Option<LogId<RaftNodeId>>,
        membership: StoredMembership<RaftNodeId, Member>,
    ) {
        let Snapshotted { mut maps, requests } = snapshotted;
        maps.entry(DEFAULT_MAP.to_owned()).or_default();
        self.maps = maps;
        self.requests.clear();
        self.request_order.clear();
        for (id, index, result) in requests {
            self.requests.insert(id, (index, result));
            self.request_order.push_back(id);
        }
        self.last_applied = last_applied;
        self.membership = membership;
        self.history.clear();
        self.history_bytes = 0;
        self.history_floor = applied_index(last_applied);
    }

    /// Applies one committed entry.
    pub(super) fn apply(&mut self, entry: Entry<TypeConfig>) -> CommandResult {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => CommandResult::Internal,
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                CommandResult::Internal
            }
            EntryPayload::Normal(command) => self.apply_command(command, entry.log_id.index),
        }
    }

    fn apply_command(&mut self, command: Command, version: u64) -> CommandResult {
        // The client validates before proposing; checking again here keeps a
        // buggy or hostile proposer from storing what no reader expects.
        if let Err(invalid) = command.validate() {
            return CommandResult::Rejected {
                reason: invalid.to_string(),
            };
        }
        match command {
            Command::Once { id, command } => {
                if let Some((_, answered)) = self.requests.get(&id) {
                    return answered.clone();
                }
                let result = self.apply_command(*command, version);
                self.requests.insert(id, (version, result.clone()));
                self.request_order.push_back(id);
                while self.request_order.len() > REMEMBERED_REQUESTS {
                    if let Some(old) = self.request_order.pop_front() {
                        self.requests.remove(&old);
                    }
                }
                result
            }
            Command::CreateMap { map } => {
                let existed = self.maps.contains_key(&map);
                self.maps.entry(map).or_default();
                CommandResult::MapCreated { existed }
            }
            Command::Put { map, key, value } => self.put(map, key, value, version, None),
            Command::Cas {
                map,
                key,
                expected,
                value,
            } => self.put(map, key, value, version, Some(expected)),
            Command::Delete { map, key } => self.delete(map, key, version),
        }
    }

    /// A put, or with `expected` a compare-and-set.
    fn put(
        &mut self,
        map: String,
        key: String,
        value: Vec<u8>,
        version: u64,
        expected: Option<u64>,
    ) -> CommandResult {
        let Some(entries) = self.maps.get_mut(&map) else {
            return CommandResult::UnknownMap { map };
        };
        if let Some(expected) = expected {
            let current = entries.get(&key).map_or(0, |(_, version)| *version);
            if current != expected {
                return CommandResult::CasFailed { current };
            }
        }
        entries.insert(key.clone(), (value.clone(), version));
        self.record(Change {
            map,
            key,
            value: Some(value),
            version,
        });
        CommandResult::Written { version }
    }

    fn delete(&mut self, map: String, key: String, version: u64) -> CommandResult {
        let Some(entries) = self.maps.get_mut(&map) else {
            return CommandResult::UnknownMap { map };
        };
        if entries.remove(&key).is_none() {
            // Nothing changed, so nothing for watchers.
            return CommandResult::Deleted {
                existed: false,
                version,
            };
        }
        self.record(Change {
            map,
            key,
            value: None,
            version,
        });
        CommandResult::Deleted {
            existed: true,
            version,
        }
    }

    fn record(&mut self, change: Change) {
        self.history_bytes += change_bytes(&change);
        self.history.push_back(change);
        while self.history.len() > self.limits.changes || self.history_bytes > self.limits.bytes {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= change_bytes(&oldest);
            self.history_floor = oldest.version;
        }
    }

    fn applied_index(&self) -> u64 {
        applied_index(self.last_applied)
    }

    /// What a snapshot of this state holds, borrowed.
    pub(super) fn snapshotted(&self) -> SnapshottedRef<'_> {
        SnapshottedRef {
            maps: &self.maps,
            requests: self
                .request_order
                .iter()
                .filter_map(|id| self.requests.get(id).map(|(i, r)| (*id, *i, r)))
                .collect(),
        }
    }
}

impl std::fmt::Debug for KvState {
    // A summary: the maps themselves may be gigabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvState")
            .field("maps", &self.maps.len())
            .field("last_applied", &self.last_applied)
            .field("history", &self.history.len())
            .field("history_floor", &self.history_floor)
            .finish_non_exhaustive()
    }
}

fn change_bytes(change: &Change) -> usize {
    change.map.len() + change.key.len() + change.value.as_ref().map_or(0, Vec::len)
}

/// The index of a log id, 0 for none (index 0 is Raft's initial membership
/// entry, never a command, so 0 is also "no version").
pub(super) fn applied_index(log_id: Option<LogId<RaftNodeId>>) -> u64 {
    log_id.map_or(0, |id| id.index)
}

/// One key of a [`KvReader::list`]: the key, its value, its version.
pub type Listed = (String, Vec<u8>, u64);

/// A cheap, cloneable read handle on the replicated maps of this member.
///
/// Reads see the state this member has applied, which may trail the
/// leader: for a linearizable read, first have openraft confirm the
/// leadership (`Raft::ensure_linearizable`) and wait until
/// [`applied`](Self::applied) reaches the index it returns.
///
/// To watch without missing a change: subscribe with `applied()` first,
/// then loop { mark the receiver seen (`borrow_and_update`), call
/// [`changes_after`](Self::changes_after); if it returned nothing, await
/// `changed()` }. Start from the index [`list`](Self::list) returned; on
/// [`ReadError::Compacted`], list again.
#[derive(Clone, Debug)]
pub struct KvReader {
    state: Arc<RwLock<KvState>>,
    applied: watch::Receiver<u64>,
}

impl KvReader {
    pub(super) fn new(state: Arc<RwLock<KvState>>, applied: watch::Receiver<u64>) -> KvReader {
        KvReader { state, applied }
    }

    /// The value of `key` in `map` and its version, or `None` if absent.
    pub fn get(&self, map: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, ReadError> {
        let state = read_lock(&self.state);
        let entries = state
            .maps
            .get(map)
            .ok_or_else(|| ReadError::UnknownMap(map.to_owned()))?;
        Ok(entries.get(key).cloned())
    }

    /// Every key of `map` starting with `prefix` (in key order) with its
    /// value and version, and the log index this listing reflects (pass it
    /// to [`changes_after`](Self::changes_after) to follow on).
    pub fn list(&self, map: &str, prefix: &str) -> Result<(Vec<Listed>, u64), ReadError> {
        let state = read_lock(&self.state);
        let entries = state
            .maps
            .get(map)
            .ok_or_else(|| ReadError::UnknownMap(map.to_owned()))?;
        let items = entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (value, version))| (key.clone(), value.clone(), *version))
            .collect();
        Ok((items, state.applied_index()))
    }

    /// Up to `max` changes to keys of `map` starting with `prefix`, with a
    /// version above `after`, oldest first. [`ReadError::Compacted`] when
    /// history no longer reaches back to `after`.
    pub fn changes_after(
        &self,
        map: &str,
        prefix: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<Change>, ReadError> {
        let state = read_lock(&self.state);
        if !state.maps.contains_key(map) {
            return Err(ReadError::UnknownMap(map.to_owned()));
        }
        if after < state.history_floor {
            return Err(ReadError::Compacted {
                asked: after,
                oldest: state.history_floor,
            });
        }
        let start = state.history.partition_point(|c| c.version <= after);
        Ok(state
            .history
            .range(start..)
            .filter(|c| c.map == map && c.key.starts_with(prefix))
            .take(max)
            .cloned()
            .collect())
    }

    /// The last applied log index, updated after every applied batch: await
    /// `changed()` on it to long-poll.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The names of every map, in order.
    pub fn maps(&self) -> Vec<String> {
        read_lock(&self.state).maps.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
