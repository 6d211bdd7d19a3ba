//! Hand-written histories: each says what it plants and what the checker
//! must answer.

use super::*;

/// A completed operation.
fn done(client: ClientId, invoked: u64, returned: u64, op: KvOp, outcome: KvOutcome) -> Operation {
    Operation {
        client,
        invoked,
        returned: Some(returned),
        op,
        outcome,
    }
}

/// An operation whose outcome the client never learned.
fn lost(client: ClientId, invoked: u64, op: KvOp) -> Operation {
    Operation {
        client,
        invoked,
        returned: None,
        op,
        outcome: KvOutcome::Unknown,
    }
}

fn got(value: &str, version: u64) -> KvOutcome {
    KvOutcome::Got(Some((value.as_bytes().to_vec(), version)))
}

fn verdict(operations: Vec<Operation>) -> CheckResult {
    let history = History::new(operations).expect("a well-formed history");
    check(&history, Budget::steps(1_000_000))
}

fn assert_linearizable(operations: Vec<Operation>) {
    let result = verdict(operations);
    assert_eq!(result, CheckResult::Ok, "{result}");
}

/// Asserts a violation on `key` and returns it.
fn assert_violation(operations: Vec<Operation>, key: &str) -> Violation {
    match verdict(operations) {
        CheckResult::Violation(violation) => {
            assert_eq!(violation.key, key, "{violation}");
            violation
        }
        other => panic!("expected a violation on {key:?}, got {other}"),
    }
}

#[test]
fn a_sequential_history_of_every_operation_passes() {
    assert_linearizable(vec![
        done(1, 0, 1, KvOp::get("k"), KvOutcome::Got(None)),
        done(1, 2, 3, KvOp::cas("k", 0, "a"), KvOutcome::Cas(Ok(4))),
        done(1, 4, 5, KvOp::get("k"), got("a", 4)),
        done(1, 6, 7, KvOp::put("k", "b"), KvOutcome::Put(9)),
        done(1, 8, 9, KvOp::cas("k", 4, "c"), KvOutcome::Cas(Err(9))),
        done(1, 10, 11, KvOp::cas("k", 9, "c"), KvOutcome::Cas(Ok(12))),
        done(
            1,
            12,
            13,
            KvOp::delete("k"),
            KvOutcome::Deleted {
                existed: true,
                version: 20,
            },
        ),
        // Deleting an absent key still takes a log index.
        done(
            1,
            14,
            15,
            KvOp::delete("k"),
            KvOutcome::Deleted {
                existed: false,
                version: 21,
            },
        ),
        done(1, 16, 17, KvOp::get("k"), KvOutcome::Got(None)),
        // Expected 0: absent, which it is again after the delete.
        done(1, 18, 19, KvOp::cas("k", 0, "d"), KvOutcome::Cas(Ok(22))),
        done(1, 20, 21, KvOp::get("k"), got("d", 22)),
    ]);
    assert_linearizable(Vec::new());
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // Two overlapping puts; reads during them see either; the read after
    // both sees the one with the higher version.
    assert_linearizable(vec![
        done(1, 0, 10, KvOp::put("k", "a"), KvOutcome::Put(5)),
        done(2, 1, 11, KvOp::put("k", "b"), KvOutcome::Put(3)),
        done(3, 2, 4, KvOp::get("k"), KvOutcome::Got(None)),
        done(3, 5, 6, KvOp::get("k"), got("b", 3)),
        done(4, 7, 9, KvOp::get("k"), got("a", 5)),
        done(3, 12, 13, KvOp::get("k"), got("a", 5)),
        // Other keys interleave freely.
        done(5, 3, 8, KvOp::put("x", "1"), KvOutcome::Put(4)),
        done(5, 9, 14, KvOp::get("x"), got("1", 4)),
    ]);
}

#[test]
fn a_read_after_both_writes_must_see_the_higher_version() {
    assert_violation(
        vec![
            done(1, 0, 10, KvOp::put("k", "a"), KvOutcome::Put(5)),
            done(2, 1, 11, KvOp::put("k", "b"), KvOutcome::Put(3)),
            done(3, 12, 13, KvOp::get("k"), got("b", 3)),
        ],
        "k",
    );
}

