//! The token trie behind [`SubscriptionTable`](super::SubscriptionTable).
//!
//! Nodes live in one arena (`Vec`) and point at each other by index, with a
//! parent link in every node. That buys three things a `Box` tree does not:
//! pruning walks up without a path stack, matching backtracks without a
//! recursion or an explicit stack (so a 30 000-token pattern from a peer
//! cannot overflow the stack), and dropping the table is flat.

use crate::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::ops::ControlFlow;

use crate::wire::Subject;

const ROOT: usize = 0;

/// Everyone whose pattern ends at one point of the trie.
#[derive(Debug, Clone)]
pub(super) struct Subscribers<T> {
    /// Subscribers outside any queue group.
    pub(super) plain: HashSet<T>,
    /// Queue group name -> members. A group with no members is removed.
    pub(super) groups: HashMap<Subject, HashSet<T>>,
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Self {
            plain: HashSet::default(),
            groups: HashMap::default(),
        }
    }
}

impl<T: Eq + Hash> Subscribers<T> {
    pub(super) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn insert(&mut self, group: Option<&Subject>, who: T) -> bool {
        match group {
            None => self.plain.insert(who),
            Some(g) => match self.groups.get_mut(g) {
                Some(members) => members.insert(who),
                None => {
                    self.groups.insert(g.clone(), HashSet::from_iter([who]));
                    true
                }
            },
        }
    }

    fn remove(&mut self, group: Option<&Subject>, who: &T) -> bool {
        match group {
            None => {
                let found = self.plain.remove(who);
                shrink_sparse_set(&mut self.plain);
                found
            }
            Some(g) => {
                let Some(members) = self.groups.get_mut(g) else {
                    return false;
                };
                let found = members.remove(who);
                if members.is_empty() {
                    self.groups.remove(g);
                    shrink_sparse_map(&mut self.groups);
                } else {
                    shrink_sparse_set(members);
                }
                found
            }
        }
    }
}

/// Which of a node's two subscriber sets a pattern lands in.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The pattern ends at this node.
    Exact,
    /// The pattern is this node's path followed by `>`.
    Tail,
}

#[derive(Debug, Clone)]
struct Node<T> {
    parent: usize,
    /// The literal token on the edge from `parent`; `None` for the root and
    /// for `*` children. Kept so that pruning can unlink the node, and so
    /// that backtracking knows whether a `*` sibling is still to be tried.
    token: Option<Box<str>>,
    literal: HashMap<Box<str>, usize>,
    star: Option<usize>,
    exact: Subscribers<T>,
    tail: Subscribers<T>,
}

impl<T> Node<T> {
    fn new(parent: usize, token: Option<Box<str>>) -> Self {
        Self {
            parent,
            token,
            literal: HashMap::default(),
            star: None,
            exact: Subscribers::default(),
            tail: Subscribers::default(),
        }
    }
}

impl<T: Eq + Hash> Node<T> {
    fn is_unused(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.exact.is_empty()
            && self.tail.is_empty()
    }

    fn end_mut(&mut self, end: End) -> &mut Subscribers<T> {
        match end {
            End::Exact => &mut self.exact,
            End::Tail => &mut self.tail,
        }
    }
}

/// The token trie: literal children by token, one `*` child, and at every
/// node the subscribers of the pattern ending there and of that pattern
/// followed by `>`.
#[derive(Debug, Clone)]
pub(super) struct Trie<T> {
    /// `nodes[ROOT]` always exists; freed slots hold empty nodes.
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
}

impl<T> Trie<T> {
    pub(super) fn new() -> Self {
        Self {
            nodes: vec![Node::new(ROOT, None)],
            free: Vec::new(),
        }
    }

    /// Nodes in use, root included (1 when the trie is empty).
    #[cfg(test)]
    pub(super) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

impl<T: Eq + Hash> Trie<T> {
    /// Adds `who`; false if it was already there.
    pub(super) fn insert(&mut self, pattern: &Subject, group: Option<&Subject>, who: T) -> bool {
        let mut idx = ROOT;
        let mut end = End::Exact;
        let mut tokens = pattern.tokens().peekable();
        while let Some(tok) = tokens.next() {
            // A `>` that is not last is not a wildcard (Subject::pattern
            // rejects it; a peer may still send it): it is kept as a plain
            // token, which no well-formed literal subject contains.
            if tok == ">" && tokens.peek().is_none() {
                end = End::Tail;
                break;
            }
            idx = if tok == "*" {
                match self.nodes[idx].star {
                    Some(child) => child,
                    None => {
                        let child = self.alloc(idx, None);
                        self.nodes[idx].star = Some(child);
                        child
                    }
                }
            } else {
                match self.nodes[idx].literal.get(tok) {
                    Some(&child) => child,
                    None => {
                        let child = self.alloc(idx, Some(tok.into()));
                        self.nodes[idx].literal.insert(tok.into(), child);
                        child
                    }
                }
            };
        }
        self.nodes[idx].end_mut(end).insert(group, who)
    }

