//! A router's membership in the Raft group that holds linearizable maps.
//!
//! A router started with `raft` opens its log and snapshots under
//! `DATA/raft`, runs an [`openraft::Raft`] whose network is the mesh
//! ([`super::network`]), and serves three subjects:
//! - `_RAFT.<id>`: Raft's own RPCs from the other members;
//! - `_KV.req`, in queue group `raft`: requests from any node (one member
//!   takes each); only once this member belongs to the group;
//! - `_KV.node.<id>`: requests another member forwards to this one because
//!   it leads.
//!
//! **Bootstrap and join.** A member started without peers initialises a
//! one-member group (once: a restart finds its log and skips this). A
//! member started with peers asks the group to add it (`Join` on `_KV.req`,
//! retried until it is in); the leader adds it as a learner, waits until it
//! has caught up, then makes it a voter. So three `meshwire node --raft`
//! commands, the later two with `--peer`, form a three-member group.
//!
//! **Reads** are linearizable by *read index* (openraft's
//! `ensure_linearizable`): the leader confirms with a quorum that it still
//! leads, waits until its state machine has applied everything committed
//! at that moment, then reads. No clock assumptions (no leases).

use super::network::MeshNetwork;
use super::raft::{self, KvReader, Member, RaftNodeId, ReadError, TypeConfig};
use super::wire::{
    self, Failure, GroupInfo, KvEnvelope, KvReply, KvRequest, RaftRpc, RaftRpcReply,
};
use crate::{Error, Message, Node, NodeId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, Raft};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a member waits for the leader it forwards to: shorter than a
/// client's attempt, so that a leader that died gets the client a verdict
/// (and a retry) rather than a silence.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a joining member waits for each `Join` (the leader answers once
/// the newcomer has caught up with the log).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a watch long-poll is held.
const MAX_WATCH_WAIT: Duration = Duration::from_secs(10);

/// The Raft id of a meshwire node: the first 8 bytes of its NodeId (itself
/// a hash of the node's key, so ids collide with probability ~2⁻⁶⁴ per pair).
pub(crate) fn raft_id(node: NodeId) -> RaftNodeId {
    let bytes = node.as_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(id)
}

/// This router's seat in the Raft group.
pub(crate) struct RaftGroup {
    id: RaftNodeId,
    node: Node,
    raft: Raft<TypeConfig>,
    reader: KvReader,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RaftGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroup").field("id", &self.id).finish()
    }
}

impl RaftGroup {
    /// Opens the log under `dir`, starts Raft and the three services, and
    /// bootstraps or joins the group (`join`: the router was given peers).
    pub(crate) async fn start(
        node: Node,
        dir: &Path,
        addr: String,
        join: bool,
    ) -> crate::Result<Arc<Self>> {
        let id = raft_id(node.id());
        let member = Member {
            node: node.id().to_string(),
            addr,
        };
        let (log, sm, reader) = raft::open(dir, raft::StoreConfig::default())
            .await
            .map_err(|e| Error::Config(format!("Raft storage in {}: {e}", dir.display())))?;
        let config = Arc::new(
            raft::raft_config()
                .validate()
                .map_err(|e| Error::Config(format!("Raft configuration: {e}")))?,
        );
        let network = MeshNetwork { node: node.clone() };
        let raft = Raft::new(id, config, network, log, sm)
            .await
            .map_err(|e| Error::Config(format!("starting Raft: {e}")))?;
        let group = Arc::new(RaftGroup {
            id,
            node: node.clone(),
            raft,
            reader,
            tasks: Mutex::new(Vec::new()),
        });
        group.track(tokio::spawn(log_leaders(group.raft.metrics())));
        group
            .serve(&wire::raft_subject(id), None, Self::on_raft)
            .await?;
        group
            .serve(&wire::member_subject(id), None, Self::on_kv)
            .await?;
        let initialized = group.raft.is_initialized().await.unwrap_or(false);
        if initialized {
            tracing::info!(raft_id = %format!("{id:016x}"), "rejoined the Raft group from the log in {}", dir.display());
            group.serve_clients().await?;
        } else if !join {
            let members = BTreeMap::from([(id, member)]);
            if let Err(e) = group.raft.initialize(members).await {
                return Err(Error::Config(format!("bootstrapping the Raft group: {e}")));
            }
            tracing::info!(raft_id = %format!("{id:016x}"), "bootstrapped a new Raft group");
            group.serve_clients().await?;
        } else {
            let joiner = group.clone();
            let task = tokio::spawn(async move { joiner.join(member).await });
            group.track(task);
        }
        Ok(group)
    }

