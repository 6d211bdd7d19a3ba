//! Histories generated from a sequential simulation of a correct map,
//! with random overlapping intervals around each operation's moment of
//! effect: they must all pass. Then corruptions of them that are provably
//! not linearizable: they must all be flagged.

use super::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Ticks between two consecutive moments of effect.
const SPACING: u64 = 10;

/// What the simulated client does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Put,
    Delete,
    /// A cas from the key's current version: it succeeds.
    CasHit,
    /// A cas from another version: it fails.
    CasMiss,
}

/// Whether the client learned the outcome.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Known,
    /// It took effect; the client timed out.
    UnknownApplied,
    /// It never took effect; the client timed out.
    UnknownDropped,
}

/// One simulated operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    key: u8,
    kind: Kind,
    value: u8,
    /// Ticks from invocation to the moment of effect.
    lead: u64,
    /// Ticks from the moment of effect to the return.
    lag: u64,
    /// Log entries other maps took before this write's.
    gap: u64,
    fate: Fate,
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Get),
        3 => Just(Kind::Put),
        1 => Just(Kind::Delete),
        2 => Just(Kind::CasHit),
        1 => Just(Kind::CasMiss),
    ]
}

fn fate_strategy() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Known),
        1 => Just(Fate::UnknownApplied),
        1 => Just(Fate::UnknownDropped),
    ]
}

pub(super) fn step_strategy(keys: u8) -> impl Strategy<Value = Step> {
    (
        0..keys,
        kind_strategy(),
        0..4u8,
        0..4 * SPACING,
        0..4 * SPACING,
        0..3u64,
        fate_strategy(),
    )
        .prop_map(|(key, kind, value, lead, lag, gap, fate)| Step {
            key,
            kind,
            value,
            lead,
            lag,
            gap,
            fate,
        })
}

/// The same steps from a seeded generator, for histories too long to
/// shrink.
fn random_steps(rng: &mut SmallRng, count: usize, keys: u8, overlap: u64) -> Vec<Step> {
    (0..count)
        .map(|_| Step {
            key: rng.random_range(0..keys),
            kind: match rng.random_range(0..10) {
                0..3 => Kind::Get,
                3..6 => Kind::Put,
                6 => Kind::Delete,
                7..9 => Kind::CasHit,
                _ => Kind::CasMiss,
            },
            value: rng.random_range(0..4),
            lead: rng.random_range(0..overlap * SPACING),
            lag: rng.random_range(0..overlap * SPACING),
            gap: rng.random_range(0..3),
            fate: match rng.random_range(0..20) {
                0 => Fate::UnknownApplied,
                1 => Fate::UnknownDropped,
                _ => Fate::Known,
            },
        })
        .collect()
}

/// Runs `steps` one after another against a correct map; step `i` takes
/// effect at tick `(i + 1) * SPACING`, inside its interval, so the order
/// of the steps is a linearization of the history.
pub(super) fn simulate(steps: &[Step]) -> History {
    let mut map: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
    let mut log = 0u64;
    let mut operations = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let effect_at = (i as u64 + 1) * SPACING;
        let key = format!("k{}", step.key);
        let value = format!("v{}", step.value).into_bytes();
        let current = map.get(&step.key).map_or(0, |(_, version)| *version);
        let applied = !matches!(step.fate, Fate::UnknownDropped);
        let mut next_version = || {
            log += 1 + step.gap;
            log
        };
        let (op, outcome) = match step.kind {
            Kind::Get => (KvOp::get(key), KvOutcome::Got(map.get(&step.key).cloned())),
            Kind::Put => {
                let version = if applied { next_version() } else { 0 };
                if applied {
                    map.insert(step.key, (value.clone(), version));
                }
                (KvOp::put(key, value), KvOutcome::Put(version))
            }
            Kind::Delete => {
                let version = if applied { next_version() } else { 0 };
                let existed = current != 0;
                if applied {
                    map.remove(&step.key);
                }
                (KvOp::delete(key), KvOutcome::Deleted { existed, version })
            }
            Kind::CasHit => {
                let version = if applied { next_version() } else { 0 };
                if applied {
                    map.insert(step.key, (value.clone(), version));
                }
                (KvOp::cas(key, current, value), KvOutcome::Cas(Ok(version)))
            }
            Kind::CasMiss => {
                let expected = current + 1 + u64::from(step.value);
                (
                    KvOp::cas(key, expected, value),
                    KvOutcome::Cas(Err(current)),
                )
            }
        };
        let known = matches!(step.fate, Fate::Known);
        operations.push(Operation {
            client: i as u64,
            invoked: effect_at.saturating_sub(step.lead),
            returned: known.then_some(effect_at + step.lag),
            op,
            outcome: if known { outcome } else { KvOutcome::Unknown },
        });
    }
    History::new(operations).expect("the simulation records well-formed operations")
}

