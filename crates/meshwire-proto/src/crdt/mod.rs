//! Eventually consistent replicated maps (`Consistency::Eventual`): the
//! sans-IO state machine of one replica.
//!
//! Every node holds a replica, accepts writes locally even when every other
//! node is unreachable, and replicas converge once they hear from each
//! other again. A map is a set of last-writer-wins registers, one per key,
//! a state-based CRDT: merging is idempotent, commutative and associative,
//! so replication may lose, duplicate and reorder what it carries.
//!
//! ```text
//!   driver (crate `meshwire`)                 this module
//!   ─────────────────────────                 ──────────────────────────────────
//!   user put/delete/cas ──(wall_ms)──► LwwMap::put ──► Update { delta, change }
//!   gossip delta ◄──────────────────── Delta::encode           │
//!   watchers ◄─────────────────────────────────────────────────┘ change
//!   delta received ──────(wall_ms)──► LwwMap::merge ──► MergeReport { changes, skipped }
//!   anti-entropy timer ──► LwwMap::digest ──► Digest::encode ──► peer
//!   peer's digest ──► Digest::diff ──► Buckets ──► LwwMap::entries_in ──► Delta ──► peer
//! ```
//!
//! | file | what it holds |
//! |---|---|
//! | `hlc.rs` | [`Hlc`], [`Timestamp`]: the hybrid logical clock, its skew bound |
//! | `delta.rs` | [`Stamp`], [`Delta`], [`DeltaEntry`], [`Change`] |
//! | `map.rs` | [`LwwMap`] (one replica), [`MapConfig`], merge and watch |
//! | `sync.rs` | anti-entropy: [`Digest`], [`Buckets`], the stable hash |
//! | `codec.rs` | the byte layout of deltas, digests and bucket sets |
//! | `error.rs` | [`MapError`], [`CodecError`], [`BucketCountError`] |
//!
//! # Replication
//!
//! Two mechanisms, both carrying state rather than operations:
//!
//! 1. **Gossip**: the delta of every local write is published to the other
//!    replicas (batched with [`Delta::extend`] if the driver likes). Fast,
//!    but a replica that is down or partitioned misses some.
//! 2. **Anti-entropy** repairs whatever gossip missed. Between replicas A
//!    and B, one exchange both ways:
//!
//!    ```text
//!    A → B   digest_A = A.digest()
//!    B       buckets  = B.digest().diff(&digest_A)   (empty: nothing to do)
//!    B → A   buckets, B.entries_in(&buckets)
//!    A       reply    = A.entries_in(&buckets)       (before merging: no echo)
//!            A.merge(B's entries)
//!    A → B   reply;   B.merge(reply)
//!    ```
//!
//!    Afterwards both hold, for every key in those buckets, the greater of
//!    their two entries, and the other buckets were already equal: the
//!    replicas are equal (the property tests check exactly this). Nothing
//!    here depends on the order or the path by which entries arrived, and
//!    there are no per-origin watermarks, so relayed, duplicated or
//!    reordered deltas cannot make it skip anything. The cost is the
//!    entries of each differing bucket, not just the differing keys: with
//!    [`Digest::DEFAULT_BUCKETS`] buckets a single differing key ships
//!    1/256 of the map. Bigger maps can use up to [`Digest::MAX_BUCKETS`];
//!    a finer two-level exchange (per-key stamps for a differing bucket)
//!    is the next step if that is ever too much.
//!    [`Delta::split`] cuts a large repair batch to frame-sized pieces.
//!
//! # Clocks
//!
//! Writes are stamped by the replica's [`Hlc`] with the wall clock the
//! driver passes (`wall_ms`, milliseconds since the Unix epoch). Merging
//! observes every accepted stamp, so a write made after seeing a value
//! always beats it. A remote stamp further ahead of our wall clock than
//! [`MapConfig::max_clock_skew_ms`] is not merged (it is reported, and
//! accepted by a later exchange once our clock is within the bound), so a
//! node with a wrong clock cannot make its writes win for long.
//!
//! A driver that restarts a replica should, before any local write, merge
//! the state it persisted or received, so that its clock starts above its
//! own earlier writes even if the wall clock went back.
//!
//! # Tombstones
//!
//! A delete leaves a tombstone: it is what makes a delete beat an older put
//! that is still travelling. Tombstones are counted
//! ([`LwwMap::tombstones`]) and never collected: dropping one is safe only
//! once every replica has seen it (causal stability), which needs a
//! membership-wide acknowledgement this core does not track.

mod codec;
mod delta;
mod error;
mod hlc;
mod map;
mod sync;

pub use delta::{Change, Delta, DeltaEntry, Stamp};
pub use error::{BucketCountError, CodecError, MapError};
pub use hlc::{ClockError, Hlc, Timestamp};
pub use map::{EntryRef, LwwMap, MapConfig, MergeReport, SkippedEntry, Update};
pub use sync::{Buckets, Digest};

#[cfg(test)]
mod tests;
