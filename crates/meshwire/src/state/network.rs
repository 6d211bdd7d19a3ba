//! Raft's network over the mesh: each member answers Raft's RPCs on its
//! own subject (`_RAFT.<raft id>`), and a member calls another with a
//! meshwire request, so Raft traffic rides the same encrypted, mutually
//! authenticated links, routing and reconnection as everything else.

use super::raft::{Member, RaftNodeId, TypeConfig};
use super::wire::{self, RaftRpc, RaftRpcReply};
use crate::{Error, Node};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::time::Duration;

/// Makes a [`MeshLink`] per member Raft talks to.
pub(crate) struct MeshNetwork {
    pub(crate) node: Node,
}

impl RaftNetworkFactory<TypeConfig> for MeshNetwork {
    type Network = MeshLink;

    async fn new_client(&mut self, target: RaftNodeId, _member: &Member) -> MeshLink {
        MeshLink {
            node: self.node.clone(),
            target,
            subject: wire::raft_subject(target),
        }
    }
}

/// Raft's view of one other member.
pub(crate) struct MeshLink {
    node: Node,
    target: RaftNodeId,
    subject: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftNodeId, Member, RaftError<RaftNodeId, E>>>;

/// The mesh's limit and the encoded size of an AppendEntries differ by the
/// envelope; leave room for it.
const ENVELOPE_ROOM: usize = 4 * 1024;

impl MeshLink {
    /// Sends one encoded RPC and returns the reply, mapping mesh failures onto what
    /// Raft should do about them.
    async fn call<E: std::error::Error>(
        &self,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<RaftRpcReply, RPCError<RaftNodeId, Member, RaftError<RaftNodeId, E>>> {
        let reply = self
            .node
            .request(&self.subject, bytes)
            .timeout(ttl)
            .await
            .map_err(|e| match e {
                // Nobody serves the subject (down, or not yet up), or no
                // answer: back off before the next try.
                Error::NoResponders { .. } | Error::Timeout(_) | Error::Closed => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        wire::decode::<RaftRpcReply>(reply.payload()).map_err(|reason| {
            RPCError::Network(NetworkError::new(&std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "malformed Raft reply from member {:016x}: {reason}",
                    self.target
                ),
            )))
        })
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: RaftRpcReply,
    ) -> RPCError<RaftNodeId, Member, RaftError<RaftNodeId, E>> {
        let what = match reply {
            RaftRpcReply::Malformed(reason) => format!("it could not decode our RPC: {reason}"),
            other => format!("it answered another RPC: {other:?}"),
        };
        RPCError::Network(NetworkError::new(&std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("member {:016x}: {what}", self.target),
        )))
    }
}

impl RaftNetwork<TypeConfig> for MeshLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        let entries = rpc.entries.len() as u64;
        let bytes = wire::encode(&RaftRpc::Append(rpc));
        // A batch larger than one mesh message: ask Raft for a smaller one
        // (it halves until one entry, and one entry always fits because
        // values are limited well below the payload limit).
        if bytes.len() + ENVELOPE_ROOM > self.node.max_payload() && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
            ));
        }
        match self.call(bytes, option.hard_ttl()).await? {
            RaftRpcReply::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        match self
            .call(wire::encode(&RaftRpc::Snapshot(rpc)), option.hard_ttl())
            .await?
        {
            RaftRpcReply::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>> {
        match self
            .call(wire::encode(&RaftRpc::Vote(rpc)), option.hard_ttl())
            .await?
        {
            RaftRpcReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}
