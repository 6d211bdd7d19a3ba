//! The replica: a map of last-writer-wins registers with tombstones.

use super::delta::{Change, Delta, DeltaEntry, Stamp};
use super::error::{quote_key, MapError};
use super::hlc::{ClockError, Hlc, Timestamp};
use super::sync::{entry_hash, fine_bucket, key_hash, FINE_BUCKETS};
use crate::wire::NodeId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Limits and clock settings of one replica. Every replica of a map should
/// use the same limits: a delta one accepts and another refuses stays
/// unmerged there until the limits agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapConfig {
    /// Longest key in bytes (at most 65 535, the codec's `u16` length;
    /// larger settings act as 65 535).
    pub max_key_len: usize,
    /// Largest value in bytes (at most `u32::MAX`, the codec's length).
    pub max_value_len: usize,
    /// How far ahead of our wall clock a remote stamp may be
    /// ([`Hlc::check`]).
    pub max_clock_skew_ms: u64,
}

impl MapConfig {
    /// Keys up to 1 KiB: the same bound as subjects.
    pub const DEFAULT_MAX_KEY_LEN: usize = 1024;
    /// Values up to 256 KiB: a delta with its key and stamp then fits one
    /// mesh message (1 MiB by default) several times over; the same bound
    /// as linearizable maps.
    pub const DEFAULT_MAX_VALUE_LEN: usize = 256 * 1024;

    /// The key limit in force (the setting, capped by the codec).
    fn key_limit(&self) -> usize {
        self.max_key_len.min(usize::from(u16::MAX))
    }

    /// The value limit in force (the setting, capped by the codec).
    fn value_limit(&self) -> usize {
        self.max_value_len.min(u32::MAX as usize)
    }

    /// Checks a key: non-empty, within the length limit, no control
    /// characters.
    pub fn check_key(&self, key: &str) -> Result<(), MapError> {
        if key.is_empty() {
            return Err(MapError::EmptyKey);
        }
        let max = self.key_limit();
        if key.len() > max {
            return Err(MapError::KeyTooLong {
                key: quote_key(key),
                len: key.len(),
                max,
            });
        }
        if key.chars().any(char::is_control) {
            return Err(MapError::ControlCharInKey {
                key: quote_key(key),
            });
        }
        Ok(())
    }

    /// Checks a value's size.
    pub fn check_value(&self, key: &str, value: &[u8]) -> Result<(), MapError> {
        let max = self.value_limit();
        if value.len() > max {
            return Err(MapError::ValueTooLarge {
                key: quote_key(key),
                len: value.len(),
                max,
            });
        }
        Ok(())
    }
}

impl Default for MapConfig {
    fn default() -> Self {
        Self {
            max_key_len: Self::DEFAULT_MAX_KEY_LEN,
            max_value_len: Self::DEFAULT_MAX_VALUE_LEN,
            max_clock_skew_ms: Hlc::DEFAULT_MAX_SKEW_MS,
        }
    }
}

/// A live entry, borrowed from the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a Bytes,
    /// Who wrote it, and when; `stamp.version()` is its version.
    pub stamp: Stamp,
}

/// What a local write did: the delta to gossip to the other replicas and
/// the change to show local watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The entry as written, for replication.
    pub delta: Delta,
    /// The change of visible state.
    pub change: Change,
}

/// A remote entry left out of a merge because its stamp was too far in
/// the future. Anti-entropy offers it again; it is accepted once our
/// clock is within the skew bound of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The key.
    pub key: String,
    /// The entry's stamp (its origin is the node whose clock is off).
    pub stamp: Stamp,
    /// Why.
    pub error: ClockError,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeReport {
    /// How many entries of the delta replaced the local state.
    pub applied: usize,
    /// The visible changes, in the order of the delta (watch events).
    pub changes: Vec<Change>,
    /// Entries left out because their stamp was too far in the future.
    pub skipped: Vec<SkippedEntry>,
}

/// One key's register: the winning write and what the digest needs.
#[derive(Debug, Clone)]
struct Slot {
    stamp: Stamp,
    /// `None`: a tombstone.
    value: Option<Bytes>,
    /// Hash of the key alone: picks the digest bucket.
    key_hash: u64,
    /// Hash of key, stamp and value: the entry's share of its bucket, and
    /// the last tie-break between two entries with the same stamp.
    hash: u64,
    /// The replica's apply counter when this state was installed.
    seq: u64,
}

