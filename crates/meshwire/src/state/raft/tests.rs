//! The stores together: openraft's own storage suite, snapshots through a
//! reopen and between members, and the applied-index notifications.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
    StorageError, StorageIOError,
};
use tempfile::TempDir;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Builds a fresh pair of stores in a temporary directory for each suite
/// case; the directory goes when the case is done.
struct TempDirStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, state_machine, _reader) = open(dir.path(), StoreConfig::default())
            .await
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, state_machine))
    }
}

/// openraft's storage suite, one test per case (the suite's `test_all`
/// stops at the first failure and runs the cases one after another, five
/// of them waiting a second each).
mod openraft_suite {
    use super::*;

    type Cases = Suite<TypeConfig, LogStore, StateMachineStore, TempDirStores, TempDir>;

    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $case() -> TestResult {
                let (_dir, log, state_machine) = TempDirStores.build().await?;
                Ok(Cases::$case(log, state_machine).await?)
            }
        )*};
    }

    cases!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        // Not `get_initial_state_membership_from_log_and_sm`: after the
        // log is purged to index 2 it appends index 1, then index 3. The
        // storage contract says a log must never have a hole, and ours
        // refuses such appends (`an_append_that_would_leave_a_hole_is_refused`);
        // the suite's in-memory stores accept anything.
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );

    #[tokio::test]
    async fn transfer_snapshot() -> TestResult {
        Ok(Cases::transfer_snapshot(&TempDirStores).await?)
    }
}

