//! What applying commands does to the maps, the answers, and the history.

use std::sync::{Arc, RwLock};

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use tokio::sync::watch;

use super::{HistoryLimits, KvReader, KvState};
use crate::state::raft::error::ReadError;
use crate::state::raft::types::{Change, Command, CommandResult, MAX_KEY_LEN, MAX_VALUE_LEN};

const ROOMY: HistoryLimits = HistoryLimits {
    changes: 1000,
    bytes: 1 << 20,
};

/// A state machine fed by hand: each command gets the next log index.
struct Harness {
    state: Arc<RwLock<KvState>>,
    reader: KvReader,
    next_index: u64,
}

impl Harness {
    fn new(limits: HistoryLimits) -> Harness {
        let state = Arc::new(RwLock::new(KvState::new(limits)));
        // Applied-index notification is the state machine store's job,
        // tested there; this receiver only completes the reader.
        let (_applied, applied_rx) = watch::channel(0);
        let reader = KvReader::new(Arc::clone(&state), applied_rx);
        Harness {
            state,
            reader,
            next_index: 1,
        }
    }

    fn apply_payload(
        &mut self,
        payload: EntryPayload<crate::state::raft::TypeConfig>,
    ) -> CommandResult {
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.next_index);
        self.next_index += 1;
        crate::state::raft::write_lock(&self.state).apply(Entry { log_id, payload })
    }

    fn apply(&mut self, command: Command) -> CommandResult {
        self.apply_payload(EntryPayload::Normal(command))
    }

    fn put(&mut self, map: &str, key: &str, value: &[u8]) -> CommandResult {
        self.apply(Command::Put {
            map: map.into(),
            key: key.into(),
            value: value.to_vec(),
        })
    }

    fn cas(&mut self, key: &str, expected: u64, value: &[u8]) -> CommandResult {
        let map = "default".into();
        self.apply(Command::Cas {
            map,
            key: key.into(),
            expected,
            value: value.to_vec(),
        })
    }

    fn delete(&mut self, key: &str) -> CommandResult {
        self.apply(Command::Delete {
            map: "default".into(),
            key: key.into(),
        })
    }

    fn changes(
        &self,
        map: &str,
        prefix: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, ReadError> {
        let changes = self.reader.changes_after(map, prefix, after, usize::MAX)?;
        Ok(changes.into_iter().map(|c| (c.key, c.version)).collect())
    }
}

#[test]
fn a_version_is_the_log_index_of_the_last_write() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    assert_eq!(
        kv.put("default", "a", b"1"),
        CommandResult::Written { version: 1 }
    );
    assert_eq!(
        kv.put("default", "b", b"2"),
        CommandResult::Written { version: 2 }
    );
    assert_eq!(
        kv.put("default", "a", b"3"),
        CommandResult::Written { version: 3 }
    );
    assert_eq!(kv.reader.get("default", "a")?, Some((b"3".to_vec(), 3)));
    assert_eq!(kv.reader.get("default", "b")?, Some((b"2".to_vec(), 2)));
    assert_eq!(kv.reader.get("default", "c")?, None);
    Ok(())
}

#[test]
fn raft_entries_advance_the_index_without_touching_the_maps() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    assert_eq!(
        kv.apply_payload(EntryPayload::Blank),
        CommandResult::Internal
    );
    let membership = Membership::new(vec![[1u64, 2, 3].into_iter().collect()], ());
    assert_eq!(
        kv.apply_payload(EntryPayload::Membership(membership.clone())),
        CommandResult::Internal
    );
    assert_eq!(
        kv.put("default", "k", b"v"),
        CommandResult::Written { version: 3 }
    );
    let state = crate::state::raft::read_lock(&kv.state);
    assert_eq!(state.membership.membership(), &membership);
    assert_eq!(state.membership.log_id().map(|id| id.index), Some(2));
    assert_eq!(state.last_applied.map(|id| id.index), Some(3));
    Ok(())
}

#[test]
fn cas_compares_versions_and_zero_means_absent() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    assert_eq!(
        kv.cas("k", 0, b"first"),
        CommandResult::Written { version: 1 }
    );
    assert_eq!(
        kv.cas("k", 0, b"again"),
        CommandResult::CasFailed { current: 1 }
    );
    assert_eq!(
        kv.cas("k", 7, b"stale"),
        CommandResult::CasFailed { current: 1 }
    );
    assert_eq!(
        kv.reader.get("default", "k")?,
        Some((b"first".to_vec(), 1)),
        "failed cas writes nothing"
    );
    assert_eq!(
        kv.cas("k", 1, b"second"),
        CommandResult::Written { version: 4 }
    );
    assert_eq!(
        kv.cas("absent", 4, b"x"),
        CommandResult::CasFailed { current: 0 }
    );
    assert_eq!(kv.reader.get("default", "absent")?, None);
    Ok(())
}

