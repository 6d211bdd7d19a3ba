//! A three-member Raft group in one process, on the on-disk stores of
//! `meshwire::state::raft` and the simulated network: writes on the leader
//! reach every member, survive a member's restart from its directory, reach
//! a member that fell behind a purged log (by snapshot), and get through
//! message loss and delay.
//!
//! Each test prints its network seed; set `MESHWIRE_SIM_SEED` to replay
//! the same fault decisions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meshwire::state::raft::sim_network::SimNetwork;
use meshwire::state::raft::{
    open, raft_config, Command, CommandResult, KvReader, Member, RaftNodeId, StoreConfig,
    TypeConfig,
};
use openraft::{Raft, ServerState};
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Long enough for several elections on a loaded CI machine; a healthy run
/// takes a second or two.
const WAIT: Duration = Duration::from_secs(30);

/// One running member: its Raft handle and a reader of its maps.
struct Running {
    raft: Raft<TypeConfig>,
    reader: KvReader,
}

struct Cluster {
    network: SimNetwork,
    config: Arc<openraft::Config>,
    dirs: BTreeMap<RaftNodeId, TempDir>,
    members: BTreeMap<RaftNodeId, Running>,
}

fn seed() -> u64 {
    let seed = std::env::var("MESHWIRE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos() as u64)
    });
    eprintln!("simulated network seed {seed} (replay with MESHWIRE_SIM_SEED={seed})");
    seed
}

fn member(id: RaftNodeId) -> Member {
    Member {
        node: format!("node-{id}"),
        addr: format!("mem:node-{id}"),
    }
}

async fn start(
    network: &SimNetwork,
    config: &Arc<openraft::Config>,
    id: RaftNodeId,
    dir: &Path,
) -> Result<Running, Box<dyn std::error::Error>> {
    let (log, state_machine, reader) = open(dir, StoreConfig::default()).await?;
    let raft = Raft::new(
        id,
        Arc::clone(config),
        network.factory(id),
        log,
        state_machine,
    )
    .await?;
    network.add(id, raft.clone());
    Ok(Running { raft, reader })
}

impl Cluster {
    /// Starts members 1, 2 and 3 and makes them one group.
    async fn start(config: openraft::Config) -> Result<Cluster, Box<dyn std::error::Error>> {
        let network = SimNetwork::new(seed());
        let config = Arc::new(config.validate()?);
        let mut cluster = Cluster {
            network,
            config,
            dirs: BTreeMap::new(),
            members: BTreeMap::new(),
        };
        for id in 1..=3 {
            let dir = tempfile::tempdir()?;
            let running = start(&cluster.network, &cluster.config, id, dir.path()).await?;
            cluster.dirs.insert(id, dir);
            cluster.members.insert(id, running);
        }
        let all: BTreeMap<RaftNodeId, Member> = (1..=3).map(|id| (id, member(id))).collect();
        cluster.running(1)?.raft.initialize(all).await?;
        Ok(cluster)
    }

    fn running(&self, id: RaftNodeId) -> Result<&Running, String> {
        self.members
            .get(&id)
            .ok_or_else(|| format!("member {id} is not running"))
    }

