//! Shared state between nodes.
//!
//! | module | consistency | what |
//! |---|---|---|
//! | [`raft`] | linearizable | one Raft group on the routers holding every linearizable map: its storage (log, snapshots), the replicated key-value state machine and its read handle |
pub mod raft;
