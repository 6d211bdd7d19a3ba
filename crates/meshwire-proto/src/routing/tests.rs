use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn pat(s: &str) -> Subject {
    Subject::pattern(s).unwrap()
}

fn lit(s: &str) -> Subject {
    Subject::literal(s).unwrap()
}

fn matched(table: &SubscriptionTable<u32>, subject: &str) -> Matches<u32> {
    let mut out = Matches::new();
    table.matches(&lit(subject), &mut out);
    out
}

/// The reference: NATS matching written as directly as possible.
fn naive_match(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, tok) in p.iter().enumerate() {
        if *tok == ">" && i + 1 == p.len() {
            return s.len() > i;
        }
        match s.get(i) {
            Some(t) if *tok == "*" || tok == t => {}
            _ => return false,
        }
    }
    p.len() == s.len()
}

#[test]
fn wildcard_rules() {
    let yes = ["a.b", "a.*", "*.b", "*.*", "a.>", ">"];
    let no = ["a.b.>", "a", "a.b.c", "*", "b.*", "a.c", "*.*.*", "a.*.>"];
    for p in yes.iter().chain(&no) {
        let mut table = SubscriptionTable::new();
        assert!(table.insert(&pat(p), None, 1u32));
        let hit = yes.contains(p);
        assert_eq!(table.has_match(&lit("a.b")), hit, "pattern {p}");
        assert_eq!(
            matched(&table, "a.b").plain,
            if hit { vec![1] } else { vec![] }
        );
    }

    let mut table = SubscriptionTable::new();
    table.insert(&pat("a.*.c"), None, 1u32);
    table.insert(&pat("a.>"), None, 2);
    table.insert(&pat("*"), None, 3);
    assert_eq!(matched(&table, "a.x.c").plain, [1, 2]);
    assert_eq!(matched(&table, "a.x.c.d").plain, [2]);
    assert_eq!(matched(&table, "a").plain, [3]);
    assert!(matched(&table, "b.x").is_empty());
    assert!(!table.has_match(&lit("b.x")));
}

