//! Deterministic tests: seeded randomness, time advanced by hand.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::ring::{key_hash, point_hash};
use super::*;

const MS: Duration = Duration::from_millis(1);

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn eps(ids: &[u8]) -> Vec<Endpoint> {
    ids.iter().map(|&n| Endpoint::new(id(n), 1)).collect()
}

fn balancer(policy: Policy, ids: &[u8]) -> Balancer {
    let mut lb = Balancer::with_seed(policy, 42);
    lb.set_endpoints(&eps(ids));
    lb
}

const ALL: [Policy; 5] = [
    Policy::RoundRobin,
    Policy::Random,
    Policy::Weighted,
    Policy::LeastLoaded,
    Policy::ConsistentHash,
];

/// Picks `n` times at `now` and counts the results.
fn tally(lb: &mut Balancer, now: Instant, n: usize) -> HashMap<NodeId, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        if let Some(got) = lb.pick(now, None, &[]) {
            *counts.entry(got).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn weighted_one_two_three_is_exact() {
    let now = Instant::now();
    let mut lb = Balancer::with_seed(Policy::Weighted, 1);
    lb.set_endpoints(&[
        Endpoint::new(id(1), 1),
        Endpoint::new(id(2), 2),
        Endpoint::new(id(3), 3),
    ]);
    let counts = tally(&mut lb, now, 6000);
    for (n, share) in [(1, 1000.0), (2, 2000.0), (3, 3000.0)] {
        let got = counts[&id(n)] as f64;
        assert!((got - share).abs() <= share * 0.03, "{n}: {got} vs {share}");
        // Smooth WRR is exact over whole rounds.
        assert!((got - share).abs() <= 1.0, "{n}: {got} vs {share}");
    }
}

#[test]
fn weighted_interleaves_and_honours_overrides() {
    let now = Instant::now();
    let mut lb = Balancer::with_seed(Policy::Weighted, 1);
    lb.set_endpoints(&[
        Endpoint::new(id(1), 5),
        Endpoint::new(id(2), 1),
        Endpoint::new(id(3), 1),
    ]);
    let seq: Vec<u8> = (0..7)
        .map(|_| lb.pick(now, None, &[]).unwrap().as_bytes()[0])
        .collect();
    // nginx's documented sequence for 5:1:1.
    assert_eq!(seq, [1, 1, 2, 1, 3, 1, 1]);

    // The client's override wins, and survives the endpoint leaving and
    // coming back.
    lb.set_weight_override(id(2), Some(5));
    assert_eq!(lb.effective_weight(id(2)), Some(5));
    lb.set_endpoints(&eps(&[1, 3]));
    lb.set_endpoints(&[
        Endpoint::new(id(1), 5),
        Endpoint::new(id(2), 1),
        Endpoint::new(id(3), 1),
    ]);
    assert_eq!(lb.effective_weight(id(2)), Some(5));
    let counts = tally(&mut lb, now, 1100);
    assert_eq!(counts[&id(1)], 500);
    assert_eq!(counts[&id(2)], 500);
    assert_eq!(counts[&id(3)], 100);
    lb.set_weight_override(id(2), None);
    assert_eq!(lb.effective_weight(id(2)), Some(1));
}

#[test]
fn round_robin_is_an_exact_rotation() {
    let now = Instant::now();
    let mut lb = balancer(Policy::RoundRobin, &[4, 2, 3, 1, 5]);
    let k = 37;
    let picks: Vec<NodeId> = (0..5 * k)
        .map(|_| lb.pick(now, None, &[]).unwrap())
        .collect();
    for (i, got) in picks.iter().enumerate() {
        // Sorted by id: 1, 2, 3, 4, 5, 1, 2, ...
        assert_eq!(*got, id((i % 5) as u8 + 1), "pick {i}");
    }
}

#[test]
fn round_robin_continues_across_membership_changes() {
    let now = Instant::now();
    let mut lb = balancer(Policy::RoundRobin, &[1, 2, 3, 4]);
    assert_eq!(lb.pick(now, None, &[]), Some(id(1)));
    assert_eq!(lb.pick(now, None, &[]), Some(id(2)));
    // 3 leaves, 5 joins: the rotation goes on after 2.
    lb.set_endpoints(&eps(&[1, 2, 4, 5]));
    assert_eq!(lb.pick(now, None, &[]), Some(id(4)));
    // The last one picked leaves: its successor is next.
    lb.set_endpoints(&eps(&[1, 2, 5]));
    assert_eq!(lb.pick(now, None, &[]), Some(id(5)));
    assert_eq!(lb.pick(now, None, &[]), Some(id(1)));
}

#[test]
fn random_is_roughly_uniform() {
    let now = Instant::now();
    let mut lb = balancer(Policy::Random, &[1, 2, 3, 4, 5]);
    let n = 50_000;
    let counts = tally(&mut lb, now, n);
    assert_eq!(counts.len(), 5);
    let expected = n as f64 / 5.0;
    let chi2: f64 = counts
        .values()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 4 degrees of freedom: P(χ² > 30) ≈ 5e-6.
    assert!(chi2 < 30.0, "chi-square {chi2}, counts {counts:?}");
}

/// 10 000 keys → endpoint.
fn key_map(lb: &mut Balancer, now: Instant) -> Vec<NodeId> {
    (0..10_000u32)
        .map(|k| {
            let key = format!("user-{k}");
            lb.pick(now, Some(key.as_bytes()), &[]).unwrap()
        })
        .collect()
}

#[test]
fn consistent_hash_moves_only_keys_of_the_leaver() {
    let now = Instant::now();
    let all: Vec<u8> = (1..=10).collect();
    let mut lb = balancer(Policy::ConsistentHash, &all);
    let before = key_map(&mut lb, now);

    // Each endpoint's share is near 1/10.
    let mut shares: BTreeMap<NodeId, usize> = BTreeMap::new();
    for n in &before {
        *shares.entry(*n).or_insert(0) += 1;
    }
    assert_eq!(shares.len(), 10);
    for (n, c) in &shares {
        assert!((500..=1600).contains(c), "{n}: {c} keys");
    }

    let leaver = id(7);
    let rest: Vec<u8> = all.iter().copied().filter(|&n| n != 7).collect();
    lb.set_endpoints(&eps(&rest));
    let after = key_map(&mut lb, now);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == leaver {
            assert_ne!(*a, leaver);
            moved += 1;
        } else {
            assert_eq!(a, b, "a key whose endpoint stayed moved");
        }
    }
    assert!((500..=1500).contains(&moved), "{moved} keys moved");

    // It comes back: exactly the original mapping, and every moved key
    // returns to it.
    lb.set_endpoints(&eps(&all));
    assert_eq!(key_map(&mut lb, now), before);
}