impl Slot {
    fn to_change(&self, key: &str) -> Change {
        Change {
            key: key.to_owned(),
            value: self.value.clone(),
            stamp: self.stamp,
            seq: self.seq,
        }
    }
}

/// One replica of an eventually consistent map: string keys, opaque
/// values, each key a last-writer-wins register stamped with a hybrid
/// logical clock reading and the writer's node id.
///
/// # Call order
///
/// - Local writes ([`LwwMap::put`], [`LwwMap::delete`], [`LwwMap::cas`],
///   [`LwwMap::cas_delete`]) take the driver's wall clock and return an
///   [`Update`]: gossip its `delta` to the other replicas, show its
///   `change` to local watchers.
/// - Deltas from the network go to [`LwwMap::merge`], which returns the
///   visible changes. Merging is idempotent, commutative and associative:
///   the transport may lose, duplicate and reorder deltas.
/// - Periodically, anti-entropy repairs what gossip lost: see the
///   [module documentation](super) for the exchange of
///   [`LwwMap::digest`] and [`LwwMap::entries_in`].
///
/// # Conflicts
///
/// The entry with the greater [`Stamp`] wins: later clock reading, then
/// greater node id. A delete is an entry too (a tombstone), so a delete
/// beats earlier puts and loses to later ones, wherever they were made.
/// Two entries with the same stamp can only come from a node that issued
/// the same reading twice (a restart with its clock set back); they are
/// ordered by a hash of their content, so replicas still agree.
///
/// # Tombstones
///
/// Deleted keys keep a tombstone, counted by [`LwwMap::tombstones`].
/// Dropping one is safe only once every replica has seen it (causal
/// stability), or an older put still travelling would resurrect the key;
/// this core does not track that and never drops them.
#[derive(Debug, Clone)]
pub struct LwwMap {
    node: NodeId,
    clock: Hlc,
    config: MapConfig,
    entries: BTreeMap<String, Slot>,
    tombstones: usize,
    seq: u64,
    /// XOR of entry hashes per fine bucket, kept up to date on every
    /// install so that a digest costs `O(buckets)`, not `O(entries)`.
    /// Empty until the first entry.
    fine: Vec<u64>,
}

impl LwwMap {
    /// An empty replica written to by `node`, with the default limits.
    pub fn new(node: NodeId) -> Self {
        Self::with_config(node, MapConfig::default())
    }

    /// An empty replica with `config`.
    pub fn with_config(node: NodeId, config: MapConfig) -> Self {
        Self {
            node,
            clock: Hlc::new(config.max_clock_skew_ms),
            config,
            entries: BTreeMap::new(),
            tombstones: 0,
            seq: 0,
            fine: Vec::new(),
        }
    }

    /// The node that writes locally.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The replica's clock (its last reading is the greatest stamp time it
    /// has issued or merged).
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    /// The limits in force.
    pub fn config(&self) -> &MapConfig {
        &self.config
    }

