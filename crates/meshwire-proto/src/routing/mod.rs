//! The subscription table: who wants which subjects, with `*` and `>`
//! wildcards and queue groups (NATS semantics).
//!
//! A pattern is a path in a token trie: each node has literal children by
//! token, at most one `*` child, and two subscriber sets — patterns ending
//! at the node, and patterns ending at the node followed by `>`. Matching a
//! literal subject walks the literal and `*` branches token by token and
//! picks up every `>` set passed on the way, so its cost depends on the
//! subject's length, the wildcards in the table and the matches found, not
//! on the number of subscriptions. A second index, subscriber -> its
//! entries, makes [`SubscriptionTable::remove_all`] (a session or peer going
//! away) cheap and doubles as the set of entries for
//! [`SubscriptionTable::iter`].
//!
//! ```text
//!                                             pattern     subscribers
//!  root ─orders─► n1 ─eu─► n2  exact          orders.eu   s1
//!   │             ├──*───► n3  exact          orders.*    group q: s2, s3
//!   │             └ tail                      orders.>    s4
//!   └ tail                                    >           r9
//! ```
//!
//! Beside the table, [`matches`], [`covers`] and [`overlaps`] relate
//! patterns to subjects and to each other (what permissions are checked
//! with).
//!
//! The key `T` is whatever names a subscriber: `(session, sid)` for local
//! subscriptions, a `NodeId` for a router's peers.

mod algebra;
mod trie;

#[cfg(test)]
mod tests;

use crate::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::ops::ControlFlow;

use bytes::Bytes;

use crate::wire::Subject;
pub use algebra::{covers, matches, overlaps};
use trie::{shrink_sparse_map, shrink_sparse_set, Trie};

/// Subscriptions by pattern and queue group, for matching published subjects.
///
/// An entry is a triple (pattern, group, who); the same `who` may hold many
/// entries. Patterns are expected to be valid [`Subject::pattern`]s; the
/// table never panics on others (a `>` that is not the last token is then
/// an ordinary token).
#[derive(Clone)]
pub struct SubscriptionTable<T> {
    trie: Trie<T>,
    by_who: HashMap<T, HashSet<(Subject, Option<Subject>)>>,
    len: usize,
}

impl<T> SubscriptionTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            trie: Trie::new(),
            by_who: HashMap::default(),
            len: 0,
        }
    }

    /// The number of (pattern, group, who) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry as (pattern, group, who), in no particular order — for
    /// telling a peer our whole interest set.
    pub fn iter(&self) -> impl Iterator<Item = (&Subject, Option<&Subject>, &T)> + '_ {
        self.by_who.iter().flat_map(|(who, entries)| {
            entries
                .iter()
                .map(move |(pattern, group)| (pattern, group.as_ref(), who))
        })
    }
}

impl<T: Clone + Eq + Hash + Ord> SubscriptionTable<T> {
    /// Adds `who` under (`pattern`, `group`). Returns true if this exact
    /// triple was new, false if it was already present (nothing changes).
    pub fn insert(&mut self, pattern: &Subject, group: Option<&Subject>, who: T) -> bool {
        let key = (pattern.clone(), group.cloned());
        if self.by_who.get(&who).is_some_and(|e| e.contains(&key)) {
            return false;
        }
        // The table is long-lived, and a subject decoded from a frame shares
        // that frame's buffer: keep private copies so no buffer is pinned.
        let pattern = detach(pattern);
        let group = group.map(detach);
        let added = self.trie.insert(&pattern, group.as_ref(), who.clone());
        debug_assert!(added, "trie and by_who disagree");
        self.by_who.entry(who).or_default().insert((pattern, group));
        self.len += 1;
        true
    }

    /// Removes the triple; returns true if it existed. Trie nodes left
    /// empty are freed, so memory follows the live entries under churn.
    pub fn remove(&mut self, pattern: &Subject, group: Option<&Subject>, who: &T) -> bool {
        let Some(entries) = self.by_who.get_mut(who) else {
            return false;
        };
        if !entries.remove(&(pattern.clone(), group.cloned())) {
            return false;
        }
        if entries.is_empty() {
            self.by_who.remove(who);
            shrink_sparse_map(&mut self.by_who);
        } else {
            shrink_sparse_set(entries);
        }
        let removed = self.trie.remove(pattern, group, who);
        debug_assert!(removed, "trie and by_who disagree");
        self.len -= 1;
        true
    }