#[test]
fn consistent_hash_agrees_between_clients_and_is_stable() {
    let now = Instant::now();
    // Different seeds, different insertion orders: same mapping.
    let mut a = Balancer::with_seed(Policy::ConsistentHash, 1);
    a.set_endpoints(&eps(&[1, 2, 3, 4]));
    let mut b = Balancer::with_seed(Policy::ConsistentHash, 2);
    b.set_endpoints(&eps(&[4, 3, 2, 1]));
    assert_eq!(key_map(&mut a, now), key_map(&mut b, now));
    // Weights do not move keys (only weight 0 takes an endpoint off).
    b.set_weight_override(id(2), Some(50));
    assert_eq!(key_map(&mut a, now), key_map(&mut b, now));

    // Pinned: these hashes decide where every key goes in every deployed
    // client. Changing them is a breaking change. (Values checked against an
    // independent implementation of FNV-1a 64 + murmur3 fmix64.)
    assert_eq!(key_hash(b""), 0xefd0_1f60_ba99_2926);
    assert_eq!(key_hash(b"order-42"), 0x8e47_543c_313c_6386);
    assert_eq!(point_hash(&id(1), 0), 0xd6fe_6217_04ba_cfd1);
}

#[test]
fn consistent_hash_without_key_goes_round_robin() {
    let now = Instant::now();
    let mut lb = balancer(Policy::ConsistentHash, &[1, 2, 3]);
    let seq: Vec<NodeId> = (0..6).map(|_| lb.pick(now, None, &[]).unwrap()).collect();
    assert_eq!(seq, [id(1), id(2), id(3), id(1), id(2), id(3)]);
}

