//! Shared state: replicated maps that nodes read, write and watch, with
//! the consistency chosen per map.
//!
//! ```text
//!            Node::shared_map::<K, V>(name, consistency) ──► SharedMap<K, V>
//!                       │                                     get put delete
//!        ┌──────────────┴───────────────┐                     compare_and_swap
//!  Linearizable                      Eventual                 snapshot watch
//!  GroupClient ── _KV.req ──► Raft group      Replica on every node (LWW map
//!  (any node)    (one member;  (openraft on   under hybrid logical clocks):
//!                 forwards to   routers,      writes local, deltas gossiped
//!                 the leader)   log on disk)  on _CRDT.<map>, anti-entropy
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`raft`] | Raft storage (log and snapshots on disk, fsynced) and the key-value state machine |
//! | `group` | a router's seat in the Raft group: bootstrap, join, serving requests, read index |
//! | `network` | Raft's RPCs over the mesh |
//! | `linearizable` | the client side: any node's requests to the group |
//! | `eventual` | CRDT replicas: delta gossip and anti-entropy over the mesh |
//! | `map`, `watch`, `codec` | the typed [`SharedMap`] handle, [`Watch`] streams, JSON keys and values |
//!
//! What each mode promises, and under which failures, is spelled out in
//! `docs/CONSISTENCY.md`.

mod codec;
mod error;
pub(crate) mod eventual;
pub(crate) mod group;
mod linearizable;
pub(crate) mod map;
mod network;
pub mod raft;
mod watch;
pub(crate) mod wire;

pub use error::MapError;
pub use map::{Cas, Change, Deleted, MapSnapshot, SharedMap, Versioned, Watch};
pub use wire::GroupInfo;

pub(crate) use linearizable::GroupClient;

/// Stored keys under a prefix with their JSON values and versions, and the
/// map's version when they were read: what both modes return to `snapshot`.
pub(crate) type RawListing = (Vec<(String, Vec<u8>, u64)>, u64);

/// The consistency of a shared map, chosen when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Consistency {
    /// Every operation appears to take effect at one instant between its
    /// call and its return, in one order all nodes agree on (Raft on the
    /// routers started with `raft`). Needs a majority of the group.
    Linearizable,
    /// Every node keeps a replica and writes locally, even with every
    /// other node down; replicas converge once they can talk
    /// (last-writer-wins under hybrid logical clocks).
    Eventual,
}
