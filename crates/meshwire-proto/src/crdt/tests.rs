//! Unit tests of one replica: last-writer-wins, compare-and-swap, limits,
//! clock skew, watch changes. The convergence properties are in
//! `tests/crdt.rs`.

use super::*;
use crate::wire::NodeId;
use bytes::Bytes;

const A: NodeId = NodeId([1; 16]);
const B: NodeId = NodeId([2; 16]);
/// A wall clock far ahead of every stamp in these tests: no skew refusals.
const LATE: u64 = 1 << 40;

fn stamp(ms: u64, logical: u16, origin: NodeId) -> Stamp {
    Stamp::new(Timestamp::new(ms, logical), origin)
}

fn entry(key: &str, stamp: Stamp, value: Option<&'static str>) -> DeltaEntry {
    DeltaEntry {
        key: key.to_owned(),
        stamp,
        value: value.map(|v| Bytes::from_static(v.as_bytes())),
    }
}

fn value_of(map: &LwwMap, key: &str) -> Option<Bytes> {
    map.get(key).map(|e| e.value.clone())
}

/// Merges `first` then `second` into one replica, and in the other order
/// into another; both must agree. Returns the first.
fn merge_both_ways(first: DeltaEntry, second: DeltaEntry) -> LwwMap {
    let mut one = LwwMap::new(A);
    one.merge(Delta::from(vec![first.clone()]), LATE).unwrap();
    one.merge(Delta::from(vec![second.clone()]), LATE).unwrap();
    let mut two = LwwMap::new(B);
    two.merge(Delta::from(vec![second]), LATE).unwrap();
    two.merge(Delta::from(vec![first]), LATE).unwrap();
    assert_eq!(one.to_delta(), two.to_delta());
    assert_eq!(one.digest(), two.digest());
    one
}

#[test]
fn the_higher_stamp_wins_in_either_order() {
    let m = merge_both_ways(
        entry("k", stamp(10, 0, B), Some("old")),
        entry("k", stamp(11, 0, A), Some("new")),
    );
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"new"[..]));
    assert_eq!(m.version("k"), Timestamp::new(11, 0).as_u64());
}

#[test]
fn equal_milliseconds_are_settled_by_the_logical_counter_then_the_node_id() {
    let m = merge_both_ways(
        entry("k", stamp(10, 2, A), Some("logical 2")),
        entry("k", stamp(10, 1, B), Some("logical 1")),
    );
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"logical 2"[..]));
    let m = merge_both_ways(
        entry("k", stamp(10, 1, A), Some("node A")),
        entry("k", stamp(10, 1, B), Some("node B")),
    );
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"node B"[..]));
}

#[test]
fn the_same_stamp_with_different_content_still_converges() {
    // Only a node that reissued a reading (restart, clock set back) does
    // this; replicas must agree anyway.
    let m = merge_both_ways(
        entry("k", stamp(10, 0, A), Some("x")),
        entry("k", stamp(10, 0, A), Some("y")),
    );
    assert!(m.get("k").is_some());
    merge_both_ways(
        entry("k", stamp(10, 0, A), Some("x")),
        entry("k", stamp(10, 0, A), None),
    );
}

#[test]
fn a_later_put_resurrects_a_deleted_key_and_an_earlier_one_does_not() {
    let delete = entry("k", stamp(20, 0, A), None);
    let m = merge_both_ways(delete.clone(), entry("k", stamp(21, 0, B), Some("back")));
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"back"[..]));
    assert_eq!(m.tombstones(), 0);
    let m = merge_both_ways(delete, entry("k", stamp(19, 9, B), Some("stale")));
    assert_eq!(value_of(&m, "k"), None);
    assert_eq!((m.len(), m.tombstones()), (0, 1));
}

#[test]
fn local_writes_read_back_and_iterate_in_key_order_without_tombstones() {
    let mut m = LwwMap::new(A);
    for key in ["user/2", "user/1", "group/1", "user/3"] {
        m.put(key, Bytes::from(key.to_owned()), 1_000).unwrap();
    }
    m.delete("user/2", 1_000).unwrap();
    let keys: Vec<&str> = m.iter_prefix("user/").map(|e| e.key).collect();
    assert_eq!(keys, ["user/1", "user/3"]);
    assert_eq!((m.len(), m.tombstones()), (3, 1));
    assert_eq!(m.iter_prefix("").count(), 3);
    assert!(m.get("user/2").is_none());
    assert_eq!(m.version("user/2"), 0);
}

#[test]
fn a_local_write_returns_the_delta_to_gossip_and_the_change_to_watch() {
    let mut m = LwwMap::new(A);
    let up = m.put("k", Bytes::from_static(b"v"), 5_000).unwrap();
    assert_eq!(up.change.key, "k");
    assert_eq!(up.change.stamp, stamp(5_000, 0, A));
    assert_eq!(
        up.delta.entries(),
        &[entry("k", stamp(5_000, 0, A), Some("v"))]
    );
    let mut other = LwwMap::new(B);
    let report = other.merge(up.delta, 5_000).unwrap();
    assert_eq!(
        report.changes,
        vec![Change {
            seq: 1,
            ..up.change
        }]
    );
    assert_eq!(other.to_delta(), m.to_delta());
}