#[test]
fn consistent_hash_retry_goes_to_the_successor() {
    let now = Instant::now();
    let mut lb = balancer(Policy::ConsistentHash, &[1, 2, 3, 4, 5]);
    let key = b"cart-17".as_slice();
    let first = lb.pick(now, Some(key), &[]).unwrap();
    let second = lb.pick(now, Some(key), &[first]).unwrap();
    assert_ne!(first, second);
    // The retry lands where the key would go if `first` had left.
    let rest: Vec<Endpoint> = eps(&[1, 2, 3, 4, 5])
        .into_iter()
        .filter(|e| e.id != first)
        .collect();
    lb.set_endpoints(&rest);
    assert_eq!(lb.pick(now, Some(key), &[]), Some(second));
}

#[test]
fn least_loaded_prefers_the_fast_endpoint() {
    let mut now = Instant::now();
    let mut lb = balancer(Policy::LeastLoaded, &[1, 2]);
    for _ in 0..20 {
        now += 10 * MS;
        for (n, lat) in [(1, MS), (2, 50 * MS)] {
            lb.on_start(id(n));
            lb.on_finish(now, id(n), lat, true);
        }
    }
    // With two endpoints both are always compared: all go to the fast one.
    let counts = tally(&mut lb, now, 1000);
    assert_eq!(counts.get(&id(1)), Some(&1000));

    // With four, the fast one wins whenever it is drawn: half the time.
    let mut lb4 = balancer(Policy::LeastLoaded, &[1, 2, 3, 4]);
    for _ in 0..20 {
        now += 10 * MS;
        for (n, lat) in [(1, MS), (2, 50 * MS), (3, 50 * MS), (4, 50 * MS)] {
            lb4.on_start(id(n));
            lb4.on_finish(now, id(n), lat, true);
        }
    }
    let counts = tally(&mut lb4, now, 4000);
    let fast = counts[&id(1)];
    assert!((1800..=2200).contains(&fast), "fast got {fast} of 4000");
}

#[test]
fn least_loaded_prefers_the_idle_endpoint() {
    let mut now = Instant::now();
    let mut lb = balancer(Policy::LeastLoaded, &[1, 2]);
    for _ in 0..5 {
        now += 10 * MS;
        for n in [1, 2] {
            lb.on_start(id(n));
            lb.on_finish(now, id(n), 5 * MS, true);
        }
    }
    for _ in 0..10 {
        lb.on_start(id(1));
    }
    assert_eq!(lb.outstanding(id(1)), Some(10));
    let counts = tally(&mut lb, now, 100);
    assert_eq!(counts.get(&id(2)), Some(&100));

    // Without any latency sample, outstanding counts alone decide.
    let mut fresh = balancer(Policy::LeastLoaded, &[1, 2]);
    fresh.on_start(id(2));
    assert_eq!(fresh.pick(now, None, &[]), Some(id(1)));
}

#[test]
fn least_loaded_gives_a_newcomer_traffic_and_keeps_stats() {
    let mut now = Instant::now();
    let mut lb = balancer(Policy::LeastLoaded, &[1, 2]);
    for _ in 0..10 {
        now += 10 * MS;
        for (n, lat) in [(1, 2 * MS), (2, 8 * MS)] {
            lb.on_start(id(n));
            lb.on_finish(now, id(n), lat, true);
        }
    }
    lb.on_start(id(1));
    // 3 joins: costed at the mean (5 ms), it beats 2 (8 ms).
    lb.set_endpoints(&eps(&[1, 2, 3]));
    assert_eq!(
        lb.outstanding(id(1)),
        Some(1),
        "stats kept for ids that stay"
    );
    let counts = tally(&mut lb, now, 300);
    assert!(counts.get(&id(3)).copied().unwrap_or(0) > 50, "{counts:?}");
}

#[test]
fn least_loaded_forgives_a_slow_spell() {
    let mut now = Instant::now();
    let mut lb = balancer(Policy::LeastLoaded, &[1, 2]);
    lb.on_start(id(1));
    lb.on_finish(now, id(1), 100 * MS, true);
    lb.on_start(id(2));
    lb.on_finish(now, id(2), 10 * MS, true);
    assert_eq!(lb.pick(now, None, &[]), Some(id(2)));
    // 2 keeps answering in 10 ms; 1 gets no traffic and its estimate decays
    // until it is worth probing again (100 ms × e^(-t/10 s) < 10 ms at ~23 s).
    for _ in 0..30 {
        now += Duration::from_secs(1);
        lb.on_start(id(2));
        lb.on_finish(now, id(2), 10 * MS, true);
    }
    assert_eq!(lb.pick(now, None, &[]), Some(id(1)));
}