#[test]
fn backtracking_tries_star_after_literal_at_every_depth() {
    let mut table = SubscriptionTable::new();
    for (who, p) in [
        "a.b.c", "a.b.*", "a.*.c", "a.*.*", "*.b.c", "*.*.*", "*.>", "a.b.c.>",
    ]
    .into_iter()
    .enumerate()
    {
        table.insert(&pat(p), None, who as u32);
    }
    assert_eq!(matched(&table, "a.b.c").plain, [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(matched(&table, "x.b.c").plain, [4, 5, 6]);
    assert_eq!(matched(&table, "a.b.c.d").plain, [6, 7]);
}

#[test]
fn plain_subscriber_is_reported_once() {
    let mut table = SubscriptionTable::new();
    for p in ["a.b", "a.*", "*.b", "a.>", ">"] {
        table.insert(&pat(p), None, 7u32);
    }
    table.insert(&pat("a.b"), None, 3);
    assert_eq!(table.len(), 6);
    assert_eq!(matched(&table, "a.b").plain, [3, 7]);
    assert_eq!(matched(&table, "a.c").plain, [7]);
}

#[test]
fn queue_groups() {
    let q = pat("q");
    let r = pat("r");
    let mut table = SubscriptionTable::new();
    table.insert(&pat("orders.*"), Some(&q), 1u32);
    table.insert(&pat("orders.*"), Some(&q), 2);
    table.insert(&pat("orders.eu"), Some(&q), 2); // same member, second pattern
    table.insert(&pat("orders.>"), Some(&q), 3);
    table.insert(&pat("orders.eu"), Some(&r), 4);
    table.insert(&pat("orders.eu"), None, 1); // plain and grouped at once
    table.insert(&pat("billing.*"), Some(&q), 5);

    let out = matched(&table, "orders.eu");
    assert_eq!(out.plain, [1]);
    assert_eq!(
        out.groups,
        vec![(q.clone(), vec![1, 2, 3]), (r.clone(), vec![4])]
    );

    let out = matched(&table, "orders.us.west");
    assert!(out.plain.is_empty());
    assert_eq!(out.groups, vec![(q.clone(), vec![3])]);

    assert!(table.remove(&pat("orders.eu"), Some(&r), &4));
    assert_eq!(
        matched(&table, "orders.eu").groups,
        vec![(q, vec![1, 2, 3])]
    );
}

#[test]
fn insert_and_remove_report_changes() {
    let g = pat("g");
    let mut table = SubscriptionTable::new();
    assert!(table.is_empty());
    assert!(table.insert(&pat("a.*"), None, 1u32));
    assert!(!table.insert(&pat("a.*"), None, 1));
    assert!(table.insert(&pat("a.*"), Some(&g), 1));
    assert!(table.insert(&pat("a.*"), None, 2));
    assert_eq!(table.len(), 3);
    assert!(table.contains(&pat("a.*"), Some(&g), &1));

    assert!(!table.remove(&pat("a.*"), None, &3));
    assert!(!table.remove(&pat("a.b"), None, &1));
    assert!(!table.remove(&pat("a.*"), Some(&pat("h")), &1));
    assert!(table.remove(&pat("a.*"), None, &1));
    assert!(!table.remove(&pat("a.*"), None, &1));
    assert!(!table.contains(&pat("a.*"), None, &1));
    assert_eq!(table.len(), 2);
    assert_eq!(matched(&table, "a.x").plain, [2]);
    assert_eq!(matched(&table, "a.x").groups, vec![(g, vec![1])]);
}

#[test]
fn remove_all_returns_entries_and_leaves_others() {
    let g = pat("g");
    let mut table = SubscriptionTable::new();
    table.insert(&pat("a.>"), None, 1u32);
    table.insert(&pat("b"), Some(&g), 1);
    table.insert(&pat("a.b"), None, 1);
    table.insert(&pat("a.b"), None, 2);

    let gone = table.remove_all(&1);
    assert_eq!(
        gone,
        vec![(pat("a.>"), None), (pat("a.b"), None), (pat("b"), Some(g))]
    );
    assert_eq!(table.len(), 1);
    assert_eq!(matched(&table, "a.b").plain, [2]);
    assert!(!table.has_match(&lit("b")));
    assert!(table.remove_all(&1).is_empty());
    assert_eq!(table.remove_all(&2), vec![(pat("a.b"), None)]);
    assert!(table.is_empty());
    assert_eq!(table.trie.live_nodes(), 1);
}

#[test]
fn iter_lists_every_entry() {
    let g = pat("g");
    let mut table = SubscriptionTable::new();
    table.insert(&pat("a"), None, 1u32);
    table.insert(&pat("a"), Some(&g), 1);
    table.insert(&pat("b.>"), None, 2);
    let all: BTreeSet<_> = table
        .iter()
        .map(|(p, g, w)| (p.to_string(), g.map(|g| g.to_string()), *w))
        .collect();
    let want: BTreeSet<_> = [
        ("a".to_string(), None, 1),
        ("a".to_string(), Some("g".to_string()), 1),
        ("b.>".to_string(), None, 2),
    ]
    .into();
    assert_eq!(all, want);
}

#[test]
fn matches_reuses_its_buffers() {
    let q = pat("q");
    let mut table = SubscriptionTable::new();
    table.insert(&pat("a.*"), Some(&q), 1u32);
    table.insert(&pat("a.b"), Some(&q), 2);
    table.insert(&pat("a.b"), None, 3);

    let mut out = Matches::new();
    table.matches(&lit("a.b"), &mut out);
    assert_eq!(out.groups, vec![(q.clone(), vec![1, 2])]);
    let plain = out.plain.as_ptr();
    let members = out.groups[0].1.as_ptr();
    for _ in 0..3 {
        table.matches(&lit("a.b"), &mut out);
        assert_eq!(out.plain.as_ptr(), plain);
        assert!(out.spare.len() <= 1, "spare lists must not pile up");
        assert_eq!(out.groups, vec![(q.clone(), vec![1, 2])]);
    }
    // The merged list is one of the two reused per call.
    let reused =
        out.groups[0].1.as_ptr() == members || out.spare.iter().any(|v| v.as_ptr() == members);
    assert!(reused);

    table.matches(&lit("zzz"), &mut out);
    assert!(out.is_empty());
}

fn random_pattern(rng: &mut SmallRng) -> Subject {
    const TOKENS: [&str; 8] = ["a", "b", "c", "d", "e", "*", "x1", "yy"];
    let n = rng.random_range(1..=6);
    let mut tokens: Vec<&str> = (0..n)
        .map(|_| TOKENS[rng.random_range(0..TOKENS.len())])
        .collect();
    if rng.random_bool(0.2) {
        tokens.push(">");
    }
    pat(&tokens.join("."))
}

#[test]
fn churn_prunes_the_trie_to_nothing() {
    let mut rng = SmallRng::seed_from_u64(0x6d65_7368);
    let groups = [None, Some(pat("g1")), Some(pat("g2"))];
    let mut entries = Vec::new();
    let mut table = SubscriptionTable::new();
    while entries.len() < 10_000 {
        let p = random_pattern(&mut rng);
        let g = groups[rng.random_range(0..groups.len())].clone();
        let who = rng.random_range(0..50u32);
        if table.insert(&p, g.as_ref(), who) {
            entries.push((p, g, who));
        }
    }
    assert_eq!(table.len(), 10_000);
    entries.shuffle(&mut rng);

    let (gone, kept) = entries.split_at(5_000);
    for (p, g, who) in gone {
        assert!(table.remove(p, g.as_ref(), who));
    }
    // Pruning leaves exactly the nodes a fresh table of the survivors has.
    let mut fresh = SubscriptionTable::new();
    for (p, g, who) in kept {
        fresh.insert(p, g.as_ref(), *who);
    }
    assert_eq!(table.trie.live_nodes(), fresh.trie.live_nodes());

    for (p, g, who) in kept {
        assert!(table.remove(p, g.as_ref(), who));
    }
    assert!(table.is_empty());
    assert_eq!(table.iter().count(), 0);
    assert_eq!(table.trie.live_nodes(), 1);
    assert!(!table.has_match(&lit("a.b.c")));
}

#[test]
fn deep_subjects_do_not_use_the_stack() {
    // 32 767 tokens, the most a u16-length subject can hold; on a small
    // stack any recursion per token (insert, match, prune, drop) overflows.
    let deep = vec!["a"; 32_767].join(".");
    let handle = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let subject = Subject::from_bytes(Bytes::from(deep)).unwrap();
            let mut table = SubscriptionTable::new();
            table.insert(&subject, None, 1u32);
            table.insert(&pat("a.*.>"), None, 2);
            let mut out = Matches::new();
            table.matches(&subject, &mut out);
            assert_eq!(out.plain, [1, 2]);
            table.insert(&subject, None, 3);
            drop(table.clone());
            assert!(table.remove(&subject, None, &1));
            assert_eq!(table.remove_all(&3).len(), 1);
            assert_eq!(table.trie.live_nodes(), 3);
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn malformed_patterns_from_the_wire_do_not_panic() {
    let mut table = SubscriptionTable::new();
    for raw in ["a.>.b", "a..b", ".", "a*", "a.>"] {
        let s = Subject::from_bytes(Bytes::from_static(raw.as_bytes())).unwrap();
        assert!(table.insert(&s, None, 1u32));
    }
    assert_eq!(matched(&table, "a.x").plain, [1]);
    let odd = Subject::from_bytes(Bytes::from_static(b"a..b")).unwrap();
    let mut out = Matches::new();
    table.matches(&odd, &mut out);
    assert_eq!(out.plain, [1]);
    assert_eq!(table.remove_all(&1).len(), 5);
    assert_eq!(table.trie.live_nodes(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, Option<&'static str>, u8),
    Remove(String, Option<&'static str>, u8),
    RemoveAll(u8),
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", ">"]), 1..5).prop_map(
        |mut tokens| {
            // `>` is only valid last: cut the pattern after the first one.
            if let Some(i) = tokens.iter().position(|t| *t == ">") {
                tokens.truncate(i + 1);
            }
            tokens.join(".")
        },
    )
}

fn subject_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6)
        .prop_map(|tokens| tokens.join("."))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let group = prop::sample::select(vec![None, None, Some("g"), Some("h")]);
    prop_oneof![
        6 => (pattern_strategy(), group.clone(), 0u8..6).prop_map(|(p, g, w)| Op::Insert(p, g, w)),
        3 => (pattern_strategy(), group, 0u8..6).prop_map(|(p, g, w)| Op::Remove(p, g, w)),
        1 => (0u8..6).prop_map(Op::RemoveAll),
    ]
}

type Model = BTreeSet<(String, Option<&'static str>, u8)>;

proptest! {
    #[test]
    fn matches_agrees_with_naive_matcher(
        ops in prop::collection::vec(op_strategy(), 0..80),
        subjects in prop::collection::vec(subject_strategy(), 1..20),
    ) {
        let mut table = SubscriptionTable::new();
        let mut model = Model::new();
        for op in &ops {
            match op {
                Op::Insert(p, g, w) => {
                    let group = g.map(pat);
                    let new = model.insert((p.clone(), *g, *w));
                    prop_assert_eq!(table.insert(&pat(p), group.as_ref(), *w), new);
                }
                Op::Remove(p, g, w) => {
                    let group = g.map(pat);
                    let had = model.remove(&(p.clone(), *g, *w));
                    prop_assert_eq!(table.remove(&pat(p), group.as_ref(), w), had);
                }
                Op::RemoveAll(w) => {
                    let mut want: Vec<_> = model
                        .iter()
                        .filter(|e| e.2 == *w)
                        .map(|(p, g, _)| (pat(p), g.map(pat)))
                        .collect();
                    want.sort();
                    model.retain(|e| e.2 != *w);
                    prop_assert_eq!(table.remove_all(w), want);
                }
            }
        }
        prop_assert_eq!(table.len(), model.len());
        let listed: Model = table
            .iter()
            .map(|(p, g, w)| {
                let g = g.map(|g| if g.as_str() == "g" { "g" } else { "h" });
                (p.to_string(), g, *w)
            })
            .collect();
        prop_assert_eq!(&listed, &model);

        // One `out` for every subject, as the router uses it.
        let mut out = Matches::new();
        for s in &subjects {
            let mut plain = BTreeSet::new();
            let mut groups: BTreeMap<&str, BTreeSet<u8>> = BTreeMap::new();
            for (_, g, w) in model.iter().filter(|e| naive_match(&e.0, s)) {
                match g {
                    None => { plain.insert(*w); }
                    Some(g) => { groups.entry(*g).or_default().insert(*w); }
                }
            }
            table.matches(&lit(s), &mut out);
            prop_assert_eq!(&out.plain, &plain.iter().copied().collect::<Vec<_>>());
            let got: Vec<(String, Vec<u8>)> = out
                .groups
                .iter()
                .map(|(g, m)| (g.to_string(), m.clone()))
                .collect();
            let want: Vec<(String, Vec<u8>)> = groups
                .into_iter()
                .map(|(g, m)| (g.to_string(), m.into_iter().collect()))
                .collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(table.has_match(&lit(s)), !out.is_empty());
        }

        // Pruning after any sequence leaves what a fresh build would have.
        let mut fresh = SubscriptionTable::new();
        for (p, g, w) in &model {
            fresh.insert(&pat(p), g.map(pat).as_ref(), *w);
        }
        prop_assert_eq!(table.trie.live_nodes(), fresh.trie.live_nodes());
    }
}