#[test]
fn the_suggested_raft_config_is_valid() -> TestResult {
    let config = raft_config().validate()?;
    assert!(config.election_timeout_min > 3 * config.heartbeat_interval);
    Ok(())
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

fn put(index: u64, map: &str, key: &str, value: &str) -> Entry<TypeConfig> {
    let command = Command::Put {
        map: map.into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
    };
    entry(index, EntryPayload::Normal(command))
}

fn membership() -> Membership<RaftNodeId, Member> {
    Membership::new(vec![[1u64, 2].into_iter().collect()], ())
}

/// A membership, a map and three writes: indexes 1 to 5.
fn some_history() -> Vec<Entry<TypeConfig>> {
    vec![
        entry(1, EntryPayload::Membership(membership())),
        entry(
            2,
            EntryPayload::Normal(Command::CreateMap {
                map: "orders".into(),
            }),
        ),
        put(3, "orders", "o1", "new"),
        put(4, "default", "k", "v"),
        put(5, "orders", "o1", "paid"),
    ]
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn assert_holds_some_history(reader: &KvReader) -> Result<(), ReadError> {
    assert_eq!(
        reader.maps(),
        vec!["default".to_owned(), "orders".to_owned()]
    );
    assert_eq!(reader.get("orders", "o1")?, Some((b"paid".to_vec(), 5)));
    assert_eq!(reader.get("default", "k")?, Some((b"v".to_vec(), 4)));
    assert_eq!(*reader.applied().borrow(), 5);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_brings_the_state_back_after_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let built = {
        let (_log, mut sm, _reader) = open(dir.path(), StoreConfig::default()).await?;
        sm.apply(some_history()).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    assert_eq!(built.meta.last_log_id.map(|id| id.index), Some(5));
    let (_log, mut sm, reader) = open(dir.path(), StoreConfig::default()).await?;
    assert_holds_some_history(&reader)?;
    let (applied, stored_membership) = sm.applied_state().await?;
    assert_eq!(applied, built.meta.last_log_id);
    assert_eq!(stored_membership.membership(), &membership());
    let current = sm
        .get_current_snapshot()
        .await?
        .ok_or("no current snapshot after reopen")?;
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());
    // What happened before the snapshot is not known in detail any more.
    assert_eq!(
        reader.changes_after("orders", "", 0, 10),
        Err(ReadError::Compacted {
            asked: 0,
            oldest: 5
        })
    );
    Ok(())
}

#[tokio::test]
async fn a_snapshot_received_from_the_leader_replaces_the_state() -> TestResult {
    let (leader_dir, follower_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_leader_log, mut leader, _) = open(leader_dir.path(), StoreConfig::default()).await?;
    leader.apply(some_history()).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;

    let (_log, mut follower, reader) = open(follower_dir.path(), StoreConfig::default()).await?;
    follower
        .apply([put(1, "default", "stale", "gone after install")])
        .await?;
    let mut applied = reader.applied();
    applied.borrow_and_update();
    let mut received = follower.begin_receiving_snapshot().await?;
    *received = *snapshot.snapshot;
    follower.install_snapshot(&snapshot.meta, received).await?;
    assert!(applied.has_changed()?, "watchers hear of the install");
    assert_holds_some_history(&reader)?;
    assert_eq!(reader.get("default", "stale")?, None);
    let current = follower
        .get_current_snapshot()
        .await?
        .ok_or("no current snapshot")?;
    assert_eq!(current.meta, snapshot.meta);
    drop((follower, reader));

    let (_log, _follower, reader) = open(follower_dir.path(), StoreConfig::default()).await?;
    assert_holds_some_history(&reader)?;
    Ok(())
}

#[tokio::test]
async fn damaged_snapshot_data_is_refused_and_changes_nothing() -> TestResult {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_log, mut leader, _) = open(a.path(), StoreConfig::default()).await?;
    leader.apply(some_history()).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let mut data = snapshot.snapshot.into_inner();
    let middle = data.len() / 2;
    data[middle] ^= 0x04;

    let (_log, mut follower, reader) = open(b.path(), StoreConfig::default()).await?;
    follower.apply([put(1, "default", "mine", "kept")]).await?;
    let installed = follower
        .install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data)))
        .await;
    assert!(installed.is_err(), "damaged data must not install");
    assert_eq!(reader.get("default", "mine")?, Some((b"kept".to_vec(), 1)));
    assert!(follower.get_current_snapshot().await?.is_none());
    assert!(snapshot_files(b.path()).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_damaged_snapshot_file_is_refused_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm, _) = open(dir.path(), StoreConfig::default()).await?;
        sm.apply(some_history()).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
    }
    let file = snapshot_files(dir.path()).pop().ok_or("no snapshot file")?;
    let mut bytes = std::fs::read(&file)?;
    let at = bytes.len() - 10;
    bytes[at] ^= 0x80;
    std::fs::write(&file, &bytes)?;
    match open(dir.path(), StoreConfig::default()).await {
        Err(StoreError::Corrupt {
            file: named,
            kind: Corruption::Checksum,
            ..
        }) => {
            assert_eq!(named, file)
        }
        other => return Err(format!("expected a corrupt snapshot, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn only_the_newest_snapshot_is_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old_copy = {
        let (_log, mut sm, _) = open(dir.path(), StoreConfig::default()).await?;
        let history = some_history();
        let (first, rest) = history.split_at(3);
        sm.apply(first.to_vec()).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        let old = snapshot_files(dir.path())
            .pop()
            .ok_or("no first snapshot")?;
        let old_copy = (old.clone(), std::fs::read(&old)?);
        sm.apply(rest.to_vec()).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(
            snapshot_files(dir.path()).len(),
            1,
            "the older snapshot is removed"
        );
        old_copy
    };
    // A crash between writing the new snapshot and removing the old one.
    std::fs::write(&old_copy.0, &old_copy.1)?;
    let (_log, _sm, reader) = open(dir.path(), StoreConfig::default()).await?;
    assert_holds_some_history(&reader)?;
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    Ok(())
}

#[tokio::test]
async fn applying_wakes_whoever_waits_on_the_applied_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm, reader) = open(dir.path(), StoreConfig::default()).await?;
    let mut applied = reader.applied();
    assert_eq!(*applied.borrow_and_update(), 0);
    let waiter = tokio::spawn(async move { applied.changed().await.map(|()| *applied.borrow()) });
    sm.apply(some_history()).await?;
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter).await???;
    assert_eq!(seen, 5);
    let changes = reader.changes_after("orders", "o", 0, 10)?;
    assert_eq!(
        changes.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![3, 5]
    );
    Ok(())
}
