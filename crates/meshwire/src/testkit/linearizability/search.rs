//! Wing & Gong's search with Lowe's memoization, over one key's
//! operations, as porcupine does it.
//!
//! The operations' calls and returns sit in one time-ordered, doubly
//! linked list. The search walks it from the front: at a call it tries to
//! make that operation take effect now (the model must accept it, and the
//! pair (operations done, state) must be new); if so it lifts the call and
//! its return out of the list and starts again from the front. Reaching a
//! return means its operation can no longer wait: the search undoes the
//! last choice and tries the next candidate after it. An empty list is a
//! linearization; undoing with nothing left to undo proves there is none.

use super::model::{KeyState, ModelOp, ValueId};
use super::{History, KvOp, KvOutcome};
use std::collections::HashMap;
use std::collections::HashSet;
use std::time::Instant;

/// One key's operations, ready for the search.
pub(super) struct KeyHistory<'h> {
    /// Where each operation is in the history.
    pub(super) indices: Vec<usize>,
    ops: Vec<ModelOp>,
    invoked: Vec<u64>,
    /// When each must have taken effect: its return, or `u64::MAX`.
    deadline: Vec<u64>,
    /// The interned values, by id.
    values: Vec<&'h [u8]>,
}

impl<'h> KeyHistory<'h> {
    /// The operations of `history` at `indices` (all on one key), less
    /// unknown `get`s: they have no effect and saw nothing.
    pub(super) fn new(history: &'h History, indices: &[usize]) -> Self {
        let mut interned: HashMap<&'h [u8], ValueId> = HashMap::new();
        let mut values = Vec::new();
        let mut intern = |value: &'h [u8]| {
            *interned.entry(value).or_insert_with(|| {
                values.push(value);
                // A key with more than u32::MAX distinct values would not
                // fit in memory long before this saturates.
                ValueId::try_from(values.len() - 1).unwrap_or(ValueId::MAX)
            })
        };
        let mut key = KeyHistory {
            indices: Vec::with_capacity(indices.len()),
            ops: Vec::with_capacity(indices.len()),
            invoked: Vec::with_capacity(indices.len()),
            deadline: Vec::with_capacity(indices.len()),
            values: Vec::new(),
        };
        for &index in indices {
            let operation = &history.operations()[index];
            let op = match (&operation.op, &operation.outcome) {
                (KvOp::Get { .. }, KvOutcome::Got(seen)) => ModelOp::Get {
                    seen: seen
                        .as_ref()
                        .map(|(value, version)| (intern(value), *version)),
                },
                (KvOp::Get { .. }, _) => continue,
                (KvOp::Put { value, .. }, outcome) => ModelOp::Put {
                    value: intern(value),
                    version: match outcome {
                        KvOutcome::Put(version) => Some(*version),
                        _ => None,
                    },
                },
                (KvOp::Delete { .. }, outcome) => ModelOp::Delete {
                    outcome: match outcome {
                        KvOutcome::Deleted { existed, version } => Some((*existed, *version)),
                        _ => None,
                    },
                },
                (
                    KvOp::Cas {
                        expected, value, ..
                    },
                    outcome,
                ) => ModelOp::Cas {
                    expected: *expected,
                    value: intern(value),
                    outcome: match outcome {
                        KvOutcome::Cas(result) => Some(*result),
                        _ => None,
                    },
                },
            };
            key.indices.push(index);
            key.ops.push(op);
            key.invoked.push(operation.invoked);
            key.deadline.push(operation.deadline());
        }
        key.values = values;
        key
    }

    /// How many operations take part in the search.
    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }

    /// The model's view of operation `local`.
    pub(super) fn op(&self, local: usize) -> ModelOp {
        self.ops[local]
    }

    /// The bytes of an interned value.
    pub(super) fn value(&self, id: ValueId) -> &'h [u8] {
        self.values.get(id as usize).copied().unwrap_or_default()
    }

    /// The operations that could come right after `done` (local indices):
    /// not done, and invoked by the earliest deadline of those not done.
    /// Also returns the operation with that deadline, which had to be one
    /// of them.
    pub(super) fn frontier(&self, done: &[usize]) -> (Vec<usize>, Option<usize>) {
        let mut is_done = vec![false; self.len()];
        for &local in done {
            is_done[local] = true;
        }
        let waiting = || (0..self.len()).filter(|&local| !is_done[local]);
        let first_due = waiting().min_by_key(|&local| (self.deadline[local], local));
        let Some(first_due) = first_due else {
            return (Vec::new(), None);
        };
        let due = self.deadline[first_due];
        let mut next: Vec<usize> = waiting()
            .filter(|&local| self.invoked[local] <= due)
            .collect();
        next.sort_by_key(|&local| (self.invoked[local], local));
        (next, Some(first_due))
    }
}