#[test]
fn exclude_works_for_every_policy() {
    let now = Instant::now();
    for policy in ALL {
        let mut lb = balancer(policy, &[1, 2, 3]);
        for round in 0..50u32 {
            let key = round.to_le_bytes();
            for exclude in [vec![id(1)], vec![id(2), id(3)], vec![id(1), id(3)]] {
                let got = lb.pick(now, Some(&key), &exclude);
                let got = got.unwrap_or_else(|| panic!("{policy}: nothing picked"));
                assert!(!exclude.contains(&got), "{policy}: picked excluded {got}");
            }
            let none = lb.pick(now, Some(&key), &[id(1), id(2), id(3)]);
            assert_eq!(none, None, "{policy}");
        }
    }
}

#[test]
fn weight_zero_and_empty_sets_are_never_picked() {
    let now = Instant::now();
    for policy in ALL {
        let mut lb = Balancer::with_seed(policy, 3);
        assert_eq!(lb.pick(now, Some(b"k"), &[]), None, "{policy}");
        lb.set_endpoints(&[Endpoint::new(id(1), 0), Endpoint::new(id(2), 1)]);
        for k in 0..100u32 {
            let got = lb.pick(now, Some(&k.to_le_bytes()), &[]);
            assert_eq!(got, Some(id(2)), "{policy}");
        }
        assert_eq!(lb.pick(now, Some(b"k"), &[id(2)]), None, "{policy}");
        // A client override puts a drained endpoint back, and vice versa.
        lb.set_weight_override(id(1), Some(1));
        lb.set_weight_override(id(2), Some(0));
        assert_eq!(lb.pick(now, Some(b"k"), &[]), Some(id(1)), "{policy}");
    }
}

fn fail(lb: &mut Balancer, now: Instant, n: u8, times: u32) {
    for _ in 0..times {
        lb.on_start(id(n));
        lb.on_finish(now, id(n), MS, false);
    }
}

