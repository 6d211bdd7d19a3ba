//! An in-process Raft network for tests: RPCs are direct calls into the
//! other members' [`Raft`] handles, through a fault model driven by a
//! seeded RNG (dropped requests, dropped replies, delays, partitions).
//!
//! Not part of the public API (hidden from the docs); it is `pub` so that
//! integration tests under `crates/meshwire/tests/` can build clusters.
//! The RNG makes fault *decisions* reproducible from the seed; the order in
//! which tokio runs the members' tasks is not, so print the seed on
//! failure and replay it to make a rare failure likely, not certain.
//!
//! ```text
//! Raft(1) ── SimNetworkFactory{from: 1} ── SimConnection{1→2} ──► faults? ──► Raft(2).append_entries(..)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftNetwork, RaftNetworkFactory};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::types::{Member, RaftNodeId, TypeConfig};

/// Why the simulated network did not deliver (the source of the
/// `Unreachable`/`NetworkError` openraft sees).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimFault {
    /// The two members are partitioned from each other.
    #[error("simulated partition between {from} and {to}")]
    Partitioned {
        /// The sender.
        from: RaftNodeId,
        /// The receiver.
        to: RaftNodeId,
    },
    /// The receiver is not running (never added, or removed).
    #[error("member {0} is down")]
    Down(RaftNodeId),
    /// The request was dropped on the way.
    #[error("simulated loss of the request")]
    RequestLost,
    /// The request was delivered and handled, but its reply was lost.
    #[error("simulated loss of the reply")]
    ReplyLost,
}

/// Counts of what the network did, to check that a test's faults happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// RPCs handled and answered.
    pub delivered: u64,
    /// Requests or replies dropped by the loss model.
    pub lost: u64,
    /// RPCs refused because of a partition or a member being down.
    pub refused: u64,
}

#[derive(Debug)]
struct Faults {
    rng: SmallRng,
    /// Unordered pairs (smaller id first) that cannot talk.
    cut: BTreeSet<(RaftNodeId, RaftNodeId)>,
    request_loss: f64,
    reply_loss: f64,
    delay: (Duration, Duration),
}

/// What the fault model decided for one RPC.
struct Plan {
    delay: Duration,
    lose_request: bool,
    lose_reply: bool,
}

struct Inner {
    seed: u64,
    members: Mutex<BTreeMap<RaftNodeId, Raft<TypeConfig>>>,
    faults: Mutex<Faults>,
    delivered: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
}