#[test]
fn a_write_after_seeing_a_remote_value_beats_it_even_with_a_slower_clock() {
    let mut m = LwwMap::new(A);
    m.merge(
        Delta::from(vec![entry("k", stamp(9_000, 4, B), Some("remote"))]),
        8_000,
    )
    .unwrap();
    let up = m.put("k", Bytes::from_static(b"local"), 8_000).unwrap();
    assert_eq!(up.change.stamp, stamp(9_000, 5, A));
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"local"[..]));
}

#[test]
fn deleting_an_absent_key_leaves_no_tombstone() {
    let mut m = LwwMap::new(A);
    assert_eq!(m.delete("nothing", 1).unwrap(), None);
    m.put("k", Bytes::new(), 1).unwrap();
    assert!(m.delete("k", 2).unwrap().is_some());
    assert_eq!(m.delete("k", 3).unwrap(), None);
    assert_eq!(m.tombstones(), 1);
}

#[test]
fn compare_and_swap_checks_this_replica_s_version() {
    let mut m = LwwMap::new(A);
    let v1 = m.cas("k", 0, Bytes::from_static(b"1"), 100).unwrap();
    let err = m.cas("k", 0, Bytes::from_static(b"x"), 100).unwrap_err();
    assert_eq!(
        err,
        MapError::VersionMismatch {
            key: "k".into(),
            expected: 0,
            actual: v1.change.version(),
        }
    );
    let v2 = m
        .cas("k", v1.change.version(), Bytes::from_static(b"2"), 100)
        .unwrap();
    assert!(v2.change.version() > v1.change.version());
    assert!(m.cas_delete("k", v1.change.version(), 100).is_err());
    assert!(m
        .cas_delete("k", v2.change.version(), 100)
        .unwrap()
        .is_some());
    // A deleted key is at version 0 again: create-if-absent works.
    assert_eq!(m.version("k"), 0);
    m.cas("k", 0, Bytes::from_static(b"3"), 100).unwrap();
    assert_eq!(value_of(&m, "k").as_deref(), Some(&b"3"[..]));
    assert_eq!(m.cas_delete("absent", 0, 100).unwrap(), None);
}

#[test]
fn bad_keys_and_values_get_typed_errors_and_change_nothing() {
    let config = MapConfig {
        max_key_len: 8,
        max_value_len: 4,
        ..MapConfig::default()
    };
    let mut m = LwwMap::with_config(A, config);
    let v = Bytes::from_static(b"ok");
    assert_eq!(m.put("", v.clone(), 1), Err(MapError::EmptyKey));
    assert!(matches!(
        m.put("123456789", v.clone(), 1),
        Err(MapError::KeyTooLong { len: 9, max: 8, .. })
    ));
    assert!(matches!(
        m.put("a\nb", v.clone(), 1),
        Err(MapError::ControlCharInKey { .. })
    ));
    assert!(matches!(
        m.put("k", Bytes::from_static(b"12345"), 1),
        Err(MapError::ValueTooLarge { len: 5, max: 4, .. })
    ));
    assert!(matches!(
        m.cas("k", 0, Bytes::from_static(b"12345"), 1),
        Err(MapError::ValueTooLarge { .. })
    ));
    assert_eq!(m.delete("", 1), Err(MapError::EmptyKey));
    assert_eq!((m.len(), m.tombstones(), m.seq()), (0, 0, 0));
    assert_eq!(m.clock().last(), Timestamp::ZERO, "no reading was taken");
}

#[test]
fn a_delta_with_one_bad_entry_is_refused_whole() {
    let config = MapConfig {
        max_value_len: 4,
        ..MapConfig::default()
    };
    let mut m = LwwMap::with_config(A, config);
    m.put("keep", Bytes::from_static(b"1"), 50).unwrap();
    let before = (m.to_delta(), m.digest(), m.clock().clone(), m.seq());
    for bad in [
        entry("big", stamp(60, 0, B), Some("12345")),
        entry("", stamp(60, 0, B), Some("1")),
        entry("zero", Stamp::new(Timestamp::ZERO, B), Some("1")),
    ] {
        let delta = Delta::from(vec![entry("fine", stamp(60, 0, B), Some("1")), bad]);
        assert!(m.merge(delta, 60).is_err());
        assert_eq!(
            (m.to_delta(), m.digest(), m.clock().clone(), m.seq()),
            before
        );
    }
}