#[test]
fn a_stale_read_is_flagged_and_explained() {
    let violation = assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("other", "z"), KvOutcome::Put(1)),
            done(1, 2, 3, KvOp::put("k", "old"), KvOutcome::Put(2)),
            done(1, 4, 5, KvOp::put("k", "new"), KvOutcome::Put(3)),
            done(2, 6, 7, KvOp::get("k"), got("old", 2)),
        ],
        "k",
    );
    assert_eq!(violation.linearized, vec![1, 2]);
    assert_eq!(violation.unplaced, vec![3]);
    let text = &violation.explanation;
    assert!(text.contains("key \"k\" is not linearizable"), "{text}");
    assert!(text.contains("the key holds \"new\" at v3"), "{text}");
    assert!(
        text.contains("#3 client 2 get(\"k\") -> \"old\" at v2 [t6..t7]: what it saw is not"),
        "{text}"
    );
}

#[test]
fn a_lost_write_is_flagged() {
    // The put was acknowledged; a read that started after it sees nothing.
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            done(2, 2, 3, KvOp::get("k"), KvOutcome::Got(None)),
        ],
        "k",
    );
}

#[test]
fn an_acknowledged_cas_that_later_reads_contradict_is_flagged() {
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            done(1, 2, 3, KvOp::cas("k", 1, "b"), KvOutcome::Cas(Ok(2))),
            done(2, 4, 5, KvOp::get("k"), got("a", 1)),
        ],
        "k",
    );
}

#[test]
fn two_cas_from_the_same_version_cannot_both_succeed() {
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            done(2, 2, 6, KvOp::cas("k", 1, "b"), KvOutcome::Cas(Ok(2))),
            done(3, 3, 7, KvOp::cas("k", 1, "c"), KvOutcome::Cas(Ok(3))),
        ],
        "k",
    );
    // From "absent" they can, with a delete in between.
    assert_linearizable(vec![
        done(2, 0, 1, KvOp::cas("k", 0, "b"), KvOutcome::Cas(Ok(2))),
        done(
            1,
            2,
            3,
            KvOp::delete("k"),
            KvOutcome::Deleted {
                existed: true,
                version: 3,
            },
        ),
        done(3, 4, 5, KvOp::cas("k", 0, "c"), KvOutcome::Cas(Ok(4))),
    ]);
}

#[test]
fn outcomes_that_contradict_the_state_they_saw_are_flagged() {
    let put = || done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1));
    // A failed cas that reports the very version it expected.
    assert_violation(
        vec![
            put(),
            done(2, 2, 3, KvOp::cas("k", 1, "b"), KvOutcome::Cas(Err(1))),
        ],
        "k",
    );
    // A delete that says the key was absent.
    let delete = KvOutcome::Deleted {
        existed: false,
        version: 2,
    };
    assert_violation(vec![put(), done(2, 2, 3, KvOp::delete("k"), delete)], "k");
    // A read of the right value at the wrong version.
    assert_violation(vec![put(), done(2, 2, 3, KvOp::get("k"), got("a", 2))], "k");
}

#[test]
fn an_unknown_write_may_have_taken_effect() {
    assert_linearizable(vec![
        done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
        lost(1, 2, KvOp::put("k", "b")),
        // The read tells the lost write's version...
        done(2, 5, 6, KvOp::get("k"), got("b", 7)),
        done(2, 8, 9, KvOp::get("k"), got("b", 7)),
        // ...and a later write must be above it.
        done(2, 10, 11, KvOp::put("k", "c"), KvOutcome::Put(8)),
    ]);
    // Then a later write below it is flagged.
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            lost(1, 2, KvOp::put("k", "b")),
            done(2, 5, 6, KvOp::get("k"), got("b", 7)),
            done(2, 10, 11, KvOp::put("k", "c"), KvOutcome::Put(6)),
        ],
        "k",
    );
}

