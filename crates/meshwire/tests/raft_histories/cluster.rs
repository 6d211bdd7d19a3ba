//! Three members on disk, the simulated network between them, and what
//! the nemesis does to them (cut links, crash, restart).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meshwire::state::raft::sim_network::SimNetwork;
use meshwire::state::raft::{
    open, raft_config, KvReader, Member, RaftNodeId, StoreConfig, TypeConfig,
};
use openraft::error::ForwardToLeader;
use openraft::{Raft, ServerState};
use tempfile::TempDir;
use tokio::time::Instant;

/// Errors of the harness itself (not violations), as text for the report.
pub(crate) type TestResult<T> = Result<T, String>;

/// A bound on waits that only a bug can make long (startup, shutdown).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The members' Raft ids.
pub(crate) const MEMBERS: [RaftNodeId; 3] = [1, 2, 3];

/// Raft timing shortened about four times from [`raft_config`], so that
/// a partition of half a second sees a new leader (a follower waits the
/// leader lease, `election_timeout_max`, plus an election timeout before
/// it campaigns: 300–400 ms here). Snapshots are small, so that restarts
/// load one and lagging members are sent one.
fn scenario_config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 30,
        election_timeout_min: 100,
        election_timeout_max: 200,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50),
        max_in_snapshot_log_to_keep: 10,
        ..raft_config()
    }
}

/// One running incarnation of a member: a crash ends it, a restart makes a
/// new one from the same directory.
#[derive(Clone)]
pub(crate) struct Incarnation {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) reader: KvReader,
}

/// Three members on disk and the simulated network between them.
pub(crate) struct Cluster {
    pub(crate) network: SimNetwork,
    config: Arc<openraft::Config>,
    dirs: BTreeMap<RaftNodeId, TempDir>,
    up: Mutex<BTreeMap<RaftNodeId, Incarnation>>,
    /// The links the nemesis cut, mirrored here because forwarding a
    /// client request to the leader crosses the same network (the mesh)
    /// and must not cross a partition either.
    cut: Mutex<BTreeSet<(RaftNodeId, RaftNodeId)>>,
    /// Requests a member forwarded to the leader.
    forwarded: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn link(a: RaftNodeId, b: RaftNodeId) -> (RaftNodeId, RaftNodeId) {
    (a.min(b), a.max(b))
}

impl Cluster {
    /// Starts members 1–3 and has member 1 make them one group.
    pub(crate) async fn start(seed: u64) -> TestResult<Arc<Cluster>> {
        let config = scenario_config().validate().map_err(|e| e.to_string())?;
        let mut dirs = BTreeMap::new();
        for id in MEMBERS {
            dirs.insert(id, tempfile::tempdir().map_err(|e| e.to_string())?);
        }
        let cluster = Arc::new(Cluster {
            network: SimNetwork::new(seed),
            config: Arc::new(config),
            dirs,
            up: Mutex::new(BTreeMap::new()),
            cut: Mutex::new(BTreeSet::new()),
            forwarded: AtomicU64::new(0),
        });
        for id in MEMBERS {
            cluster.boot(id).await?;
        }
        let all: BTreeMap<RaftNodeId, Member> = MEMBERS
            .iter()
            .map(|&id| {
                let member = Member {
                    node: format!("node-{id}"),
                    addr: format!("mem:node-{id}"),
                };
                (id, member)
            })
            .collect();
        let first = cluster.member(1).ok_or("member 1 is not up")?;
        first
            .raft
            .initialize(all)
            .await
            .map_err(|e| format!("initialising the group: {e}"))?;
        Ok(cluster)
    }

    /// Opens member `id`'s directory, starts Raft on it and puts it on the
    /// network.
    pub(crate) async fn boot(&self, id: RaftNodeId) -> TestResult<()> {
        let dir = self.dirs.get(&id).ok_or("no such member")?.path();
        let (log, state_machine, reader) = open(dir, StoreConfig::default())
            .await
            .map_err(|e| format!("opening member {id}'s store: {e}"))?;
        let raft = Raft::new(
            id,
            Arc::clone(&self.config),
            self.network.factory(id),
            log,
            state_machine,
        )
        .await
        .map_err(|e| format!("starting member {id}: {e}"))?;
        self.network.add(id, raft.clone());
        lock(&self.up).insert(id, Incarnation { raft, reader });
        Ok(())
    }