/// The simulated network shared by every member of a test cluster. Cheap to
/// clone; all clones are the same network.
#[derive(Clone)]
pub struct SimNetwork {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork")
            .field("seed", &self.inner.seed)
            .field(
                "members",
                &lock(&self.inner.members).keys().collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pair(a: RaftNodeId, b: RaftNodeId) -> (RaftNodeId, RaftNodeId) {
    (a.min(b), a.max(b))
}

impl SimNetwork {
    /// A network without faults whose random decisions derive from `seed`.
    pub fn new(seed: u64) -> SimNetwork {
        let faults = Faults {
            rng: SmallRng::seed_from_u64(seed),
            cut: BTreeSet::new(),
            request_loss: 0.0,
            reply_loss: 0.0,
            delay: (Duration::ZERO, Duration::ZERO),
        };
        SimNetwork {
            inner: Arc::new(Inner {
                seed,
                members: Mutex::new(BTreeMap::new()),
                faults: Mutex::new(faults),
                delivered: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The seed this network was made with (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The factory to give member `from`'s `Raft::new`.
    pub fn factory(&self, from: RaftNodeId) -> SimNetworkFactory {
        SimNetworkFactory {
            from,
            network: self.clone(),
        }
    }

    /// Makes member `id` reachable through `raft` (after `Raft::new`, or
    /// again after a restart).
    pub fn add(&self, id: RaftNodeId, raft: Raft<TypeConfig>) {
        lock(&self.inner.members).insert(id, raft);
    }

    /// Takes member `id` off the network (it is down until added again)
    /// and returns its handle, e.g. to shut it down.
    pub fn remove(&self, id: RaftNodeId) -> Option<Raft<TypeConfig>> {
        lock(&self.inner.members).remove(&id)
    }

    /// Member `id`'s handle, if it is on the network.
    pub fn member(&self, id: RaftNodeId) -> Option<Raft<TypeConfig>> {
        lock(&self.inner.members).get(&id).cloned()
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: RaftNodeId, b: RaftNodeId) {
        lock(&self.inner.faults).cut.insert(pair(a, b));
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: RaftNodeId, b: RaftNodeId) {
        lock(&self.inner.faults).cut.remove(&pair(a, b));
    }

    /// Cuts every link between `side` and the members on the network that
    /// are not in it.
    pub fn partition(&self, side: &[RaftNodeId]) {
        let others: Vec<RaftNodeId> = lock(&self.inner.members)
            .keys()
            .copied()
            .filter(|id| !side.contains(id))
            .collect();
        let mut faults = lock(&self.inner.faults);
        for &a in side {
            for &b in &others {
                faults.cut.insert(pair(a, b));
            }
        }
    }

    /// Cuts `id` off from every other member.
    pub fn isolate(&self, id: RaftNodeId) {
        self.partition(&[id]);
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        lock(&self.inner.faults).cut.clear();
    }

    /// Loses each request with probability `request` and each reply (after
    /// the receiver handled the request) with probability `reply`.
    pub fn set_loss(&self, request: f64, reply: f64) {
        let mut faults = lock(&self.inner.faults);
        faults.request_loss = request.clamp(0.0, 1.0);
        faults.reply_loss = reply.clamp(0.0, 1.0);
    }

    /// Delays each RPC by a duration drawn uniformly from `min..=max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        lock(&self.inner.faults).delay = (min, max.max(min));
    }

    /// What the network has done so far.
    pub fn stats(&self) -> SimStats {
        SimStats {
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            lost: self.inner.lost.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
        }
    }

    /// Decides one RPC's fate, or refuses it if the link is cut.
    fn plan(&self, from: RaftNodeId, to: RaftNodeId) -> Result<Plan, SimFault> {
        let mut faults = lock(&self.inner.faults);
        if faults.cut.contains(&pair(from, to)) {
            return Err(SimFault::Partitioned { from, to });
        }
        let (min, max) = faults.delay;
        let (request_loss, reply_loss) = (faults.request_loss, faults.reply_loss);
        let rng = &mut faults.rng;
        // Draw every number every time, so that one decision does not shift
        // the stream of the next ones depending on the settings.
        let delay_nanos = rng.random_range(min.as_nanos()..=max.as_nanos());
        let lose_request = rng.random_bool(request_loss);
        let lose_reply = rng.random_bool(reply_loss);
        let delay = Duration::from_nanos(u64::try_from(delay_nanos).unwrap_or(u64::MAX));
        Ok(Plan {
            delay,
            lose_request,
            lose_reply,
        })
    }

    /// Carries one RPC from `from` to `to` through the fault model.
    async fn deliver<R, E, Fut>(
        &self,
        from: RaftNodeId,
        to: RaftNodeId,
        call: impl FnOnce(Raft<TypeConfig>) -> Fut,
    ) -> Result<R, RPCError<RaftNodeId, Member, E>>
    where
        Fut: Future<Output = Result<R, E>>,
        E: std::error::Error,
    {
        let refuse = |fault: SimFault| {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            RPCError::Unreachable(Unreachable::new(&fault))
        };
        let plan = self.plan(from, to).map_err(refuse)?;
        if !plan.delay.is_zero() {
            // Simulated latency, not synchronisation.
            tokio::time::sleep(plan.delay).await;
        }
        if plan.lose_request {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
            return Err(RPCError::Network(NetworkError::new(&SimFault::RequestLost)));
        }
        let raft = self.member(to).ok_or_else(|| refuse(SimFault::Down(to)))?;
        let reply = call(raft).await;
        if plan.lose_reply {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
            return Err(RPCError::Network(NetworkError::new(&SimFault::ReplyLost)));
        }
        self.inner.delivered.fetch_add(1, Ordering::Relaxed);
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)))
    }
}

/// Makes [`SimConnection`]s for one member.
#[derive(Clone, Debug)]
pub struct SimNetworkFactory {
    from: RaftNodeId,
    network: SimNetwork,
}

impl RaftNetworkFactory<TypeConfig> for SimNetworkFactory {
    type Network = SimConnection;

    async fn new_client(&mut self, target: RaftNodeId, _node: &Member) -> SimConnection {
        SimConnection {
            from: self.from,
            to: target,
            network: self.network.clone(),
        }
    }
}

/// One member's connection to another over the simulated network.
#[derive(Clone, Debug)]
pub struct SimConnection {
    from: RaftNodeId,
    to: RaftNodeId,
    network: SimNetwork,
}

impl RaftNetwork<TypeConfig> for SimConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, Member, RaftError<RaftNodeId>>,
    > {
        self.network
            .deliver(self.from, self.to, |raft| async move {
                raft.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, Member, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        self.network
            .deliver(self.from, self.to, |raft| async move {
                raft.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, Member, RaftError<RaftNodeId>>> {
        self.network
            .deliver(
                self.from,
                self.to,
                |raft| async move { raft.vote(rpc).await },
            )
            .await
    }
}
