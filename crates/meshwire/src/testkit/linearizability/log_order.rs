//! What versions must satisfy across keys: they are indices of one log.
//!
//! The per-key search cannot see these: each key's part of the history
//! knows nothing of the other keys' versions.

use super::{History, KvOp, KvOutcome, Operation, Violation};
use std::collections::HashMap;

/// Checks, across keys, that no two writes returned the same version;
/// that a write which returned before another was invoked has the lower
/// version; and that a version an operation saw on a key (a read's, a
/// failed cas's current one, a successful cas's expected one) is not the
/// version of a write to another key.
pub(super) fn check_log_order(history: &History) -> Option<Violation> {
    let ops = history.operations();
    let mut writes: Vec<(u64, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| Some((operation.written_version()?, index)))
        .collect();
    writes.sort_unstable();
    for pair in writes.windows(2) {
        let ((version, first), (again, second)) = (pair[0], pair[1]);
        if version == again {
            let explanation = format!(
                "two writes returned version v{version}, which is one log entry:\n  #{first} {}\n  #{second} {}",
                ops[first], ops[second]
            );
            return Some(violation(history, second, vec![first, second], explanation));
        }
    }
    // Walking up the versions, remember the write invoked last so far: a
    // higher version that returned before it was invoked is out of order.
    let mut invoked_last: Option<usize> = None;
    for &(version, index) in &writes {
        if let Some(lower) = invoked_last {
            let returned = ops[index].returned.unwrap_or(u64::MAX);
            if returned < ops[lower].invoked {
                let explanation = format!(
                    "write #{index} took v{version} and returned at t{returned}, before write \
                     #{lower} was invoked at t{}, yet #{lower} has the lower version: log indices \
                     are handed out in order.\n  #{index} {}\n  #{lower} {}",
                    ops[lower].invoked, ops[index], ops[lower]
                );
                return Some(violation(history, lower, vec![index, lower], explanation));
            }
        }
        if invoked_last.is_none_or(|last| ops[index].invoked > ops[last].invoked) {
            invoked_last = Some(index);
        }
    }
    let writer: HashMap<u64, usize> = writes.into_iter().collect();
    for (index, operation) in ops.iter().enumerate() {
        let Some(seen) = seen_version(operation) else {
            continue;
        };
        let Some(&write) = writer.get(&seen) else {
            continue;
        };
        if ops[write].op.key() != operation.op.key() {
            let explanation = format!(
                "#{index} found key {:?} at v{seen}, but log entry v{seen} is write #{write} to \
                 key {:?}.\n  #{index} {}\n  #{write} {}",
                operation.op.key(),
                ops[write].op.key(),
                operation,
                ops[write]
            );
            return Some(violation(history, index, vec![write, index], explanation));
        }
    }
    None
}

/// The version a completed operation says its key had (never 0: absent
/// is no write's).
fn seen_version(operation: &Operation) -> Option<u64> {
    let seen = match (&operation.op, &operation.outcome) {
        (_, KvOutcome::Got(Some((_, version)))) => *version,
        (_, KvOutcome::Cas(Err(current))) => *current,
        (KvOp::Cas { expected, .. }, KvOutcome::Cas(Ok(_))) => *expected,
        _ => return None,
    };
    (seen != 0).then_some(seen)
}

/// A violation blamed on `blamed`'s key, with no partial linearization.
fn violation(
    history: &History,
    blamed: usize,
    unplaced: Vec<usize>,
    explanation: String,
) -> Violation {
    Violation {
        key: history.operations()[blamed].op.key().to_owned(),
        linearized: Vec::new(),
        unplaced,
        explanation,
    }
}