    /// Waits until some running member is leader and returns its id.
    async fn leader(&self) -> Result<RaftNodeId, Box<dyn std::error::Error>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for (id, running) in &self.members {
                let metrics = running.raft.metrics().borrow().clone();
                if metrics.state == ServerState::Leader {
                    return Ok(*id);
                }
            }
            let any = self.members.values().next().ok_or("no member running")?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(format!("no leader within {WAIT:?}").into());
            }
            // Any change of any member's metrics may be the election
            // result; one member's changes are a fine enough tick.
            let mut metrics = any.raft.metrics();
            let _ =
                tokio::time::timeout(remaining.min(Duration::from_millis(200)), metrics.changed())
                    .await;
        }
    }

    /// Proposes `command` on the leader, retrying on a new leader if the
    /// leadership moved, and returns the log index and the result.
    async fn write(
        &self,
        command: Command,
    ) -> Result<(u64, CommandResult), Box<dyn std::error::Error>> {
        let mut last_error = String::new();
        for _attempt in 0..10 {
            let leader = self.leader().await?;
            match self
                .running(leader)?
                .raft
                .client_write(command.clone())
                .await
            {
                Ok(response) => return Ok((response.log_id.index, response.data)),
                // Lost its leadership on the way: try the next leader.
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(format!("no leader accepted the write: {last_error}").into())
    }

    /// Waits until member `id` has applied `index`.
    async fn applied(&self, id: RaftNodeId, index: u64) -> Result<(), Box<dyn std::error::Error>> {
        let mut applied = self.running(id)?.reader.applied();
        tokio::time::timeout(WAIT, applied.wait_for(|&a| a >= index))
            .await
            .map_err(|_| format!("member {id} did not apply index {index} within {WAIT:?}"))??;
        Ok(())
    }

    /// Stops member `id` as a crash would look to the others, keeping its
    /// directory.
    async fn stop(&mut self, id: RaftNodeId) -> TestResult {
        self.network.remove(id);
        let running = self
            .members
            .remove(&id)
            .ok_or("stopping a member that is not running")?;
        running.raft.shutdown().await?;
        Ok(())
    }

    async fn restart(&mut self, id: RaftNodeId) -> TestResult {
        let dir = self.dirs.get(&id).ok_or("no directory for that member")?;
        let running = start(&self.network, &self.config, id, dir.path()).await?;
        self.members.insert(id, running);
        Ok(())
    }

    async fn shutdown(self) -> TestResult {
        for running in self.members.values() {
            running.raft.shutdown().await?;
        }
        Ok(())
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        map: "default".into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn value(
    reader: &KvReader,
    key: &str,
) -> Result<Option<(String, u64)>, Box<dyn std::error::Error>> {
    let found = reader.get("default", key)?;
    Ok(found.map(|(v, version)| (String::from_utf8_lossy(&v).into_owned(), version)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_every_member_and_survives_a_follower_restart() -> TestResult {
    let mut cluster = Cluster::start(raft_config()).await?;
    let (first, result) = cluster.write(put("greeting", "hello")).await?;
    assert_eq!(result, CommandResult::Written { version: first });
    for id in 1..=3 {
        cluster.applied(id, first).await?;
        let got = value(&cluster.running(id)?.reader, "greeting")?;
        assert_eq!(got, Some(("hello".into(), first)), "member {id}");
    }

    let leader = cluster.leader().await?;
    let follower = (1..=3).find(|&id| id != leader).ok_or("no follower")?;
    cluster.stop(follower).await?;
    let (second, _) = cluster.write(put("farewell", "bye")).await?;

    // Restarted but cut off: what it serves now comes from its own disk.
    cluster.network.isolate(follower);
    cluster.restart(follower).await?;
    cluster.applied(follower, first).await?;
    let restarted = &cluster.running(follower)?.reader;
    assert_eq!(value(restarted, "greeting")?, Some(("hello".into(), first)));
    assert_eq!(
        value(restarted, "farewell")?,
        None,
        "written while it was down"
    );

    cluster.network.heal_all();
    cluster.applied(follower, second).await?;
    let restarted = &cluster.running(follower)?.reader;
    assert_eq!(value(restarted, "farewell")?, Some(("bye".into(), second)));
    assert_eq!(value(restarted, "greeting")?, Some(("hello".into(), first)));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_a_purged_log_catches_up_by_snapshot() -> TestResult {
    // Purge everything a snapshot covers, so the lagging member cannot be
    // sent log entries and must install the snapshot.
    let config = openraft::Config {
        max_in_snapshot_log_to_keep: 0,
        ..raft_config()
    };
    let cluster = Cluster::start(config).await?;
    let leader = cluster.leader().await?;
    let behind = (1..=3).find(|&id| id != leader).ok_or("no follower")?;
    cluster.network.isolate(behind);

    let mut last = 0;
    for i in 0..20 {
        last = cluster
            .write(put(&format!("k{i}"), &format!("v{i}")))
            .await?
            .0;
    }
    let leader_raft = &cluster.running(leader)?.raft;
    leader_raft.trigger().snapshot().await?;
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= last),
            "log purged up to the last write",
        )
        .await?;

    cluster.network.heal_all();
    cluster.applied(behind, last).await?;
    let reader = &cluster.running(behind)?.reader;
    for i in 0..20 {
        assert_eq!(
            value(reader, &format!("k{i}"))?.map(|(v, _)| v),
            Some(format!("v{i}"))
        );
    }
    // Its own snapshot now covers what the leader purged (the metrics
    // catch up with the state machine a moment later).
    let behind_raft = &cluster.running(behind)?.raft;
    let covered =
        |m: &openraft::RaftMetrics<RaftNodeId, Member>| m.snapshot.is_some_and(|s| s.index >= last);
    behind_raft
        .wait(Some(WAIT))
        .metrics(covered, "the lagging member installed a snapshot")
        .await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_through_message_loss_and_delay() -> TestResult {
    let cluster = Cluster::start(raft_config()).await?;
    cluster
        .network
        .set_delay(Duration::ZERO, Duration::from_millis(3));
    cluster.network.set_loss(0.05, 0.05);
    let mut last = 0;
    for i in 0..30 {
        last = cluster.write(put(&format!("k{i}"), "v")).await?.0;
    }
    cluster.network.set_loss(0.0, 0.0);
    for id in 1..=3 {
        cluster.applied(id, last).await?;
        let (items, _) = cluster.running(id)?.reader.list("default", "k")?;
        assert_eq!(items.len(), 30, "member {id}");
    }
    let stats = cluster.network.stats();
    assert!(
        stats.lost > 0 && stats.delivered > 0,
        "the faults happened: {stats:?}"
    );
    cluster.shutdown().await
}