#[test]
fn far_future_entries_are_skipped_and_accepted_once_the_clock_catches_up() {
    let config = MapConfig {
        max_clock_skew_ms: 1_000,
        ..MapConfig::default()
    };
    let mut m = LwwMap::with_config(A, config);
    let future = entry("f", stamp(12_000, 0, B), Some("from the future"));
    let delta = Delta::from(vec![
        future.clone(),
        entry("n", stamp(10_000, 0, B), Some("now")),
    ]);
    let report = m.merge(delta, 10_000).unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].key, "f");
    assert!(matches!(
        report.skipped[0].error,
        ClockError::TooFarAhead {
            ahead_ms: 2_000,
            ..
        }
    ));
    assert!(m.get("f").is_none());
    assert_eq!(
        m.clock().last(),
        Timestamp::new(10_000, 0),
        "not dragged ahead"
    );
    let report = m.merge(Delta::from(vec![future]), 11_000).unwrap();
    assert_eq!((report.applied, report.skipped.len()), (1, 0));
    assert!(m.get("f").is_some());
}

#[test]
fn merges_report_only_visible_changes() {
    let mut m = LwwMap::new(A);
    let put = entry("k", stamp(10, 0, B), Some("v"));
    assert_eq!(
        m.merge(Delta::from(vec![put.clone()]), LATE)
            .unwrap()
            .changes
            .len(),
        1
    );
    // A duplicate or an older entry is no change.
    let r = m.merge(
        Delta::from(vec![put, entry("k", stamp(9, 0, B), None)]),
        LATE,
    );
    assert_eq!(r.unwrap(), MergeReport::default());
    // A tombstone for a key never seen is stored but invisible.
    let r = m.merge(
        Delta::from(vec![entry("gone", stamp(10, 0, B), None)]),
        LATE,
    );
    let r = r.unwrap();
    assert_eq!((r.applied, r.changes.len()), (1, 0));
    assert_eq!(m.tombstones(), 1);
    // Deleting a live key is a change with no value.
    let r = m.merge(Delta::from(vec![entry("k", stamp(11, 0, B), None)]), LATE);
    let changes = r.unwrap().changes;
    assert_eq!(changes.len(), 1);
    assert!(changes[0].is_deletion());
}

#[test]
fn a_watch_resumes_by_version_or_by_apply_counter() {
    let mut m = LwwMap::new(A);
    m.put("a/1", Bytes::from_static(b"1"), 100).unwrap();
    let mark_version = m
        .put("a/2", Bytes::from_static(b"2"), 200)
        .unwrap()
        .change
        .version();
    let mark_seq = m.seq();
    m.put("b/1", Bytes::from_static(b"x"), 300).unwrap();
    m.delete("a/1", 400).unwrap();
    m.put("a/3", Bytes::from_static(b"3"), 500).unwrap();
    // A late entry from a healed partition, older than the watch's mark.
    m.merge(
        Delta::from(vec![entry("a/0", stamp(150, 0, B), Some("late"))]),
        600,
    )
    .unwrap();

    let by_version = m.changes_since(mark_version, "a/");
    let keys: Vec<(&str, bool)> = by_version
        .iter()
        .map(|c| (c.key.as_str(), c.is_deletion()))
        .collect();
    assert_eq!(keys, [("a/1", true), ("a/3", false)]);

    let by_seq = m.changes_after_seq(mark_seq, "a/");
    let keys: Vec<&str> = by_seq.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/3", "a/0"], "the late entry is not missed");
    assert!(m.changes_after_seq(m.seq(), "").is_empty());
}

#[test]
fn merged_values_do_not_pin_the_buffer_they_came_from() {
    let buffer = Bytes::from(vec![7u8; 4096]);
    let mut m = LwwMap::new(A);
    let delta = Delta::from(vec![DeltaEntry {
        key: "k".into(),
        stamp: stamp(1, 0, B),
        value: Some(buffer.slice(10..20)),
    }]);
    m.merge(delta, LATE).unwrap();
    let stored = m.get("k").unwrap().value.as_ptr() as usize;
    let start = buffer.as_ptr() as usize;
    assert!(!(start..start + buffer.len()).contains(&stored));
}

#[test]
fn the_codec_refuses_to_encode_what_it_could_not_decode() {
    let long = DeltaEntry {
        key: "k".repeat(70_000),
        stamp: stamp(1, 0, A),
        value: None,
    };
    assert!(matches!(
        Delta::from(vec![long]).to_bytes(),
        Err(CodecError::TooLong {
            what: "key",
            len: 70_000
        })
    ));
}

#[test]
fn split_batches_fit_the_limit_and_keep_the_order() {
    let delta: Delta = (0..50)
        .map(|i| DeltaEntry {
            key: format!("key/{i}"),
            stamp: stamp(1, i, A),
            value: Some(Bytes::from(vec![0; 100])),
        })
        .collect();
    let whole = delta.clone();
    let parts = delta.split(1_000);
    assert!(parts.len() > 1);
    for p in &parts {
        assert!(p.encoded_len() <= 1_000);
        assert_eq!(p.to_bytes().unwrap().len(), p.encoded_len());
    }
    let joined: Vec<DeltaEntry> = parts.into_iter().flat_map(Delta::into_entries).collect();
    assert_eq!(joined, whole.into_entries());
}
