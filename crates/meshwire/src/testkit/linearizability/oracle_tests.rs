//! The memoized search against the plainest possible oracle: trying every
//! order of a few operations. Both sides use the same model (`model.rs`
//! has its own tests); this holds the search to it, in both directions.

use super::model::KeyState;
use super::search::{search, KeyHistory, Meter, Search};
use super::simulation_tests::{simulate, step_strategy};
use super::*;
use proptest::prelude::*;

/// Whether some order of the key's operations that respects real time
/// (`x` may go next unless some remaining `y` returned before `x` was
/// invoked) fits the model: every order, tried one by one.
fn brute_force(key: &KeyHistory<'_>, ops: &[Operation]) -> bool {
    fn extend(
        key: &KeyHistory<'_>,
        ops: &[Operation],
        left: &mut Vec<usize>,
        state: KeyState,
    ) -> bool {
        if left.is_empty() {
            return true;
        }
        for position in 0..left.len() {
            let candidate = left[position];
            let invoked = ops[key.indices[candidate]].invoked;
            let blocked = left
                .iter()
                .any(|&other| ops[key.indices[other]].deadline() < invoked);
            if blocked {
                continue;
            }
            if let Ok(after) = state.step(key.op(candidate)) {
                left.remove(position);
                let found = extend(key, ops, left, after);
                left.insert(position, candidate);
                if found {
                    return true;
                }
            }
        }
        false
    }
    let mut left: Vec<usize> = (0..key.len()).collect();
    extend(key, ops, &mut left, KeyState::ABSENT)
}

/// Any operation on key "k0" with small values, versions and times, so
/// that outcomes clash often.
fn arbitrary_operation() -> impl Strategy<Value = Operation> {
    let outcome = (0..4u8, 0..2u8, 0..5u64, any::<bool>(), 0..5u64);
    let time = (0..12u64, 0..6u64, prop::bool::weighted(0.2));
    (outcome, time).prop_map(|((kind, value, version, flag, expected), time)| {
        let (start, length, unknown) = time;
        let value = vec![b'a' + value];
        let (op, outcome) = match kind {
            0 => {
                let seen = flag.then_some((value, version));
                (KvOp::get("k0"), KvOutcome::Got(seen))
            }
            1 => (KvOp::put("k0", value), KvOutcome::Put(version)),
            2 => {
                let existed = flag;
                (KvOp::delete("k0"), KvOutcome::Deleted { existed, version })
            }
            _ => {
                let result = if flag { Ok(version) } else { Err(version) };
                (KvOp::cas("k0", expected, value), KvOutcome::Cas(result))
            }
        };
        Operation {
            client: start,
            invoked: start,
            returned: (!unknown).then_some(start + length),
            op,
            outcome: if unknown { KvOutcome::Unknown } else { outcome },
        }
    })
}

/// Nudges one thing about one operation (a version by one, a flag, a
/// value, a time), which lands near the edge of linearizability.
fn nudge(operation: &mut Operation, how: u8) {
    match (how % 4, &mut operation.outcome) {
        (0, KvOutcome::Got(Some((_, version))))
        | (0, KvOutcome::Put(version))
        | (0, KvOutcome::Deleted { version, .. })
        | (0, KvOutcome::Cas(Ok(version) | Err(version))) => {
            *version = if how < 128 {
                *version + 1
            } else {
                version.saturating_sub(1)
            }
        }
        (1, KvOutcome::Got(seen)) => *seen = seen.is_none().then(|| (b"v0".to_vec(), 1)),
        (1, KvOutcome::Deleted { existed, .. }) => *existed = !*existed,
        (1, KvOutcome::Cas(result)) => *result = result.map_or_else(Ok, Err),
        (2, KvOutcome::Got(Some((value, _)))) => *value = b"v1".to_vec(),
        _ => {
            // Move the interval, keeping it an interval.
            let shift = u64::from(how % 32);
            operation.invoked += shift;
            if let Some(returned) = &mut operation.returned {
                *returned = (*returned).max(operation.invoked) + u64::from(how % 3);
            }
        }
    }
}

fn history_strategy() -> impl Strategy<Value = History> {
    let arbitrary = prop::collection::vec(arbitrary_operation(), 0..7)
        .prop_map(|operations| History::new(operations).unwrap());
    let nudged = (
        prop::collection::vec(step_strategy(1), 1..7),
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(steps, which, how)| {
            let mut operations = simulate(&steps).operations().to_vec();
            let which = which.index(operations.len());
            nudge(&mut operations[which], how);
            History::new(operations).unwrap()
        });
    prop_oneof![arbitrary, nudged]
}

proptest! {
    // Each case is cheap, and this is the test that holds the search to
    // its definition: run more of them.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_search_agrees_with_trying_every_order(history in history_strategy()) {
        let indices: Vec<usize> = (0..history.len()).collect();
        let key = KeyHistory::new(&history, &indices);
        let expected = brute_force(&key, history.operations());
        let mut meter = Meter::new(&Budget::steps(1_000_000));
        let found = match search(&key, &mut meter) {
            Search::Linearizable => true,
            Search::Stuck(_) => false,
            Search::OutOfBudget => panic!("a few operations cannot need a million steps"),
        };
        prop_assert_eq!(found, expected);
        // check() flags it too (it may also flag what only the log-order
        // rules see, such as two writes with one version).
        if !expected {
            prop_assert!(check(&history, Budget::steps(1_000_000)).violation().is_some());
        }
    }
}
