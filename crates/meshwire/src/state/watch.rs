//! The tasks behind a [`Watch`](super::Watch): they fetch changes and feed
//! the watch's channel, and end when the watch is dropped.

use super::eventual::ReplicaHandle;
use super::linearizable::GroupClient;
use super::raft::Change;
use super::MapError;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How long one long poll is held by the member.
const POLL_WAIT: Duration = Duration::from_secs(5);

type Feed = mpsc::Sender<Result<Change, MapError>>;

/// Long-polls the group for changes after `after`, forever.
///
/// Retryable failures (no leader, a member restarting) are retried with a
/// pause; anything else ends the watch with that error.
pub(crate) async fn poll_group(
    client: GroupClient,
    map: String,
    prefix: String,
    mut after: u64,
    tx: Feed,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let polled = tokio::select! {
            r = client.poll_changes(&map, &prefix, after, POLL_WAIT) => r,
            _ = tx.closed() => return,
        };
        match polled {
            Ok((changes, upto)) => {
                pause = Duration::from_millis(50);
                for change in changes {
                    // Members answer in commit order; a member that has
                    // applied less than another may repeat what the other
                    // already gave: skip it.
                    if change.version <= after {
                        continue;
                    }
                    after = change.version;
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
                after = after.max(upto);
            }
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// Follows this node's replica of an eventual map: first what changed
/// after `after`, then every change as it is merged, in merge order.
pub(crate) async fn follow_replica(
    replica: ReplicaHandle,
    map: String,
    prefix: String,
    after: u64,
    tx: Feed,
) {
    // Subscribe before reading the backlog so nothing falls in between; a
    // change that shows up in both is delivered once.
    let mut live = match replica.subscribe(&map) {
        Ok(rx) => rx,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let backlog = match replica.changes_since(&map, &prefix, after) {
        Ok(changes) => changes,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let mut delivered: HashSet<(String, u64)> = HashSet::new();
    let mut newest = after;
    for change in backlog {
        delivered.insert((change.key.clone(), change.version));
        newest = newest.max(change.version);
        if tx.send(Ok(change)).await.is_err() {
            return;
        }
    }
    loop {
        let change = tokio::select! {
            c = live.recv() => c,
            _ = tx.closed() => return,
        };
        match change {
            Ok(change) => {
                if !change.key.starts_with(prefix.as_str())
                    || delivered.remove(&(change.key.clone(), change.version))
                {
                    continue;
                }
                newest = newest.max(change.version);
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(map = %map, missed, "a watch fell behind its replica");
                let _ = tx
                    .send(Err(MapError::Compacted {
                        from: newest,
                        oldest: newest,
                    }))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