#[test]
fn an_unknown_write_may_not_have_taken_effect() {
    assert_linearizable(vec![
        done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
        lost(1, 2, KvOp::put("k", "b")),
        lost(3, 3, KvOp::delete("k")),
        lost(4, 3, KvOp::cas("k", 1, "c")),
        done(2, 5, 6, KvOp::get("k"), got("a", 1)),
        done(2, 7, 8, KvOp::put("k", "d"), KvOutcome::Put(2)),
    ]);
}

#[test]
fn unknown_writes_need_log_indices_of_their_own() {
    let history = |version| {
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            lost(1, 2, KvOp::put("k", "b")),
            lost(3, 3, KvOp::put("k", "c")),
            done(2, 5, 6, KvOp::get("k"), got("c", version)),
        ]
    };
    // "c" can be at v2 only if "b" did not take effect before it.
    assert_linearizable(history(2));
    assert_linearizable(history(3));
    // Neither can have index 1: the acknowledged put has it.
    assert_violation(history(1), "k");
}

#[test]
fn the_explanation_says_what_became_of_unknown_outcomes() {
    let violation = assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "old"), KvOutcome::Put(2)),
            done(1, 4, 9, KvOp::put("k", "new"), KvOutcome::Put(3)),
            lost(3, 5, KvOp::cas("k", 2, "x")),
            lost(4, 5, KvOp::put("k", "y")),
            done(2, 6, 7, KvOp::get("k"), got("new", 3)),
            done(2, 10, 11, KvOp::get("k"), got("old", 2)),
        ],
        "k",
    );
    let text = &violation.explanation;
    assert!(
        text.contains("cas(\"k\", v2, \"x\") -> unknown [t5..inf] (no effect here)"),
        "{text}"
    );
    assert!(
        text.contains("put(\"k\", \"y\") -> unknown [t5..inf] (took effect here)"),
        "{text}"
    );
    assert!(text.contains("#5 had to take effect by t11"), "{text}");
}

#[test]
fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            done(2, 5, 6, KvOp::get("k"), got("b", 7)),
            lost(1, 10, KvOp::put("k", "b")),
        ],
        "k",
    );
}

#[test]
fn an_unknown_cas_takes_effect_only_from_its_expected_version() {
    let history = |expected| {
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
            lost(1, 2, KvOp::cas("k", expected, "b")),
            done(2, 5, 6, KvOp::get("k"), got("b", 4)),
        ]
    };
    assert_linearizable(history(1));
    assert_violation(history(9), "k");
}

#[test]
fn an_unknown_read_is_ignored() {
    assert_linearizable(vec![
        lost(1, 0, KvOp::get("k")),
        done(2, 1, 2, KvOp::put("k", "a"), KvOutcome::Put(1)),
    ]);
}

#[test]
fn a_write_below_an_earlier_version_is_flagged() {
    // On one key, by the key's own order.
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(5)),
            done(1, 2, 3, KvOp::put("k", "b"), KvOutcome::Put(3)),
        ],
        "k",
    );
    // Across keys, by the order of the log.
    let violation = assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("x", "a"), KvOutcome::Put(5)),
            done(1, 2, 3, KvOp::put("y", "b"), KvOutcome::Put(3)),
        ],
        "y",
    );
    assert_eq!(violation.unplaced, vec![0, 1]);
    assert!(violation
        .explanation
        .contains("log indices are handed out in order"));
    // Concurrent writes on different keys may take their indices in
    // either order.
    assert_linearizable(vec![
        done(1, 0, 3, KvOp::put("x", "a"), KvOutcome::Put(5)),
        done(2, 1, 2, KvOp::put("y", "b"), KvOutcome::Put(3)),
    ]);
}

#[test]
fn two_writes_with_one_version_are_flagged_even_on_different_keys() {
    let violation = assert_violation(
        vec![
            done(1, 0, 3, KvOp::put("x", "a"), KvOutcome::Put(4)),
            done(
                2,
                1,
                2,
                KvOp::delete("y"),
                KvOutcome::Deleted {
                    existed: false,
                    version: 4,
                },
            ),
        ],
        "y",
    );
    assert!(violation
        .explanation
        .contains("two writes returned version v4"));
}