#[test]
fn ejection_backs_off_and_success_resets() {
    let t0 = Instant::now();
    for policy in ALL {
        let mut lb = balancer(policy, &[1, 2, 3]);
        // Four failures, a success, four more: never five in a row.
        fail(&mut lb, t0, 1, 4);
        lb.on_start(id(1));
        lb.on_finish(t0, id(1), MS, true);
        fail(&mut lb, t0, 1, 4);
        assert!(!lb.is_ejected(t0, id(1)), "{policy}");
        fail(&mut lb, t0, 1, 1);
        assert!(lb.is_ejected(t0, id(1)), "{policy}");

        for k in 0..200u32 {
            let got = lb.pick(t0, Some(&k.to_le_bytes()), &[]);
            assert_ne!(got, Some(id(1)), "{policy}: picked an ejected endpoint");
        }

        // First ejection: 1 s.
        assert!(lb.is_ejected(t0 + 999 * MS, id(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(!lb.is_ejected(t1, id(1)), "{policy}");
        let back = (0..30).any(|_| lb.pick(t1, None, &[]) == Some(id(1)));
        assert!(back, "{policy}: never picked after the back-off");

        // Fails again at once: the second ejection lasts 2 s.
        fail(&mut lb, t1, 1, 5);
        assert!(lb.is_ejected(t1 + 1999 * MS, id(1)));
        assert!(!lb.is_ejected(t1 + 2000 * MS, id(1)));
    }
}

#[test]
fn ejection_backoff_is_capped_and_forgiven() {
    let cfg = EjectionConfig {
        consecutive_failures: 2,
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    let mut lb = balancer(Policy::RoundRobin, &[1, 2]).with_ejection(cfg);
    let mut now = Instant::now();
    // Ejections of 1, 2, 4, 4 s: doubling, then capped.
    for secs in [1, 2, 4, 4] {
        fail(&mut lb, now, 1, 2);
        let len = Duration::from_secs(secs);
        assert!(lb.is_ejected(now + len - MS, id(1)), "{secs}s");
        assert!(!lb.is_ejected(now + len, id(1)), "{secs}s");
        now += len;
    }
    // Two `max` periods in service forgive two of the four ejections: the
    // next one lasts 4 s (the third), after that a long rest resets it to 1 s.
    now += Duration::from_secs(8);
    fail(&mut lb, now, 1, 2);
    assert!(lb.is_ejected(now + 3999 * MS, id(1)));
    now += Duration::from_secs(4) + Duration::from_secs(3600);
    fail(&mut lb, now, 1, 2);
    assert!(!lb.is_ejected(now + Duration::from_secs(1), id(1)));

    // Ejection off.
    let mut off = balancer(Policy::RoundRobin, &[1]).with_ejection(EjectionConfig::disabled());
    fail(&mut off, now, 1, 100);
    assert!(!off.is_ejected(now, id(1)));
}

#[test]
fn all_ejected_still_returns_the_least_recently_ejected() {
    let t0 = Instant::now();
    for policy in ALL {
        let mut lb = balancer(policy, &[1, 2, 3]);
        fail(&mut lb, t0 + 2 * MS, 1, 5);
        fail(&mut lb, t0, 3, 5);
        fail(&mut lb, t0 + MS, 2, 5);
        let now = t0 + 3 * MS;
        assert!([1, 2, 3].iter().all(|&n| lb.is_ejected(now, id(n))));
        assert_eq!(lb.pick(now, Some(b"k"), &[]), Some(id(3)), "{policy}");
        // Exclusion still applies to the fallback.
        assert_eq!(lb.pick(now, Some(b"k"), &[id(3)]), Some(id(2)), "{policy}");
    }
}

#[test]
fn finished_calls_of_departed_endpoints_are_ignored() {
    let now = Instant::now();
    let mut lb = balancer(Policy::LeastLoaded, &[1, 2]);
    lb.on_start(id(2));
    lb.set_endpoints(&eps(&[1]));
    lb.on_finish(now, id(2), MS, false);
    lb.set_endpoints(&eps(&[1, 2]));
    assert_eq!(lb.outstanding(id(2)), Some(0));
    // Duplicate ids: the last entry wins.
    lb.set_endpoints(&[Endpoint::new(id(1), 3), Endpoint::new(id(1), 4)]);
    assert_eq!(lb.endpoints(), vec![Endpoint::new(id(1), 4)]);
}

#[test]
fn policy_names_round_trip() {
    for policy in ALL {
        assert_eq!(policy.to_string().parse::<Policy>(), Ok(policy));
    }
    assert_eq!("hash".parse::<Policy>(), Ok(Policy::ConsistentHash));
    assert!("fastest".parse::<Policy>().is_err());
    assert_eq!(Policy::default(), Policy::LeastLoaded);
}

#[test]
fn retry_budget_allows_a_ratio_of_calls() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(10);
    let mut budget = RetryBudget::new(0.2, 0, ttl);
    assert!(!budget.withdraw(t0), "nothing deposited yet");
    for _ in 0..100 {
        budget.deposit(t0);
    }
    let allowed = (0..100).take_while(|_| budget.withdraw(t0)).count();
    assert_eq!(allowed, 20);
    assert!(!budget.withdraw(t0));

    // Deposits expire after the ttl.
    let mut budget = RetryBudget::new(0.2, 0, ttl);
    for _ in 0..100 {
        budget.deposit(t0);
    }
    assert_eq!(budget.available(t0 + ttl - MS), 20);
    assert_eq!(budget.available(t0 + ttl), 0);
    assert!(!budget.withdraw(t0 + ttl));
}

#[test]
fn retry_budget_window_slides_and_keeps_a_reserve() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(10);
    let mut budget = RetryBudget::new(0.5, 0, ttl);
    for _ in 0..10 {
        budget.deposit(t0);
    }
    let t1 = t0 + Duration::from_secs(5);
    for _ in 0..10 {
        budget.deposit(t1);
    }
    assert_eq!(budget.available(t1), 10);
    // The first batch leaves the window, the second stays.
    assert_eq!(budget.available(t0 + ttl), 5);
    assert_eq!(budget.available(t1 + ttl), 0);

    // The reserve: min 2 per second over 10 s = 20 retries without calls.
    let mut reserve = RetryBudget::new(0.2, 2, ttl);
    let allowed = (0..100).take_while(|_| reserve.withdraw(t0)).count();
    assert_eq!(allowed, 20);
    // Withdrawals expire too, so the reserve refills.
    assert!(reserve.withdraw(t0 + ttl));
    assert_eq!(RetryBudget::default().available(t0), 100);
}