    /// The live entry under `key`.
    pub fn get(&self, key: &str) -> Option<EntryRef<'_>> {
        let (key, slot) = self.entries.get_key_value(key)?;
        Some(EntryRef {
            key,
            value: slot.value.as_ref()?,
            stamp: slot.stamp,
        })
    }

    /// The version of `key` for a compare-and-swap: its packed clock
    /// reading, or 0 when it is absent or deleted.
    pub fn version(&self, key: &str) -> u64 {
        self.get(key).map_or(0, |e| e.stamp.version())
    }

    /// The live entries whose key starts with `prefix`, in key order.
    pub fn iter_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = EntryRef<'a>> + 'a {
        self.slots_with_prefix(prefix).filter_map(|(key, slot)| {
            Some(EntryRef {
                key,
                value: slot.value.as_ref()?,
                stamp: slot.stamp,
            })
        })
    }

    /// How many live (not deleted) keys.
    pub fn len(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tombstones are kept (see the type's documentation).
    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// The replica's apply counter: how many times an entry was installed
    /// here. A watcher records it when it starts and resumes exactly with
    /// [`LwwMap::changes_after_seq`]. It counts from 0 in each process.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &str, value: Bytes, wall_ms: u64) -> Result<Update, MapError> {
        self.config.check_key(key)?;
        self.config.check_value(key, &value)?;
        self.write(key, Some(value), wall_ms)
    }

    /// Deletes `key`. Deleting a key that is absent or already deleted
    /// changes nothing and returns `None`: a tombstone for a key this
    /// replica never saw would only grow the map (and would delete, on
    /// other replicas, writes this one has not seen yet).
    pub fn delete(&mut self, key: &str, wall_ms: u64) -> Result<Option<Update>, MapError> {
        self.config.check_key(key)?;
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.write(key, None, wall_ms).map(Some)
    }

    /// Sets `key` to `value` if its version in this replica is
    /// `expected_version` (0: absent or deleted).
    ///
    /// The check is against this replica only: another replica may accept
    /// a concurrent write, and then the greater stamp wins as usual. Use
    /// the linearizable map where that is not acceptable.
    pub fn cas(
        &mut self,
        key: &str,
        expected_version: u64,
        value: Bytes,
        wall_ms: u64,
    ) -> Result<Update, MapError> {
        self.config.check_key(key)?;
        self.config.check_value(key, &value)?;
        self.expect_version(key, expected_version)?;
        self.write(key, Some(value), wall_ms)
    }

    /// Deletes `key` if its version in this replica is `expected_version`;
    /// like [`LwwMap::cas`]. Expecting 0 of an absent key succeeds and
    /// changes nothing (`None`).
    pub fn cas_delete(
        &mut self,
        key: &str,
        expected_version: u64,
        wall_ms: u64,
    ) -> Result<Option<Update>, MapError> {
        self.config.check_key(key)?;
        self.expect_version(key, expected_version)?;
        self.delete(key, wall_ms)
    }

    fn expect_version(&self, key: &str, expected: u64) -> Result<(), MapError> {
        let actual = self.version(key);
        if actual != expected {
            return Err(MapError::VersionMismatch {
                key: quote_key(key),
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// Stamps and installs a checked local write.
    fn write(&mut self, key: &str, value: Option<Bytes>, wall_ms: u64) -> Result<Update, MapError> {
        let stamp = Stamp::new(self.clock.now(wall_ms)?, self.node);
        let entry = DeltaEntry {
            key: key.to_owned(),
            stamp,
            value,
        };
        let change = self.install(entry.clone(), false);
        // The clock is ahead of every stamp in the map (each one was issued
        // or observed by it), so a local write always wins and is visible.
        debug_assert!(change.is_some());
        let change = change.unwrap_or_else(|| Change {
            key: entry.key.clone(),
            value: entry.value.clone(),
            stamp,
            seq: self.seq,
        });
        Ok(Update {
            delta: Delta::from(vec![entry]),
            change,
        })
    }

    /// Merges a delta from another replica.
    ///
    /// Every entry is checked against the limits (and for a zero time)
    /// first; if any breaks
    /// them the whole delta is refused and nothing is applied (a peer that
    /// sends such a delta is misconfigured or misbehaving). Entries whose
    /// stamp is too far ahead of `wall_ms` are left out and reported in
    /// [`MergeReport::skipped`]; the rest is applied. Skipping only those
    /// (rather than refusing the delta) keeps one bad clock from holding
    /// back every other key of an anti-entropy batch, and loses nothing:
    /// the next exchange offers them again.
    ///
    /// Values that win are copied out of the delta, so a stored value
    /// never pins the (larger) receive buffer it was decoded from.
    pub fn merge(&mut self, delta: Delta, wall_ms: u64) -> Result<MergeReport, MapError> {
        for e in &delta.entries {
            self.config.check_key(&e.key)?;
            if e.stamp.time == Timestamp::ZERO {
                return Err(MapError::ZeroTime {
                    key: quote_key(&e.key),
                });
            }
            if let Some(v) = &e.value {
                self.config.check_value(&e.key, v)?;
            }
        }
        let mut report = MergeReport::default();
        for entry in delta.entries {
            if let Err(error) = self.clock.observe(entry.stamp.time, wall_ms) {
                report.skipped.push(SkippedEntry {
                    key: entry.key,
                    stamp: entry.stamp,
                    error,
                });
                continue;
            }
            let before = self.seq;
            let change = self.install(entry, true);
            if self.seq != before {
                report.applied += 1;
            }
            report.changes.extend(change);
        }
        Ok(report)
    }

    /// Puts `entry` in place if it beats the key's current state; returns
    /// the visible change, if any. `detach` copies a winning value.
    fn install(&mut self, entry: DeltaEntry, detach: bool) -> Option<Change> {
        let DeltaEntry { key, stamp, value } = entry;
        let hash = entry_hash(&key, stamp, value.as_deref());
        let was_live = match self.entries.get(&key) {
            Some(slot) if (stamp, hash) <= (slot.stamp, slot.hash) => return None,
            Some(slot) => slot.value.is_some(),
            None => false,
        };
        let value = match value {
            Some(v) if detach => Some(Bytes::copy_from_slice(&v)),
            other => other,
        };
        self.seq += 1;
        let new = Slot {
            stamp,
            key_hash: key_hash(&key),
            hash,
            seq: self.seq,
            value,
        };
        if self.fine.is_empty() {
            self.fine = vec![0; FINE_BUCKETS];
        }
        self.fine[fine_bucket(new.key_hash)] ^= new.hash;
        if new.value.is_none() {
            self.tombstones += 1;
        }
        // A tombstone over nothing visible (absent or deleted) changes
        // nothing a watcher could see.
        let change = (was_live || new.value.is_some()).then(|| new.to_change(&key));
        if let Some(old) = self.entries.insert(key, new) {
            self.fine[fine_bucket(old.key_hash)] ^= old.hash;
            if old.value.is_none() {
                self.tombstones -= 1;
            }
        }
        change
    }

    /// Every entry (tombstones as deletions) under `prefix` whose version
    /// is greater than `version`, in stamp order: what a watch that saw
    /// up to `version` missed, as far as versions can tell.
    ///
    /// Versions are the writers' clock readings, so an entry that arrives
    /// late (from a healed partition) with an old stamp is not "after"
    /// anything and is missed; [`LwwMap::changes_after_seq`] resumes
    /// exactly on the same replica.
    pub fn changes_since(&self, version: u64, prefix: &str) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .slots_with_prefix(prefix)
            .filter(|(_, s)| s.stamp.version() > version)
            .map(|(k, s)| s.to_change(k))
            .collect();
        out.sort_unstable_by_key(|c| c.stamp);
        out
    }

    /// Every entry (tombstones as deletions) under `prefix` installed on
    /// this replica after apply counter `seq` ([`LwwMap::seq`]), in the
    /// order it was installed: exactly what a watch of this replica that
    /// had seen up to `seq` missed (a key changed twice shows once, in its
    /// current state).
    pub fn changes_after_seq(&self, seq: u64, prefix: &str) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .slots_with_prefix(prefix)
            .filter(|(_, s)| s.seq > seq)
            .map(|(k, s)| s.to_change(k))
            .collect();
        out.sort_unstable_by_key(|c| c.seq);
        out
    }

    /// Every entry (live or not) whose key starts with `prefix`, in key
    /// order.
    fn slots_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Slot)> + 'a {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, s)| (k.as_str(), s))
    }

    /// The fine-bucket XORs (empty for a map that never held an entry).
    pub(crate) fn fine_buckets(&self) -> &[u64] {
        &self.fine
    }

    /// Every entry, tombstones included, whose key hash passes `keep`, as
    /// one delta (what anti-entropy ships for some buckets).
    pub(crate) fn delta_where(&self, keep: impl Fn(u64) -> bool) -> Delta {
        self.entries
            .iter()
            .filter(|(_, s)| keep(s.key_hash))
            .map(|(k, s)| DeltaEntry {
                key: k.clone(),
                stamp: s.stamp,
                value: s.value.clone(),
            })
            .collect()
    }

    /// Every entry, tombstones included, as one delta: a full state
    /// transfer (for a new replica, or a snapshot).
    pub fn to_delta(&self) -> Delta {
        self.delta_where(|_| true)
    }
}

impl PartialEq for LwwMap {
    /// Two replicas are equal when they hold the same entries (keys,
    /// stamps, values and tombstones), whoever they belong to and whatever
    /// their clocks read.
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, a), (kb, b))| ka == kb && a.stamp == b.stamp && a.value == b.value)
    }
}
