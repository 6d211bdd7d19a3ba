//! Relations between subject patterns, decided token by token: does a
//! pattern match a subject ([`matches`]), does one pattern match
//! everything another does ([`covers`]), can a subject match both
//! ([`overlaps`]). Permissions are built on these: a subscription is
//! allowed when an allow pattern covers it and no deny pattern overlaps it.
//!
//! Tokens are compared position by position. That is exact, not an
//! approximation, because the set of possible tokens is infinite: a `*`
//! can always be filled with a token no literal in either pattern names,
//! and a `>` with as many tokens as needed. A property test checks each
//! relation against brute-force enumeration of subjects.
//!
//! Patterns are expected to be valid ([`Subject::pattern`](crate::wire::Subject::pattern));
//! like the subscription table, these functions never panic on others: a
//! `>` that is not the last token is then an ordinary token.

/// One position of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// Exactly this token.
    Lit(&'a str),
    /// Any one token.
    One,
    /// One or more tokens, to the end.
    Rest,
}

fn tokens(pattern: &str) -> impl Iterator<Item = Tok<'_>> + Clone {
    let n = pattern.split('.').count();
    pattern.split('.').enumerate().map(move |(i, t)| match t {
        "*" => Tok::One,
        ">" if i + 1 == n => Tok::Rest,
        t => Tok::Lit(t),
    })
}

/// True when the literal `subject` matches `pattern` (NATS rules: `*` is
/// one token, `>` one or more tokens at the end). Wildcard characters in
/// `subject` are compared as plain text.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for p in tokens(pattern) {
        match (p, s.next()) {
            (Tok::Rest, Some(_)) => return true,
            (Tok::One, Some(_)) => {}
            (Tok::Lit(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

/// True when every subject that `pattern` matches is also matched by
/// `cover`: `covers("orders.>", "orders.*.eu")` holds,
/// `covers("orders.*", "orders.>")` does not (`orders.a.b`).
pub fn covers(cover: &str, pattern: &str) -> bool {
    let mut p = tokens(pattern);
    for c in tokens(cover) {
        match (c, p.next()) {
            // `>` takes one or more tokens: whatever `pattern` has left.
            (Tok::Rest, Some(_)) => return true,
            // `pattern` may run on where `cover` cannot.
            (_, Some(Tok::Rest)) => return false,
            (Tok::One, Some(_)) => {}
            (Tok::Lit(a), Some(Tok::Lit(b))) if a == b => {}
            // A literal does not cover `*` (nor another literal); and
            // `pattern` may not end before `cover`.
            _ => return false,
        }
    }
    p.next().is_none()
}

/// True when some subject matches both patterns: `overlaps("orders.*",
/// "*.eu")` holds (`orders.eu`), `overlaps("orders.*", "orders")` does not.
/// Symmetric.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut b = tokens(b);
    for x in tokens(a) {
        match (x, b.next()) {
            // One side takes the rest; the other has at least one token here.
            (Tok::Rest, Some(_)) | (_, Some(Tok::Rest)) => return true,
            (Tok::One, Some(_)) | (_, Some(Tok::One)) => {}
            (Tok::Lit(x), Some(Tok::Lit(y))) if x == y => {}
            _ => return false,
        }
    }
    b.next().is_none()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is how a test reports failure

    use super::*;
    use crate::wire::Subject;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches(">", "x"));

        assert!(covers("a.>", "a.*.c"));
        assert!(covers("a.>", "a.>"));
        assert!(covers("*.*", "a.*"));
        assert!(covers(">", "a.b.>"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*.>", "a.>"));
        assert!(!covers("a.*", "a"));
        assert!(!covers("a", "a.b"));

        assert!(overlaps("a.*", "*.b"));
        assert!(overlaps("a.>", "*.b.c"));
        assert!(overlaps(">", "x"));
        assert!(!overlaps("a.*", "a"));
        assert!(!overlaps("a.>", "a"));
        assert!(!overlaps("a.b", "a.c"));
    }

    /// Every subject of 1 to `max` tokens over `a`, `b`, `c`. The patterns
    /// of the property test use only `a` and `b` as literals, so `c` plays
    /// "a token neither pattern names", and `max` exceeds the longest
    /// pattern by one, so `>` can always be made to take more tokens than
    /// a pattern without `>` allows: within these subjects a relation holds
    /// exactly when it holds over all subjects.
    fn all_subjects(max: usize) -> Vec<String> {
        let mut out: Vec<Vec<&str>> = vec![vec![]];
        let mut all = Vec::new();
        for _ in 0..max {
            out = out
                .iter()
                .flat_map(|s| {
                    ["a", "b", "c"].iter().map(move |t| {
                        let mut s = s.clone();
                        s.push(t);
                        s
                    })
                })
                .collect();
            all.extend(out.iter().map(|s| s.join(".")));
        }
        all
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*", ">"]), 1..5).prop_map(
            |mut t| {
                if let Some(i) = t.iter().position(|t| *t == ">") {
                    t.truncate(i + 1);
                }
                t.join(".")
            },
        )
    }

    proptest! {
        #[test]
        fn relations_agree_with_enumeration(a in pattern(), b in pattern()) {
            let subjects = all_subjects(5);
            // `matches` is the routing table's rule.
            let mut table = crate::routing::SubscriptionTable::new();
            table.insert(&Subject::pattern(&a).unwrap(), None, ());
            for s in &subjects {
                prop_assert_eq!(matches(&a, s), table.has_match(&Subject::literal(s).unwrap()));
            }
            let of = |p: &str| subjects.iter().filter(|s| matches(p, s)).cloned().collect::<Vec<_>>();
            let (sa, sb) = (of(&a), of(&b));
            // covers(a, b) ⇔ every sampled subject matching b matches a.
            prop_assert_eq!(covers(&a, &b), sb.iter().all(|s| matches(&a, s)), "covers({}, {})", a, b);
            // overlaps(a, b) ⇔ some sampled subject matches both.
            prop_assert_eq!(overlaps(&a, &b), sa.iter().any(|s| matches(&b, s)), "overlaps({}, {})", a, b);
            prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
            // Every pattern covers itself.
            prop_assert!(covers(&a, &a));
        }
    }
}