#[test]
fn operations_that_touch_at_a_tick_overlap() {
    assert_linearizable(vec![
        done(1, 0, 5, KvOp::put("k", "a"), KvOutcome::Put(1)),
        done(2, 5, 6, KvOp::get("k"), KvOutcome::Got(None)),
    ]);
}

#[test]
fn the_budget_ends_a_hopeless_search_with_unknown() {
    // Twenty writes nobody heard back from, and a read of a value none of
    // them wrote: proving that takes every subset of the twenty.
    let mut operations: Vec<Operation> = (0..20)
        .map(|client| lost(client, client, KvOp::put("k", format!("{client}"))))
        .collect();
    operations.push(done(99, 30, 31, KvOp::get("k"), got("never written", 50)));
    let history = History::new(operations).unwrap();
    let result = check(&history, Budget::steps(10_000));
    assert_eq!(
        result,
        CheckResult::Unknown {
            key: "k".to_owned(),
            steps: 10_000
        }
    );
}

#[test]
fn malformed_operations_are_refused() {
    let mismatch = done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Got(None));
    assert_eq!(
        History::new(vec![mismatch]),
        Err(HistoryError::OutcomeMismatch {
            index: 0,
            op: "put",
            outcome: "get result"
        })
    );
    let backwards = done(1, 5, 4, KvOp::get("k"), KvOutcome::Got(None));
    assert_eq!(
        History::new(vec![backwards]),
        Err(HistoryError::ReturnedBeforeInvoked {
            index: 0,
            invoked: 5,
            returned: 4
        })
    );
    let mut unreturned = done(1, 0, 1, KvOp::get("k"), KvOutcome::Got(None));
    unreturned.returned = None;
    assert_eq!(
        History::new(vec![unreturned]),
        Err(HistoryError::MissingReturn { index: 0 })
    );
}

#[test]
fn operations_display_for_explanations() {
    let binary = done(1, 0, 1, KvOp::put("k", vec![0xff; 30]), KvOutcome::Put(2));
    assert_eq!(
        binary.to_string(),
        "client 1 put(\"k\", <30 bytes: ff ff ff ff ff ff ff ff ff ff ff ff ..>) -> v2 [t0..t1]"
    );
    let mut gave_up = lost(2, 3, KvOp::cas("k", 2, "b"));
    gave_up.returned = Some(9);
    assert_eq!(
        gave_up.to_string(),
        "client 2 cas(\"k\", v2, \"b\") -> unknown [t3..inf, gave up at t9]"
    );
}

#[test]
fn a_version_seen_on_one_key_cannot_be_a_write_to_another() {
    // Per key this is fine: the lost put may have taken effect at v7. But
    // log entry 7 is the put to "x".
    let violation = assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("x", "a"), KvOutcome::Put(7)),
            lost(2, 2, KvOp::put("k", "b")),
            done(3, 5, 6, KvOp::get("k"), got("b", 7)),
        ],
        "k",
    );
    assert_eq!(violation.unplaced, vec![0, 2]);
    assert!(
        violation
            .explanation
            .contains("log entry v7 is write #0 to key \"x\""),
        "{violation}"
    );
    assert_violation(
        vec![
            done(1, 0, 1, KvOp::put("x", "a"), KvOutcome::Put(7)),
            lost(2, 2, KvOp::put("k", "b")),
            done(3, 5, 6, KvOp::cas("k", 7, "c"), KvOutcome::Cas(Ok(9))),
        ],
        "k",
    );
}

#[test]
fn a_budget_of_time_or_steps_is_enough_for_a_small_history() {
    let history = History::new(vec![
        done(1, 0, 1, KvOp::put("k", "a"), KvOutcome::Put(1)),
        done(2, 2, 3, KvOp::get("k"), got("a", 1)),
    ])
    .unwrap();
    let generous = std::time::Duration::from_secs(3600);
    assert_eq!(check(&history, generous), CheckResult::Ok);
    assert_eq!(check(&history, Budget::new(generous, 100)), CheckResult::Ok);
    // Two operations take more than one step.
    assert!(matches!(
        check(&history, Budget::steps(1)),
        CheckResult::Unknown { .. }
    ));
}