    /// Removes every entry of `who`, returning its (pattern, group) pairs,
    /// sorted.
    pub fn remove_all(&mut self, who: &T) -> Vec<(Subject, Option<Subject>)> {
        let Some(entries) = self.by_who.remove(who) else {
            return Vec::new();
        };
        shrink_sparse_map(&mut self.by_who);
        let mut removed: Vec<_> = entries.into_iter().collect();
        for (pattern, group) in &removed {
            let found = self.trie.remove(pattern, group.as_ref(), who);
            debug_assert!(found, "trie and by_who disagree");
        }
        self.len -= removed.len();
        removed.sort_unstable();
        removed
    }

    /// True when (`pattern`, `group`, `who`) is in the table.
    pub fn contains(&self, pattern: &Subject, group: Option<&Subject>, who: &T) -> bool {
        self.by_who
            .get(who)
            .is_some_and(|e| e.contains(&(pattern.clone(), group.cloned())))
    }

    /// Fills `out` (cleared first) with everyone whose patterns match the
    /// literal `subject`.
    ///
    /// `out.plain` holds each matching subscriber outside a queue group once,
    /// however many of its patterns match, in ascending order. `out.groups`
    /// holds each queue group with a matching member, sorted by name, with
    /// its distinct matching members in ascending order. A subscriber with
    /// both kinds of entries appears in both. Wildcard tokens in `subject`
    /// are compared as plain text.
    ///
    /// Meant to be called once per published message with the same `out`:
    /// its vectors, including the per-group ones, are reused, so a warm call
    /// allocates nothing.
    pub fn matches(&self, subject: &Subject, out: &mut Matches<T>) {
        out.clear();
        let _ = self.trie.walk(subject.as_str(), |subs| {
            out.plain.extend(subs.plain.iter().cloned());
            for (name, members) in &subs.groups {
                let mut list = out.spare.pop().unwrap_or_default();
                list.extend(members.iter().cloned());
                out.groups.push((name.clone(), list));
            }
            ControlFlow::<()>::Continue(())
        });
        // Several matching patterns of one subscriber give duplicates; a
        // sort also makes the order independent of hash seeds.
        out.plain.sort_unstable();
        out.plain.dedup();
        out.merge_groups();
    }

    /// True when anyone (plain or in a group) matches the literal `subject`.
    /// Stops at the first hit and copies nothing.
    pub fn has_match(&self, subject: &Subject) -> bool {
        self.trie
            .walk(subject.as_str(), |_| ControlFlow::Break(()))
            .is_break()
    }
}

impl<T> Default for SubscriptionTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for SubscriptionTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTable")
            .field("entries", &self.len)
            .field("subscribers", &self.by_who.len())
            .finish_non_exhaustive()
    }
}

/// A copy of `s` in its own buffer.
fn detach(s: &Subject) -> Subject {
    // `s` is already non-empty UTF-8, so the fallback is never taken.
    Subject::from_bytes(Bytes::copy_from_slice(s.as_bytes())).unwrap_or_else(|_| s.clone())
}

/// The result of [`SubscriptionTable::matches`]; keep one and pass it to
/// every call so its allocations are reused.
#[derive(Clone)]
pub struct Matches<T> {
    /// Matching subscribers outside queue groups, once each, ascending.
    pub plain: Vec<T>,
    /// Each queue group with a matching member, by name, with its distinct
    /// matching members, ascending.
    pub groups: Vec<(Subject, Vec<T>)>,
    /// Emptied member vectors of earlier calls, kept for their capacity.
    spare: Vec<Vec<T>>,
}

impl<T> Matches<T> {
    /// An empty result.
    pub fn new() -> Self {
        Self {
            plain: Vec::new(),
            groups: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Empties the result, keeping every allocation for the next use.
    pub fn clear(&mut self) {
        self.plain.clear();
        for (_, mut members) in self.groups.drain(..) {
            members.clear();
            self.spare.push(members);
        }
    }

    /// True when nobody matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

impl<T: Ord> Matches<T> {
    /// Joins the entries of one group contributed by different patterns,
    /// then sorts and de-duplicates every member list.
    fn merge_groups(&mut self) {
        if self.groups.len() > 1 {
            self.groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            // Slots after `kept` (up to `i`) are spent: their lists moved out.
            let mut kept = 0;
            for i in 1..self.groups.len() {
                if self.groups[i].0 == self.groups[kept].0 {
                    let mut members = std::mem::take(&mut self.groups[i].1);
                    self.groups[kept].1.append(&mut members);
                    self.spare.push(members);
                } else {
                    kept += 1;
                    self.groups.swap(kept, i);
                }
            }
            self.groups.truncate(kept + 1);
        }
        for (_, members) in &mut self.groups {
            members.sort_unstable();
            members.dedup();
        }
    }
}

impl<T> Default for Matches<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for Matches<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matches")
            .field("plain", &self.plain)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}
