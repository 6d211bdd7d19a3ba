//! What replicas send each other (deltas) and what a watcher sees
//! (changes), and the stamp both carry.

use super::hlc::Timestamp;
use crate::wire::NodeId;
use bytes::Bytes;

/// Who wrote an entry and when: the clock reading, then the writer's node
/// id to break ties between writers that read the same time. Ordered by
/// `time` first (the field order matters for the derived `Ord`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Stamp {
    /// The writer's clock reading.
    pub time: Timestamp,
    /// The node that wrote the entry.
    pub origin: NodeId,
}

impl Stamp {
    /// A stamp from its parts.
    pub const fn new(time: Timestamp, origin: NodeId) -> Self {
        Self { time, origin }
    }

    /// The entry's version as users see it: the packed clock reading.
    pub const fn version(&self) -> u64 {
        self.time.as_u64()
    }
}

/// One entry of a [`Delta`]: the state of one key at one replica.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeltaEntry {
    /// The key.
    pub key: String,
    /// Who wrote this state, and when.
    pub stamp: Stamp,
    /// The value, or `None` for a deletion (a tombstone).
    pub value: Option<Bytes>,
}

/// A set of entries to merge into a replica: what a local write returns
/// for gossip, and what anti-entropy ships for the buckets that differ.
///
/// Deltas are state, not operations: merging one any number of times, in
/// any order with other deltas, gives the same result, so the transport
/// may lose, duplicate and reorder them (lost ones are repaired by
/// anti-entropy). Several deltas can be concatenated with
/// [`Delta::extend`] to batch them into one message.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Delta {
    pub(crate) entries: Vec<DeltaEntry>,
}

impl Delta {
    /// An empty delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one entry.
    pub fn push(&mut self, entry: DeltaEntry) {
        self.entries.push(entry);
    }

    /// Appends every entry of `other` (batching several deltas into one).
    pub fn extend(&mut self, other: Delta) {
        self.entries.extend(other.entries);
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[DeltaEntry] {
        &self.entries
    }

    /// Takes the entries out.
    pub fn into_entries(self) -> Vec<DeltaEntry> {
        self.entries
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to merge.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Vec<DeltaEntry>> for Delta {
    fn from(entries: Vec<DeltaEntry>) -> Self {
        Self { entries }
    }
}

impl FromIterator<DeltaEntry> for Delta {
    fn from_iter<I: IntoIterator<Item = DeltaEntry>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

/// A change of a replica's visible state, for watchers: a key got a new
/// value (or a newer stamp for the same value), or was deleted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<Bytes>,
    /// The stamp of the entry now in the map; `stamp.version()` is what a
    /// compare-and-swap expects.
    pub stamp: Stamp,
    /// This replica's apply counter when the entry was installed (see
    /// [`LwwMap::seq`](super::LwwMap::seq)): exact resumption of a watch
    /// with [`LwwMap::changes_after_seq`](super::LwwMap::changes_after_seq).
    pub seq: u64,
}

impl Change {
    /// The entry's version: its packed clock reading.
    pub fn version(&self) -> u64 {
        self.stamp.version()
    }

    /// True when the key was deleted.
    pub fn is_deletion(&self) -> bool {
        self.value.is_none()
    }
}