#[test]
fn delete_reports_whether_the_key_existed() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    assert_eq!(
        kv.delete("k"),
        CommandResult::Deleted {
            existed: false,
            version: 1
        }
    );
    kv.put("default", "k", b"v");
    assert_eq!(
        kv.delete("k"),
        CommandResult::Deleted {
            existed: true,
            version: 3
        }
    );
    assert_eq!(kv.reader.get("default", "k")?, None);
    // Only the real change is in the history.
    assert_eq!(
        kv.changes("default", "", 0)?,
        vec![("k".into(), 2), ("k".into(), 3)]
    );
    let deleted = kv.reader.changes_after("default", "", 2, 10)?;
    assert_eq!(
        deleted,
        vec![Change {
            map: "default".into(),
            key: "k".into(),
            value: None,
            version: 3
        }]
    );
    Ok(())
}

#[test]
fn maps_must_be_created_and_creating_is_idempotent() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    assert_eq!(kv.reader.maps(), vec!["default".to_owned()]);
    assert_eq!(
        kv.put("orders", "k", b"v"),
        CommandResult::UnknownMap {
            map: "orders".into()
        }
    );
    assert_eq!(
        kv.reader.get("orders", "k"),
        Err(ReadError::UnknownMap("orders".into()))
    );
    assert_eq!(
        kv.reader.changes_after("orders", "", 0, 10),
        Err(ReadError::UnknownMap("orders".into()))
    );
    assert_eq!(
        kv.changes("default", "", 0)?,
        vec![],
        "nothing written by the refused put"
    );
    let create = Command::CreateMap {
        map: "orders".into(),
    };
    assert_eq!(
        kv.apply(create.clone()),
        CommandResult::MapCreated { existed: false }
    );
    assert_eq!(
        kv.apply(create),
        CommandResult::MapCreated { existed: true }
    );
    assert_eq!(
        kv.apply(Command::CreateMap {
            map: "default".into()
        }),
        CommandResult::MapCreated { existed: true }
    );
    assert_eq!(
        kv.put("orders", "k", b"v"),
        CommandResult::Written { version: 5 }
    );
    assert_eq!(
        kv.reader.maps(),
        vec!["default".to_owned(), "orders".to_owned()]
    );
    Ok(())
}

#[test]
fn invalid_commands_are_rejected_and_write_nothing() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    let long_key = "k".repeat(MAX_KEY_LEN + 1);
    let big_value = vec![0; MAX_VALUE_LEN + 1];
    let rejected = [
        kv.put("default", "", b"v"),
        kv.put("default", "line\nbreak", b"v"),
        kv.put("default", &long_key, b"v"),
        kv.put("default", "k", &big_value),
        kv.apply(Command::CreateMap {
            map: "bad name".into(),
        }),
        kv.apply(Command::Cas {
            map: "default".into(),
            key: "k".into(),
            expected: 0,
            value: big_value.clone(),
        }),
    ];
    for result in rejected {
        assert!(
            matches!(result, CommandResult::Rejected { .. }),
            "{result:?}"
        );
    }
    assert_eq!(kv.reader.list("default", "")?, (vec![], 6));
    assert_eq!(kv.reader.maps(), vec!["default".to_owned()]);
    assert_eq!(kv.changes("default", "", 0)?, vec![]);
    Ok(())
}

#[test]
fn list_returns_a_prefix_in_key_order_with_the_applied_index() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    for key in ["user/2", "order/1", "user/1", "user", "userx"] {
        kv.put("default", key, key.as_bytes());
    }
    let (items, applied) = kv.reader.list("default", "user/")?;
    assert_eq!(applied, 5);
    let keys: Vec<(String, u64)> = items.into_iter().map(|(k, _, v)| (k, v)).collect();
    assert_eq!(keys, vec![("user/1".into(), 3), ("user/2".into(), 1)]);
    assert_eq!(kv.reader.list("default", "")?.0.len(), 5);
    assert_eq!(
        kv.reader.list("nope", ""),
        Err(ReadError::UnknownMap("nope".into()))
    );
    Ok(())
}

#[test]
fn changes_are_filtered_by_map_and_prefix_and_paged() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    kv.apply(Command::CreateMap {
        map: "other".into(),
    });
    kv.put("default", "a/1", b"x"); // 2
    kv.put("other", "a/1", b"x"); // 3
    kv.put("default", "b/1", b"x"); // 4
    kv.put("default", "a/2", b"x"); // 5
    assert_eq!(
        kv.changes("default", "a/", 0)?,
        vec![("a/1".into(), 2), ("a/2".into(), 5)]
    );
    assert_eq!(kv.changes("default", "a/", 2)?, vec![("a/2".into(), 5)]);
    assert_eq!(kv.changes("other", "", 0)?, vec![("a/1".into(), 3)]);
    let page = kv.reader.changes_after("default", "", 0, 2)?;
    assert_eq!(
        page.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert_eq!(
        kv.changes("default", "", 5)?,
        vec![],
        "nothing after the last change"
    );
    Ok(())
}