    /// Stops Raft and the services (the log stays on disk).
    pub(crate) async fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("Raft did not stop cleanly: {e}");
        }
    }

    fn track(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Serves `_KV.req` with the other members, once this one is in.
    async fn serve_clients(self: &Arc<Self>) -> crate::Result<()> {
        self.serve(wire::REQUESTS, Some(wire::GROUP), Self::on_kv)
            .await
    }

    /// Answers every request on `subject` with `handler`, each in its own
    /// task (a slow linearizable read must not hold up a heartbeat).
    async fn serve<F, Fut>(
        self: &Arc<Self>,
        subject: &str,
        group: Option<&str>,
        handler: F,
    ) -> crate::Result<()>
    where
        F: Fn(Arc<Self>, Message) -> Fut + Send + Sync + Copy + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let mut sub = match group {
            Some(g) => self.node.subscribe(subject).group(g).await?,
            None => self.node.subscribe(subject).await?,
        };
        let me = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.recv().await {
                let Some(group) = me.upgrade() else { break };
                tokio::spawn(async move {
                    let node = group.node.clone();
                    let reply = handler(group, msg.clone()).await;
                    if let Err(e) = node.respond(&msg, reply).await {
                        tracing::debug!("could not answer a Raft group request: {e}");
                    }
                });
            }
        });
        self.track(task);
        Ok(())
    }

    async fn on_raft(self: Arc<Self>, msg: Message) -> Vec<u8> {
        let reply = match wire::decode::<RaftRpc>(msg.payload()) {
            Ok(RaftRpc::Append(rpc)) => RaftRpcReply::Append(self.raft.append_entries(rpc).await),
            Ok(RaftRpc::Vote(rpc)) => RaftRpcReply::Vote(self.raft.vote(rpc).await),
            Ok(RaftRpc::Snapshot(rpc)) => {
                RaftRpcReply::Snapshot(self.raft.install_snapshot(rpc).await)
            }
            Err(reason) => {
                tracing::warn!("malformed Raft RPC on {}: {reason}", msg.subject());
                RaftRpcReply::Malformed(reason)
            }
        };
        wire::encode(&reply)
    }

    async fn on_kv(self: Arc<Self>, msg: Message) -> Vec<u8> {
        let reply = match wire::decode::<KvEnvelope>(msg.payload()) {
            Ok(env) => self.handle(env).await,
            Err(reason) => KvReply::Failed(Failure::Malformed(reason)),
        };
        wire::encode(&reply)
    }

    async fn handle(&self, env: KvEnvelope) -> KvReply {
        let hops = env.hops;
        let request = env.request;
        match &request {
            KvRequest::Write(cmd) => match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => KvReply::Written(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                    self.forward(hops, request, to).await
                }
                Err(e) => KvReply::Failed(Failure::Internal(e.to_string())),
            },
            KvRequest::Get { map, key } => match self.read_barrier().await {
                Ok(()) => match self.reader.get(map, key) {
                    Ok(v) => KvReply::Value(v),
                    Err(e) => read_failure(e),
                },
                Err(Barrier::Forward(to)) => self.forward(hops, request, to).await,
                Err(Barrier::Failed(f)) => KvReply::Failed(f),
            },
            KvRequest::List { map, prefix } => match self.read_barrier().await {
                Ok(()) => match self.reader.list(map, prefix) {
                    Ok((entries, version)) => KvReply::Listed { entries, version },
                    Err(e) => read_failure(e),
                },
                Err(Barrier::Forward(to)) => self.forward(hops, request, to).await,
                Err(Barrier::Failed(f)) => KvReply::Failed(f),
            },
            KvRequest::Watch {
                map,
                prefix,
                after,
                wait_ms,
                max,
            } => {
                let wait = Duration::from_millis(u64::from(*wait_ms)).min(MAX_WATCH_WAIT);
                self.watch(map, prefix, *after, wait, (*max).max(1) as usize)
                    .await
            }
            KvRequest::Join { id, member } => self.add_member(hops, *id, member.clone()).await,
            KvRequest::Remove { id } => self.remove_member(hops, *id).await,
            KvRequest::Members => KvReply::Members(self.info()),
        }
    }

    /// Read index: confirm leadership with a quorum and wait until what
    /// was committed then is applied here.
    async fn read_barrier(&self) -> Result<(), Barrier> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Err(Barrier::Forward(to))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(Barrier::Failed(Failure::NoLeader(e.to_string())))
            }
            Err(e) => Err(Barrier::Failed(Failure::Internal(e.to_string()))),
        }
    }

    /// Sends a request on to the leader, once.
    async fn forward(
        &self,
        hops: u8,
        request: KvRequest,
        to: ForwardToLeader<RaftNodeId, Member>,
    ) -> KvReply {
        let Some(leader) = to.leader_id.filter(|l| *l != self.id) else {
            return KvReply::Failed(Failure::NoLeader("an election is in progress".into()));
        };
        if hops > 0 {
            return KvReply::Failed(Failure::NoLeader(format!(
                "leadership moved while the request was forwarded (now {leader:016x})"
            )));
        }
        let write = matches!(request, KvRequest::Write(_));
        let env = KvEnvelope { hops: 1, request };
        match self
            .node
            .request(wire::member_subject(leader), wire::encode(&env))
            .timeout(FORWARD_TIMEOUT)
            .await
        {
            Ok(reply) => wire::decode::<KvReply>(reply.payload()).unwrap_or_else(|e| {
                KvReply::Failed(Failure::Internal(format!("leader's reply: {e}")))
            }),
            // Nobody took it: nothing was applied.
            Err(Error::NoResponders { .. }) => KvReply::Failed(Failure::NoLeader(format!(
                "the leader {leader:016x} is not reachable from here"
            ))),
            Err(e) if write => KvReply::Failed(Failure::Internal(format!(
                "forwarding to the leader {leader:016x}: {e}"
            ))),
            Err(e) => KvReply::Failed(Failure::NoLeader(format!(
                "forwarding to the leader {leader:016x}: {e}"
            ))),
        }
    }

    /// A long poll for changes after `after`.
    async fn watch(
        &self,
        map: &str,
        prefix: &str,
        after: u64,
        wait: Duration,
        max: usize,
    ) -> KvReply {
        let mut applied = self.reader.applied();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Read the applied index before scanning: anything applied in
            // between shows up in the scan with a higher version, so the
            // caller's next `after` (the larger of the two) misses nothing.
            let upto = *applied.borrow_and_update();
            if upto >= after {
                match self.reader.changes_after(map, prefix, after, max) {
                    Ok(changes) if !changes.is_empty() => {
                        let upto = if changes.len() >= max {
                            changes.last().map_or(upto, |c| c.version)
                        } else {
                            upto.max(changes.last().map_or(0, |c| c.version))
                        };
                        return KvReply::Changes { changes, upto };
                    }
                    Ok(_) => {}
                    Err(e) => return read_failure(e),
                }
            }
            let woke = tokio::time::timeout_at(deadline, applied.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                return KvReply::Changes {
                    changes: Vec::new(),
                    upto: upto.max(after),
                };
            }
        }
    }

    fn info(&self) -> GroupInfo {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
        let mut info = GroupInfo {
            answered_by: self.id,
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map_or(0, |l| l.index),
            voters: Vec::new(),
            learners: Vec::new(),
        };
        for (id, member) in membership.nodes() {
            if voters.contains(id) {
                info.voters.push((*id, member.clone()));
            } else {
                info.learners.push((*id, member.clone()));
            }
        }
        info
    }

    /// Adds a member: as a learner until it has the log, then as a voter.
    async fn add_member(&self, hops: u8, id: RaftNodeId, member: Member) -> KvReply {
        if self.info().voters.iter().any(|(v, _)| *v == id) {
            return KvReply::Done;
        }
        match self.raft.add_learner(id, member.clone(), true).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                return self.forward(hops, KvRequest::Join { id, member }, to).await
            }
            Err(e) => return membership_failure(e),
        }
        match self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
        {
            Ok(_) => {
                tracing::info!(member = %format!("{id:016x}"), addr = %member.addr, "added a voting member to the Raft group");
                KvReply::Done
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                self.forward(hops, KvRequest::Join { id, member }, to).await
            }
            Err(e) => membership_failure(e),
        }
    }

    /// Removes a member (voter or learner).
    async fn remove_member(&self, hops: u8, id: RaftNodeId) -> KvReply {
        let info = self.info();
        let voter = info.voters.iter().any(|(v, _)| *v == id);
        let learner = info.learners.iter().any(|(v, _)| *v == id);
        if !voter && !learner {
            return KvReply::Failed(Failure::Invalid(format!(
                "{id:016x} is not a member of the group (see `meshwire kv members`)"
            )));
        }
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match self.raft.change_membership(change, false).await {
            Ok(_) => {
                tracing::info!(member = %format!("{id:016x}"), "removed a member from the Raft group");
                KvReply::Done
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                self.forward(hops, KvRequest::Remove { id }, to).await
            }
            Err(e) => membership_failure(e),
        }
    }

    /// Asks the group to take this member in, until it has; then serves
    /// clients. Runs until done or the node stops.
    async fn join(self: Arc<Self>, member: Member) {
        let env = KvEnvelope {
            hops: 0,
            request: KvRequest::Join {
                id: self.id,
                member,
            },
        };
        let bytes = wire::encode(&env);
        let mut pause = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self
                .node
                .request(wire::REQUESTS, bytes.clone())
                .timeout(JOIN_TIMEOUT)
                .await;
            let why = match outcome {
                Ok(reply) => match wire::decode::<KvReply>(reply.payload()) {
                    Ok(KvReply::Done) => break,
                    Ok(KvReply::Failed(f)) => format!("{f:?}"),
                    Ok(other) => format!("unexpected answer {other:?}"),
                    Err(e) => format!("malformed answer: {e}"),
                },
                Err(Error::Closed) => return,
                Err(e) => e.to_string(),
            };
            // The first tries usually race the mesh forming: say nothing
            // until it has taken a while.
            if attempts % 10 == 5 {
                tracing::warn!(
                    "not yet a member of the Raft group ({why}); retrying — check that a peer \
                     runs with --raft"
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        tracing::info!(raft_id = %format!("{:016x}", self.id), "joined the Raft group");
        if let Err(e) = self.serve_clients().await {
            tracing::warn!("cannot serve map requests: {e}");
        }
    }
}

/// Logs each change of leader (openraft's own logs are turned down in the
/// CLI: they narrate every vote).
async fn log_leaders(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<RaftNodeId, Member>>,
) {
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(l) => tracing::info!(term, leader = %format!("{l:016x}"), "Raft leader"),
                None => tracing::info!(term, "Raft group has no leader (election)"),
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

enum Barrier {
    Forward(ForwardToLeader<RaftNodeId, Member>),
    Failed(Failure),
}

fn read_failure(e: ReadError) -> KvReply {
    KvReply::Failed(match e {
        ReadError::UnknownMap(map) => Failure::UnknownMap(map),
        ReadError::Compacted { oldest, .. } => Failure::Compacted { oldest },
        #[allow(unreachable_patterns)]
        other => Failure::Internal(other.to_string()),
    })
}

fn membership_failure(e: RaftError<RaftNodeId, ClientWriteError<RaftNodeId, Member>>) -> KvReply {
    match e {
        // Another change is still being committed: try again shortly.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => KvReply::Failed(
            Failure::NoLeader(format!("membership change refused for now: {e}")),
        ),
        e => KvReply::Failed(Failure::Internal(e.to_string())),
    }
}