/// Enough steps for any history the proptests make; a step budget, not a
/// time budget, so the answer does not depend on the machine's load.
const BUDGET: u64 = 5_000_000;

proptest! {
    #[test]
    fn simulated_histories_are_linearizable(
        steps in prop::collection::vec(step_strategy(3), 0..80),
    ) {
        let history = simulate(&steps);
        let result = check(&history, Budget::steps(BUDGET));
        prop_assert!(result.is_ok(), "{}", result);
    }

    #[test]
    fn provable_corruptions_are_flagged(
        steps in prop::collection::vec(step_strategy(3), 1..60),
        corruption in 0..5usize,
        pick in any::<prop::sample::Index>(),
    ) {
        let history = simulate(&steps);
        let corrupted = corrupt(&history, corruption, pick);
        let result = check(&corrupted, Budget::steps(BUDGET));
        prop_assert!(result.violation().is_some(), "corruption {}: {}", corruption, result);
    }
}

/// Pairs `(earlier, later)` of operations on one key where `earlier` is a
/// completed write that returned before `later` was invoked, and both
/// pass their filters.
fn ordered_pairs(
    ops: &[Operation],
    earlier: impl Fn(&Operation) -> bool,
    later: impl Fn(&Operation) -> bool,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, first) in ops.iter().enumerate() {
        let Some(returned) = first.returned.filter(|_| first.written_version().is_some()) else {
            continue;
        };
        if !earlier(first) {
            continue;
        }
        for (j, second) in ops.iter().enumerate() {
            if second.op.key() == first.op.key() && returned < second.invoked && later(second) {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

fn is_known_get(operation: &Operation) -> bool {
    matches!(operation.outcome, KvOutcome::Got(_))
}

/// Changes `history` so that it provably has no linearization, in the
/// way `corruption` names, at a place chosen by `pick`. When the history
/// offers no place for it, the same flaw is appended on a key of its own.
fn corrupt(history: &History, corruption: usize, pick: prop::sample::Index) -> History {
    let mut ops = history.operations().to_vec();
    let end = ops
        .iter()
        .map(|op| op.returned.unwrap_or(op.invoked).max(op.invoked))
        .max()
        .unwrap_or(0)
        + 1;
    let top_version = ops
        .iter()
        .filter_map(Operation::written_version)
        .max()
        .unwrap_or(0);
    let chosen = |pairs: Vec<(usize, usize)>| (!pairs.is_empty()).then(|| *pick.get(&pairs));
    let op_at = |invoked, op, outcome| Operation {
        client: 1000,
        invoked,
        returned: Some(invoked + 1),
        op,
        outcome,
    };
    // The appended fallbacks start with a write the flaw contradicts.
    let fresh_version = top_version + 1;
    let fresh = op_at(end, KvOp::put("fresh", "w"), KvOutcome::Put(fresh_version));
    let append = |ops: &mut Vec<Operation>, flawed: Operation| ops.extend([fresh.clone(), flawed]);
    match corruption {
        // Stale read: a read after a completed write sees a version below
        // that write's; versions on a key only grow.
        0 => match chosen(ordered_pairs(&ops, |_| true, is_known_get)) {
            Some((write, read)) => {
                let below = ops[write].written_version().unwrap_or(1) - 1;
                ops[read].outcome = KvOutcome::Got(Some((b"v0".to_vec(), below)));
            }
            None => append(
                &mut ops,
                op_at(
                    end + 2,
                    KvOp::get("fresh"),
                    KvOutcome::Got(Some((b"w".to_vec(), top_version))),
                ),
            ),
        },
        // Lost write: a read after a completed put or cas sees the key
        // absent, on a key that nothing ever deletes.
        1 => {
            let deleted: Vec<&str> = ops
                .iter()
                .filter(|op| matches!(op.op, KvOp::Delete { .. }))
                .map(|op| op.op.key())
                .collect();
            let sets_value = |op: &Operation| {
                !deleted.contains(&op.op.key()) && !matches!(op.op, KvOp::Delete { .. })
            };
            match chosen(ordered_pairs(&ops, sets_value, is_known_get)) {
                Some((_, read)) => ops[read].outcome = KvOutcome::Got(None),
                None => append(
                    &mut ops,
                    op_at(end + 2, KvOp::get("fresh"), KvOutcome::Got(None)),
                ),
            }
        }
        // Two cas from one version (not "absent") both succeed: after the
        // first the key's version is higher, or it is absent, for good.
        2 => {
            let pairs: Vec<(usize, usize)> = cas_successes(&ops);
            match chosen(pairs) {
                Some((first, second)) => {
                    if let (
                        KvOp::Cas { expected, .. },
                        KvOp::Cas {
                            expected: again, ..
                        },
                    ) = (ops[first].op.clone(), &mut ops[second].op)
                    {
                        *again = expected;
                    }
                }
                None => {
                    let cas = |at, version| {
                        op_at(
                            at,
                            KvOp::cas("fresh", fresh_version, "c"),
                            KvOutcome::Cas(Ok(version)),
                        )
                    };
                    append(&mut ops, cas(end + 2, fresh_version + 1));
                    ops.push(cas(end + 2, fresh_version + 2));
                }
            }
        }
        // A write after a completed write returns a version not above it.
        3 => match chosen(ordered_pairs(
            &ops,
            |_| true,
            |op| op.written_version().is_some(),
        )) {
            Some((first, second)) => {
                let version = ops[first].written_version().unwrap_or(0);
                set_written_version(&mut ops[second], version);
            }
            None => append(
                &mut ops,
                op_at(
                    end + 2,
                    KvOp::put("fresh", "x"),
                    KvOutcome::Put(fresh_version),
                ),
            ),
        },
        // A read of a value nobody wrote.
        _ => {
            let reads: Vec<usize> = (0..ops.len())
                .filter(|&i| matches!(ops[i].outcome, KvOutcome::Got(Some(_))))
                .collect();
            if reads.is_empty() {
                let never = KvOutcome::Got(Some((b"never written".to_vec(), fresh_version)));
                append(&mut ops, op_at(end + 2, KvOp::get("fresh"), never));
            } else {
                let read = *pick.get(&reads);
                if let KvOutcome::Got(Some((value, _))) = &mut ops[read].outcome {
                    *value = b"never written".to_vec();
                }
            }
        }
    }
    History::new(ops).expect("corruptions keep operations well formed")
}

/// Pairs of successful, completed cas on one key, the first from a
/// version other than "absent", the second not before the first.
fn cas_successes(ops: &[Operation]) -> Vec<(usize, usize)> {
    let succeeded = |op: &Operation| matches!(op.outcome, KvOutcome::Cas(Ok(_)));
    let mut pairs = Vec::new();
    for (i, first) in ops.iter().enumerate() {
        let KvOp::Cas { key, expected, .. } = &first.op else {
            continue;
        };
        if *expected == 0 || !succeeded(first) {
            continue;
        }
        // Either order of effect is fine: both cannot succeed.
        for (j, second) in ops.iter().enumerate() {
            if j != i && second.op.key() == key && succeeded(second) {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

fn set_written_version(operation: &mut Operation, to: u64) {
    match &mut operation.outcome {
        KvOutcome::Put(version)
        | KvOutcome::Deleted { version, .. }
        | KvOutcome::Cas(Ok(version)) => *version = to,
        _ => {}
    }
}

/// A few thousand operations over many keys, with unknown outcomes: the
/// figures are printed for the record, not asserted.
#[test]
fn a_long_history_over_many_keys_checks_quickly() {
    let seed = 0x6c69_6e63;
    let mut rng = SmallRng::seed_from_u64(seed);
    // (operations, keys, how many spacings an interval reaches either side)
    for (count, keys, overlap) in [(5000, 64, 20), (2000, 1, 8)] {
        let history = simulate(&random_steps(&mut rng, count, keys, overlap));
        let started = std::time::Instant::now();
        let result = check(&history, Budget::steps(50_000_000));
        eprintln!(
            "checked {count} operations on {keys} keys in {:?} (seed {seed:#x})",
            started.elapsed()
        );
        assert!(result.is_ok(), "seed {seed:#x}: {result}");
    }
}