#[test]
fn history_is_bounded_and_reports_what_it_lost() -> Result<(), ReadError> {
    let mut kv = Harness::new(HistoryLimits {
        changes: 3,
        bytes: 1 << 20,
    });
    for i in 1..=5 {
        kv.put("default", &format!("k{i}"), b"v");
    }
    // Changes 3, 4, 5 remain: history is complete above version 2.
    assert_eq!(kv.changes("default", "", 2)?.len(), 3);
    assert_eq!(kv.changes("default", "", 4)?, vec![("k5".into(), 5)]);
    assert_eq!(
        kv.reader.changes_after("default", "", 1, 10),
        Err(ReadError::Compacted {
            asked: 1,
            oldest: 2
        })
    );

    // The byte bound holds too, whatever the count allows.
    let mut kv = Harness::new(HistoryLimits {
        changes: 1000,
        bytes: 100,
    });
    for i in 1..=4 {
        kv.put("default", &format!("k{i}"), &[0; 40]);
    }
    let kept = kv.changes("default", "", 2)?;
    assert_eq!(kept, vec![("k3".into(), 3), ("k4".into(), 4)]);
    assert!(matches!(
        kv.reader.changes_after("default", "", 0, 10),
        Err(ReadError::Compacted { oldest: 2, .. })
    ));
    Ok(())
}

#[test]
fn restoring_a_snapshot_restarts_history_at_its_index() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    kv.put("default", "old", b"v");
    let mut maps = super::Maps::new();
    maps.entry("restored".into())
        .or_default()
        .insert("k".into(), (b"v".to_vec(), 40));
    let log_id = LogId::new(CommittedLeaderId::new(3, 2), 42);
    crate::state::raft::write_lock(&kv.state).restore(
        super::Snapshotted {
            maps,
            ..Default::default()
        },
        Some(log_id),
        Default::default(),
    );
    assert_eq!(
        kv.reader.maps(),
        vec!["default".to_owned(), "restored".to_owned()],
        "default always exists"
    );
    assert_eq!(kv.reader.get("restored", "k")?, Some((b"v".to_vec(), 40)));
    assert_eq!(kv.reader.get("default", "old")?, None);
    assert_eq!(
        kv.reader.changes_after("default", "", 41, 10),
        Err(ReadError::Compacted {
            asked: 41,
            oldest: 42
        })
    );
    assert_eq!(kv.reader.changes_after("default", "", 42, 10)?, vec![]);
    Ok(())
}

#[test]
fn a_request_applied_twice_answers_the_first_result_and_writes_once() -> Result<(), ReadError> {
    let mut kv = Harness::new(ROOMY);
    let cas = |value: &[u8]| Command::Once {
        id: 7,
        command: Box::new(Command::Cas {
            map: "default".into(),
            key: "k".into(),
            expected: 0,
            value: value.to_vec(),
        }),
    };
    let first = kv.apply(cas(b"a"));
    assert_eq!(first, CommandResult::Written { version: 1 });
    // The retry of the same request (the client never heard back): same
    // answer, nothing written, although the cas would now fail.
    assert_eq!(kv.apply(cas(b"a")), first);
    assert_eq!(kv.reader.get("default", "k")?, Some((b"a".to_vec(), 1)));
    // Another request with the same expectations does fail.
    let other = Command::Once {
        id: 8,
        command: Box::new(Command::Cas {
            map: "default".into(),
            key: "k".into(),
            expected: 0,
            value: b"b".to_vec(),
        }),
    };
    assert_eq!(kv.apply(other), CommandResult::CasFailed { current: 1 });
    // A snapshot keeps what was answered: a member restored from it still
    // answers the retry instead of applying it.
    let bytes = postcard::to_allocvec(&crate::state::raft::read_lock(&kv.state).snapshotted())
        .map_err(|e| ReadError::UnknownMap(e.to_string()))?;
    let restored: super::Snapshotted =
        postcard::from_bytes(&bytes).map_err(|e| ReadError::UnknownMap(e.to_string()))?;
    assert_eq!(restored.requests.len(), 2);
    let mut fresh = Harness::new(ROOMY);
    fresh.next_index = 10;
    crate::state::raft::write_lock(&fresh.state).restore(restored, None, Default::default());
    assert_eq!(fresh.apply(cas(b"a")), first);
    assert_eq!(fresh.reader.get("default", "k")?, Some((b"a".to_vec(), 1)));
    // Nested request ids are refused.
    let nested = Command::Once {
        id: 9,
        command: Box::new(cas(b"c")),
    };
    assert!(matches!(kv.apply(nested), CommandResult::Rejected { .. }));
    Ok(())
}