    /// Removes `who` and prunes nodes left empty; false if it was not there.
    pub(super) fn remove(&mut self, pattern: &Subject, group: Option<&Subject>, who: &T) -> bool {
        let Some((idx, end)) = self.find(pattern) else {
            return false;
        };
        if !self.nodes[idx].end_mut(end).remove(group, who) {
            return false;
        }
        self.prune(idx);
        true
    }

    fn find(&self, pattern: &Subject) -> Option<(usize, End)> {
        let mut idx = ROOT;
        let mut tokens = pattern.tokens().peekable();
        while let Some(tok) = tokens.next() {
            if tok == ">" && tokens.peek().is_none() {
                return Some((idx, End::Tail));
            }
            let node = &self.nodes[idx];
            idx = if tok == "*" {
                node.star?
            } else {
                *node.literal.get(tok)?
            };
        }
        Some((idx, End::Exact))
    }

    fn alloc(&mut self, parent: usize, token: Option<Box<str>>) -> usize {
        let node = Node::new(parent, token);
        match self.free.pop() {
            Some(idx) => {
                self.nodes[idx] = node;
                idx
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    fn prune(&mut self, mut idx: usize) {
        while idx != ROOT && self.nodes[idx].is_unused() {
            // Replacing (not just unlinking) drops the node's map buffers.
            let node = std::mem::replace(&mut self.nodes[idx], Node::new(ROOT, None));
            let parent = &mut self.nodes[node.parent];
            match node.token {
                Some(tok) => {
                    parent.literal.remove(&tok);
                    shrink_sparse_map(&mut parent.literal);
                }
                None => parent.star = None,
            }
            self.free.push(idx);
            idx = node.parent;
        }
        if idx == ROOT && self.nodes[ROOT].is_unused() {
            // Everything is gone: forget the free list rather than carry it.
            self.nodes.truncate(1);
            self.free.clear();
        }
    }

    /// Calls `visit` on every non-empty subscriber set whose pattern matches
    /// the literal `subject`, each at most once, stopping at `Break`.
    ///
    /// Depth-first without a stack: `pos` is the byte offset of the next
    /// token to match, and it can be rewound from the subject itself because
    /// every node on the current path consumed exactly one token. Wildcard
    /// tokens in `subject` are compared as plain text.
    pub(super) fn walk<B>(
        &self,
        subject: &str,
        mut visit: impl FnMut(&Subscribers<T>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let bytes = subject.as_bytes();
        let mut idx = ROOT;
        // `bytes.len() + 1` means every token has been consumed.
        let mut pos = 0;
        'enter: loop {
            let node = &self.nodes[idx];
            if pos > bytes.len() {
                if !node.exact.is_empty() {
                    visit(&node.exact)?;
                }
            } else {
                // At least one token remains, which is what `>` needs.
                if !node.tail.is_empty() {
                    visit(&node.tail)?;
                }
                let end = bytes[pos..]
                    .iter()
                    .position(|&b| b == b'.')
                    .map_or(bytes.len(), |i| pos + i);
                // `pos` and `end` sit next to ASCII dots or at the ends, so
                // they are char boundaries.
                let token = &subject[pos..end];
                if let Some(&child) = node.literal.get(token) {
                    idx = child;
                    pos = end + 1;
                    continue 'enter;
                }
                if let Some(child) = node.star {
                    idx = child;
                    pos = end + 1;
                    continue 'enter;
                }
            }
            // Backtrack to the nearest ancestor with an untried `*` branch.
            loop {
                if idx == ROOT {
                    return ControlFlow::Continue(());
                }
                let node = &self.nodes[idx];
                if node.token.is_some() {
                    if let Some(star) = self.nodes[node.parent].star {
                        // The `*` sibling consumes the same token: same `pos`.
                        idx = star;
                        continue 'enter;
                    }
                }
                pos = bytes[..pos - 1]
                    .iter()
                    .rposition(|&b| b == b'.')
                    .map_or(0, |i| i + 1);
                idx = node.parent;
            }
        }
    }
}

/// Hash tables never hand memory back by themselves; after a burst of
/// subscriptions churns away, keep what is in use plus slack, so that a
/// steady churn does not reallocate on every call.
pub(super) fn shrink_sparse_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 16 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink_sparse_map`] for sets.
pub(super) fn shrink_sparse_set<K: Eq + Hash>(set: &mut HashSet<K>) {
    if set.capacity() > 16 && set.len() * 4 < set.capacity() {
        set.shrink_to(set.len() * 2);
    }
}