/// Counts the work of one [`super::check`] against its budget, across
/// keys.
pub(super) struct Meter {
    steps_left: u64,
    deadline: Option<Instant>,
    taken: u64,
}

impl Meter {
    /// Reading the clock costs more than a step: look every this many.
    const CLOCK_EVERY: u64 = 1024;

    pub(super) fn new(budget: &super::Budget) -> Self {
        Self {
            steps_left: budget.steps,
            deadline: budget
                .time
                .and_then(|time| Instant::now().checked_add(time)),
            taken: 0,
        }
    }

    /// Takes one step; false once the budget is spent.
    fn take(&mut self) -> bool {
        if self.steps_left == 0 {
            return false;
        }
        self.steps_left -= 1;
        self.taken += 1;
        if self.taken % Self::CLOCK_EVERY == 0 {
            if let Some(deadline) = self.deadline {
                if Instant::now() >= deadline {
                    self.steps_left = 0;
                }
            }
        }
        true
    }

    /// Steps taken so far.
    pub(super) fn taken(&self) -> u64 {
        self.taken
    }
}

/// What the search found.
pub(super) enum Search {
    /// Some order of the key's operations fits the model.
    Linearizable,
    /// None does.
    Stuck(Stuck),
    /// The budget ran out first.
    OutOfBudget,
}

/// The furthest a failed search got.
pub(super) struct Stuck {
    /// The longest prefix of a linearization found (local indices, in
    /// order).
    pub(super) longest: Vec<usize>,
    /// The key's state after it.
    pub(super) state: KeyState,
}

/// A set of operations (local indices): the "done" half of the cache key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OpSet(Box<[u64]>);

impl OpSet {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, op: usize) {
        self.0[op / 64] |= 1 << (op % 64);
    }

    fn remove(&mut self, op: usize) {
        self.0[op / 64] &= !(1 << (op % 64));
    }
}

/// The end of the list.
const NIL: usize = usize::MAX;

/// Calls and returns in time order, as a doubly linked list over arrays:
/// node `i` is the call of operation `i`, node `len + i` its return, and
/// node `2 * len` the head. Lifting an operation unlinks both its nodes;
/// unlifting in the reverse order relinks them (dancing links).
struct Timeline {
    next: Vec<usize>,
    prev: Vec<usize>,
    len: usize,
}

impl Timeline {
    fn new(key: &KeyHistory<'_>) -> Self {
        let len = key.len();
        let mut nodes: Vec<usize> = (0..2 * len).collect();
        // At equal times calls go first: tied operations overlap.
        nodes.sort_by_key(|&node| match node.checked_sub(len) {
            None => (key.invoked[node], false, node),
            Some(op) => (key.deadline[op], true, node),
        });
        let head = 2 * len;
        let mut next = vec![NIL; 2 * len + 1];
        let mut prev = vec![NIL; 2 * len + 1];
        let mut last = head;
        for node in nodes {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Self { next, prev, len }
    }

    fn first(&self) -> usize {
        self.next[2 * self.len]
    }

    fn unlink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = after;
        if after != NIL {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = node;
        if after != NIL {
            self.prev[after] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(op);
        self.unlink(self.len + op);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.len + op);
        self.relink(op);
    }
}

/// Searches for a linearization of `key`'s operations.
pub(super) fn search(key: &KeyHistory<'_>, meter: &mut Meter) -> Search {
    let len = key.len();
    let mut timeline = Timeline::new(key);
    let mut state = KeyState::ABSENT;
    let mut done = OpSet::new(len);
    let mut seen: HashSet<(OpSet, KeyState), ahash::RandomState> = HashSet::default();
    // The operations made to take effect, each with the state before it.
    let mut taken: Vec<(usize, KeyState)> = Vec::new();
    let mut longest = Stuck {
        longest: Vec::new(),
        state,
    };
    let mut node = timeline.first();
    while timeline.first() != NIL {
        if !meter.take() {
            return Search::OutOfBudget;
        }
        if node < len {
            let op = node;
            if let Ok(after) = state.step(key.ops[op]) {
                done.insert(op);
                if seen.insert((done.clone(), after)) {
                    taken.push((op, state));
                    state = after;
                    timeline.lift(op);
                    if taken.len() > longest.longest.len() {
                        longest.longest = taken.iter().map(|&(op, _)| op).collect();
                        longest.state = state;
                    }
                    node = timeline.first();
                    continue;
                }
                done.remove(op);
            }
            node = timeline.next[node];
        } else {
            // A return: its operation had to take effect by now and did
            // not. Undo the latest choice and try what follows it.
            let Some((op, before)) = taken.pop() else {
                return Search::Stuck(longest);
            };
            done.remove(op);
            state = before;
            timeline.unlift(op);
            node = timeline.next[op];
        }
    }
    Search::Linearizable
}
