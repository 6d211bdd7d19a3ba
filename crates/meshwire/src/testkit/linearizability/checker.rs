//! [`check`]: splits a history per key, searches each key, checks the
//! version order across keys, and explains what it finds.

use super::log_order::check_log_order;
use super::model::KeyState;
use super::search::{search, KeyHistory, Meter, Search, Stuck};
use super::{History, KvOutcome, ShowBytes};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// How much work [`check`] may do before it answers
/// [`CheckResult::Unknown`]. Both limits apply; a `Duration` converts to a
/// budget of that much time and any number of steps.
///
/// A step is one move of the search. The search remembers a little for
/// every step it takes, so memory grows with steps: bound them for
/// histories that may be pathological.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Wall-clock time for the whole check; `None`: no limit.
    pub time: Option<Duration>,
    /// Search steps for the whole check; `u64::MAX`: no limit.
    pub steps: u64,
}

impl Budget {
    /// At most `time` and at most `steps` search steps, whichever runs out
    /// first.
    pub fn new(time: Duration, steps: u64) -> Self {
        Self {
            time: Some(time),
            steps,
        }
    }

    /// At most `steps` search steps, however long they take: the same
    /// answer on every machine, which is what a test wants.
    pub fn steps(steps: u64) -> Self {
        Self { time: None, steps }
    }
}

impl From<Duration> for Budget {
    fn from(time: Duration) -> Self {
        Self {
            time: Some(time),
            steps: u64::MAX,
        }
    }
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckResult {
    /// The history is linearizable.
    Ok,
    /// It is not.
    Violation(Violation),
    /// The budget ran out before the answer was known.
    Unknown {
        /// The key being searched when it ran out (later keys were not
        /// searched).
        key: String,
        /// Steps taken.
        steps: u64,
    },
}

impl CheckResult {
    /// Whether the history was proved linearizable.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// The violation, if one was found.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Self::Violation(violation) => Some(violation),
            _ => None,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("linearizable"),
            Self::Violation(violation) => violation.fmt(f),
            Self::Unknown { key, steps } => write!(
                f,
                "unknown: the budget ran out after {steps} steps, searching key {key:?}"
            ),
        }
    }
}

/// Why a history is not linearizable. Operations are named by their
/// index in [`History::operations`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The first key found with no linearization (for a version-order
    /// violation across keys: the key of the later write).
    pub key: String,
    /// The longest partial linearization of the key's operations found,
    /// in order. Empty for a version-order violation across keys.
    pub linearized: Vec<usize>,
    /// The operations that could not be placed: those that could come
    /// right after `linearized`, none of which fits (for a version-order
    /// violation: the two writes out of order).
    pub unplaced: Vec<usize>,
    /// The whole story in words, with the operations and the key's state.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// Checks whether `history` is linearizable for the map model of
/// [the module docs](super), within `budget` (a [`Duration`] or a
/// [`Budget`]).
///
/// Keys are searched in the order they first appear in the history; the
/// first that fails is reported. The cross-key version checks run even
/// when the budget ran out, since they cost little.
pub fn check(history: &History, budget: impl Into<Budget>) -> CheckResult {
    let mut meter = Meter::new(&budget.into());
    let mut out_of_budget = None;
    for (key, indices) in split_by_key(history) {
        let key_history = KeyHistory::new(history, &indices);
        match search(&key_history, &mut meter) {
            Search::Linearizable => {}
            Search::Stuck(stuck) => {
                return CheckResult::Violation(explain_stuck(history, key, &key_history, stuck))
            }
            Search::OutOfBudget => {
                out_of_budget = Some(key);
                break;
            }
        }
    }
    if let Some(violation) = check_log_order(history) {
        return CheckResult::Violation(violation);
    }
    match out_of_budget {
        Some(key) => CheckResult::Unknown {
            key: key.to_owned(),
            steps: meter.taken(),
        },
        None => CheckResult::Ok,
    }
}

/// The history's operation indices per key, keys in order of first
/// appearance (so a report names the same key on every run).
fn split_by_key(history: &History) -> Vec<(&str, Vec<usize>)> {
    let mut parts: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut part_of: HashMap<&str, usize> = HashMap::new();
    for (index, operation) in history.operations().iter().enumerate() {
        let key = operation.op.key();
        let part = *part_of.entry(key).or_insert_with(|| {
            parts.push((key, Vec::new()));
            parts.len() - 1
        });
        parts[part].1.push(index);
    }
    parts
}

/// How many operations of a long linearization an explanation shows: the
/// last ones, where it went wrong.
const SHOWN_LINEARIZED: usize = 12;

fn explain_stuck(history: &History, key: &str, ops: &KeyHistory<'_>, stuck: Stuck) -> Violation {
    let show = |local: usize| {
        let index = ops.indices[local];
        format!("#{index} {}", history.operations()[index])
    };
    let state = stuck.state.describe(|id| ShowBytes(ops.value(id)));
    let mut text = format!(
        "key {key:?} is not linearizable: no order of its {} operations fits the model.\n",
        ops.len()
    );
    // Writing to a String cannot fail; the results are ignored.
    let _ = writeln!(
        text,
        "The longest linearization found places {} of them:",
        stuck.longest.len()
    );
    let hidden = stuck.longest.len().saturating_sub(SHOWN_LINEARIZED);
    if hidden > 0 {
        let _ = writeln!(text, "  ... {hidden} before these");
    }
    // Replay it to say, for each unknown outcome, what the search took it
    // to be: an unknown cas may have failed where it stands.
    let mut replayed = KeyState::ABSENT;
    for (position, &local) in stuck.longest.iter().enumerate() {
        let before = replayed;
        replayed = before.step(ops.op(local)).unwrap_or(before);
        if position < hidden {
            continue;
        }
        let note = match history.operations()[ops.indices[local]].outcome {
            KvOutcome::Unknown if replayed == before => " (no effect here)",
            KvOutcome::Unknown => " (took effect here)",
            _ => "",
        };
        let _ = writeln!(text, "  {}{note}", show(local));
    }
    let _ = writeln!(text, "after which {state}.");
    let (next, first_due) = ops.frontier(&stuck.longest);
    let _ = writeln!(text, "None of the operations that could come next fits:");
    for &local in &next {
        let why = match stuck.state.step(ops.op(local)) {
            Err(rejection) => rejection.to_string(),
            Ok(_) => "it fits here, but every way on from there fails later".to_owned(),
        };
        let _ = writeln!(text, "  {}: {why}", show(local));
    }
    if let Some(first_due) = first_due {
        let index = ops.indices[first_due];
        if let Some(returned) = history.operations()[index].returned {
            let _ = write!(
                text,
                "and #{index} had to take effect by t{returned}, when it returned."
            );
        }
    }
    Violation {
        key: key.to_owned(),
        linearized: stuck
            .longest
            .iter()
            .map(|&local| ops.indices[local])
            .collect(),
        unplaced: next.iter().map(|&local| ops.indices[local]).collect(),
        explanation: text,
    }
}
