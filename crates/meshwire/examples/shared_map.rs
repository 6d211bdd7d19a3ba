//! Shared maps: a three-member Raft group on routers (linearizable), workers
//! that claim jobs with compare-and-swap, a watcher, and an eventual map.
//! Run: `cargo run -p meshwire --example shared_map`

use meshwire::security::Authority;
use meshwire::state::{Cas, Consistency, MapError, SharedMap};
use meshwire::Node;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Job {
    Queued,
    TakenBy(String),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = Authority::generate("shared-map example")?;
    let data = tempfile::tempdir()?; // each member's Raft log lives under its data directory

    // Three routers in one Raft group: the first bootstraps it, the others
    // peer with it and are added by the group itself.
    let mut routers: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut b = Node::builder()
            .listen("127.0.0.1:0")
            .data_dir(data.path().join(format!("r{i}")))
            .raft()
            .certified_by(&ca);
        if let Some(first) = routers.first().and_then(Node::listen_addr) {
            b = b.peer(first);
        }
        routers.push(b.start().await?);
    }
    let client = Node::builder()
        .connect(routers[1].listen_addr().unwrap_or_default())
        .certified_by(&ca)
        .start()
        .await?;
    let group = wait_for_voters(&client, 3).await?;
    println!(
        "Raft group: {} voters, leader {:016x}, term {}",
        group.voters.len(),
        group.leader.unwrap_or_default(),
        group.term
    );

    // A linearizable map, from a node that is not even a member.
    let jobs: SharedMap<String, Job> = client.shared_map("jobs", Consistency::Linearizable).await?;
    let mut watch = jobs.watch("job/").await?;
    let v = jobs.put(&"job/1".into(), &Job::Queued).await?;
    println!("job/1 queued at version {v}");

    // Two workers on two different routers race for it: exactly one wins.
    let a: SharedMap<String, Job> = routers[0]
        .existing_map("jobs", Consistency::Linearizable)
        .await?;
    let b: SharedMap<String, Job> = routers[2]
        .existing_map("jobs", Consistency::Linearizable)
        .await?;
    let key = "job/1".to_owned();
    let (ta, tb) = (Job::TakenBy("a".into()), Job::TakenBy("b".into()));
    let (ra, rb) = tokio::join!(
        a.compare_and_swap(&key, v, &ta),
        b.compare_and_swap(&key, v, &tb)
    );
    for (who, r) in [("a", ra?), ("b", rb?)] {
        match r {
            Cas::Swapped { version } => println!("worker {who} took job/1 (version {version})"),
            Cas::Mismatch { current } => {
                println!("worker {who} lost: job/1 is at version {current}")
            }
            other => println!("worker {who}: {other:?}"),
        }
    }
    // The watch saw both changes, in commit order.
    for _ in 0..2 {
        if let Some(change) = watch.next().await {
            let change = change?;
            println!(
                "watch: {} = {:?} (version {})",
                change.key, change.value, change.version
            );
        }
    }

    // An eventual map: every node writes its own replica; replicas converge.
    let hits_here: SharedMap<String, u64> =
        client.shared_map("hits", Consistency::Eventual).await?;
    let hits_there: SharedMap<String, u64> =
        routers[0].shared_map("hits", Consistency::Eventual).await?;
    hits_here.put(&"page/home".into(), &1).await?;
    for _ in 0..100 {
        if hits_there.get(&"page/home".into()).await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "eventual map on another node: page/home = {:?}",
        hits_there.get(&"page/home".into()).await?.map(|v| v.value)
    );

    client.shutdown().await;
    for r in routers {
        r.shutdown().await;
    }
    Ok(())
}

/// Waits (at most 30 s) until the group has `n` voters and a leader.
async fn wait_for_voters(node: &Node, n: usize) -> Result<meshwire::state::GroupInfo, MapError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match node.raft_group().await {
            Ok(info) if info.voters.len() == n && info.leader.is_some() => return Ok(info),
            Ok(_) | Err(MapError::NoGroup | MapError::NoLeader(_) | MapError::Timeout(_)) => {}
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(MapError::Timeout(Duration::from_secs(30)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
