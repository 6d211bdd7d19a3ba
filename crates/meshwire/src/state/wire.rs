//! The messages of linearizable maps on the mesh: what clients ask the
//! Raft group, and what members send each other.
//!
//! ```text
//! any node ── _KV.req (queue group "raft": one member) ── KvEnvelope ──► member
//! member   ── _KV.node.<raft id> (the leader, one hop) ── KvEnvelope ──► leader
//! member   ── _RAFT.<raft id> ── RaftRpc (append, vote, snapshot) ─────► member
//! ```
//!
//! Everything is postcard-encoded serde. A request a member cannot decode
//! gets a `KvReply::Failed(Failure::Malformed)`; nothing is applied.

use super::raft::{Change, Command, CommandResult, Member, RaftNodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

/// The subject every member serves in the queue group [`GROUP`].
pub(crate) const REQUESTS: &str = "_KV.req";
/// The queue group of [`REQUESTS`].
pub(crate) const GROUP: &str = "raft";

/// The subject on which one member takes requests forwarded to it.
pub(crate) fn member_subject(id: RaftNodeId) -> String {
    format!("_KV.node.{id:016x}")
}

/// The subject on which one member takes Raft's own RPCs.
pub(crate) fn raft_subject(id: RaftNodeId) -> String {
    format!("_RAFT.{id:016x}")
}

/// A request and how many members it has been through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KvEnvelope {
    /// 0 from a client; a member that forwards to the leader sets 1, and a
    /// forwarded request is never forwarded again (no loops on a stale
    /// idea of who leads).
    pub(crate) hops: u8,
    pub(crate) request: KvRequest,
}

/// What a client asks of the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum KvRequest {
    /// Propose a command (put, delete, cas, create map) through Raft.
    Write(Command),
    /// A linearizable read of one key.
    Get { map: String, key: String },
    /// A linearizable snapshot of the keys under a prefix.
    List { map: String, prefix: String },
    /// Changes under `prefix` with versions above `after`, waiting up to
    /// `wait_ms` for the first one (a long poll).
    Watch {
        map: String,
        prefix: String,
        after: u64,
        wait_ms: u32,
        max: u32,
    },
    /// Add the sender as a voting member.
    Join { id: RaftNodeId, member: Member },
    /// Remove a member.
    Remove { id: RaftNodeId },
    /// Who is in the group, and who leads.
    Members,
}

/// What a member answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum KvReply {
    Written(CommandResult),
    Value(Option<(Vec<u8>, u64)>),
    Listed {
        entries: Vec<(String, Vec<u8>, u64)>,
        version: u64,
    },
    Changes {
        changes: Vec<Change>,
        /// The member's applied index when it looked: resume after this.
        upto: u64,
    },
    Members(GroupInfo),
    Done,
    Failed(Failure),
}

/// The group as one member sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// The member that answered.
    pub answered_by: RaftNodeId,
    /// The current leader, if known.
    pub leader: Option<RaftNodeId>,
    /// The current term.
    pub term: u64,
    /// The last log index applied by the member that answered.
    pub applied: u64,
    /// Voting members.
    pub voters: Vec<(RaftNodeId, Member)>,
    /// Members that receive the log but do not vote.
    pub learners: Vec<(RaftNodeId, Member)>,
}

/// Why a member refused or failed a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Failure {
    UnknownMap(String),
    Invalid(String),
    Compacted {
        oldest: u64,
    },
    /// No leader, or the leader could not be reached: nothing was written.
    NoLeader(String),
    /// The request's bytes did not decode.
    Malformed(String),
    /// Raft or storage failed; the outcome of a write is unknown.
    Internal(String),
}

/// Raft's own RPCs between members.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answers to [`RaftRpc`], errors included (Raft's errors are data).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftRpcReply {
    Append(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Snapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    /// The bytes did not decode as a [`RaftRpc`].
    Malformed(String),
}

/// Encodes any message of this module.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // postcard only fails on types serde cannot describe (maps with
    // non-string keys are fine); ours are all plain data, so an error here
    // is a bug, and an empty payload makes the peer answer Malformed rather
    // than crash anything.
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Decodes a message, with the reason when the bytes are not one.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}