    /// Member `id`'s current incarnation, if it is up.
    pub(crate) fn member(&self, id: RaftNodeId) -> Option<Incarnation> {
        lock(&self.up).get(&id).cloned()
    }

    /// The members that are up.
    pub(crate) fn up_ids(&self) -> Vec<RaftNodeId> {
        lock(&self.up).keys().copied().collect()
    }

    /// The member that leads in the highest term, as the members see it.
    pub(crate) fn leader(&self) -> Option<RaftNodeId> {
        lock(&self.up)
            .iter()
            .filter_map(|(id, member)| {
                let metrics = member.raft.metrics().borrow().clone();
                (metrics.state == ServerState::Leader).then_some((metrics.current_term, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Waits (bounded) until some member leads.
    pub(crate) async fn await_leader(&self, within: Duration) -> Option<RaftNodeId> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            let any = self.up_ids().first().and_then(|&id| self.member(id))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Any change of a member's metrics may be the election result;
            // one member's changes are a fine enough tick.
            let mut metrics = any.raft.metrics();
            let tick = left.min(Duration::from_millis(50));
            let _ = tokio::time::timeout(tick, metrics.changed()).await;
        }
    }

    /// A crash as the others see it: off the network, Raft stopped, every
    /// in-memory state gone. The directory stays.
    pub(crate) async fn crash(&self, id: RaftNodeId) -> TestResult<()> {
        let Some(member) = lock(&self.up).remove(&id) else {
            return Ok(());
        };
        self.network.remove(id);
        member
            .raft
            .shutdown()
            .await
            .map_err(|e| format!("member {id}'s Raft task failed: {e}"))?;
        // openraft does not wait for its state-machine task; the store's
        // `applied` sender closes when that task has dropped it. Reopening
        // before would let two incarnations touch one directory, which a
        // real crash never does.
        let mut applied = member.reader.applied();
        tokio::time::timeout(WAIT, async { while applied.changed().await.is_ok() {} })
            .await
            .map_err(|_| format!("member {id}'s state machine still open {WAIT:?} after shutdown"))
    }

    /// Cuts `id` off from both others.
    pub(crate) fn isolate(&self, id: RaftNodeId) {
        self.network.isolate(id);
        let mut cut = lock(&self.cut);
        for other in MEMBERS.iter().filter(|&&o| o != id) {
            cut.insert(link(id, *other));
        }
    }

    /// Cuts the link between `a` and `b` only.
    pub(crate) fn cut_link(&self, a: RaftNodeId, b: RaftNodeId) {
        self.network.cut(a, b);
        lock(&self.cut).insert(link(a, b));
    }

    /// Heals every cut link except those of `keep`, which stays isolated.
    pub(crate) fn heal_except(&self, keep: Option<RaftNodeId>) {
        lock(&self.cut).retain(|&(a, b)| {
            let kept = keep.is_some_and(|k| k == a || k == b);
            if !kept {
                self.network.heal(a, b);
            }
            kept
        });
    }

    /// Where member `from` forwards a request that `to` says belongs to
    /// the leader: nowhere if no leader is known, it is `from` itself, it
    /// is down, or a partition lies between them (the mesh would answer
    /// "no responders", and nothing was sent).
    pub(crate) fn forward_target(
        &self,
        from: RaftNodeId,
        to: &ForwardToLeader<RaftNodeId, Member>,
    ) -> Option<Incarnation> {
        let leader = to.leader_id.filter(|&l| l != from)?;
        if lock(&self.cut).contains(&link(from, leader)) {
            return None;
        }
        let target = self.member(leader)?;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        Some(target)
    }

    /// How many requests members forwarded to the leader.
    pub(crate) fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// How many members that are up hold a snapshot (they built one, or
    /// were sent one, or loaded one at restart).
    pub(crate) fn with_snapshot(&self) -> u64 {
        let up = lock(&self.up);
        let holding = up
            .values()
            .filter(|m| m.raft.metrics().borrow().snapshot.is_some());
        holding.count() as u64
    }

    /// Stops every member.
    pub(crate) async fn shutdown(&self) -> TestResult<()> {
        for id in MEMBERS {
            self.crash(id).await?;
        }
        Ok(())
    }
}
