//! Property tests of the replicated-map core (`meshwire_proto::crdt`):
//! convergence whatever the order, duplication and batching of deltas;
//! repair of diverged replicas by one anti-entropy exchange; the clock's
//! guarantees; limits; and a codec that round-trips and never panics.
//!
//! Shuffles and duplications come from a seeded `SmallRng`; the seed is
//! part of each generated case, so proptest prints it with any failure.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use bytes::{Bytes, BytesMut};
use meshwire_proto::crdt::{
    Buckets, ClockError, CodecError, Delta, DeltaEntry, Digest, Hlc, LwwMap, MapConfig, MapError,
    Stamp, Timestamp,
};
use meshwire_proto::wire::NodeId;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Where every replica's wall clock starts (ms since the epoch).
const EPOCH_MS: u64 = 1_700_000_000_000;

fn node(i: usize) -> NodeId {
    // Distinct ids whose order differs from the replica index order, so
    // the tie-break is not accidentally "lowest replica wins".
    NodeId([0x90u8.wrapping_sub((i as u8).wrapping_mul(0x21)); 16])
}

/// A small key space, two prefixes: writes collide often.
fn key(k: u8) -> String {
    if k % 2 == 0 {
        format!("a/{}", k % 5)
    } else {
        format!("b/{}", k % 5)
    }
}

/// One step of a history on several replicas.
#[derive(Debug, Clone)]
enum Step {
    /// A local write on `replica`, after its wall clock moved by
    /// `clock_ms` (possibly backwards).
    Write {
        replica: usize,
        clock_ms: i16,
        key: u8,
        op: WriteOp,
    },
    /// `replica` merges the `pick`-th delta produced so far (modulo count).
    Gossip { replica: usize, pick: usize },
}

#[derive(Debug, Clone)]
enum WriteOp {
    Put(Vec<u8>),
    Delete,
    /// Compare-and-swap against the version this replica sees.
    Cas(Vec<u8>),
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    let write_op = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..6).prop_map(WriteOp::Put),
        2 => Just(WriteOp::Delete),
        1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(WriteOp::Cas),
    ];
    prop_oneof![
        3 => (0..replicas, -50i16..80, any::<u8>(), write_op).prop_map(|(replica, clock_ms, key, op)| {
            Step::Write { replica, clock_ms, key, op }
        }),
        1 => (0..replicas, any::<usize>()).prop_map(|(replica, pick)| Step::Gossip { replica, pick }),
    ]
}

/// Replicas with their wall clocks, running a history.
struct Cluster {
    maps: Vec<LwwMap>,
    walls: Vec<u64>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        Self {
            maps: (0..n).map(|i| LwwMap::new(node(i))).collect(),
            walls: vec![EPOCH_MS; n],
        }
    }

    /// Runs `steps`, returning every delta the local writes produced.
    fn run(&mut self, steps: &[Step]) -> Vec<Delta> {
        let mut deltas = Vec::new();
        for s in steps {
            match s {
                Step::Write {
                    replica,
                    clock_ms,
                    key: k,
                    op,
                } => {
                    let wall = self.walls[*replica].saturating_add_signed(i64::from(*clock_ms));
                    self.walls[*replica] = wall;
                    let m = &mut self.maps[*replica];
                    let key = key(*k);
                    let update = match op {
                        WriteOp::Put(v) => Some(m.put(&key, Bytes::from(v.clone()), wall).unwrap()),
                        WriteOp::Delete => m.delete(&key, wall).unwrap(),
                        WriteOp::Cas(v) => {
                            let seen = m.version(&key);
                            Some(m.cas(&key, seen, Bytes::from(v.clone()), wall).unwrap())
                        }
                    };
                    deltas.extend(update.map(|u| u.delta));
                }
                Step::Gossip { replica, pick } if !deltas.is_empty() => {
                    let d: &Delta = &deltas[pick % deltas.len()];
                    let report = self.maps[*replica]
                        .merge(d.clone(), self.walls[*replica])
                        .unwrap();
                    assert!(report.skipped.is_empty(), "{report:?}");
                }
                Step::Gossip { .. } => {}
            }
        }
        deltas
    }
}

/// A fresh replica that merged `deltas` in the given order, in batches of
/// random size, with a wall clock past every stamp.
fn replay(id: NodeId, deltas: &[Delta], rng: &mut SmallRng) -> LwwMap {
    let mut m = LwwMap::new(id);
    let mut batch = Delta::new();
    for d in deltas {
        batch.extend(d.clone());
        if rng.random_bool(0.5) {
            m.merge(std::mem::take(&mut batch), u64::MAX / 2).unwrap();
        }
    }
    m.merge(batch, u64::MAX / 2).unwrap();
    m
}

/// The deltas shuffled, with some of them repeated.
fn shuffled_with_duplicates(deltas: &[Delta], rng: &mut SmallRng) -> Vec<Delta> {
    let mut out = deltas.to_vec();
    let extra = rng.random_range(0..=deltas.len());
    for _ in 0..extra {
        out.push(deltas[rng.random_range(0..deltas.len())].clone());
    }
    out.shuffle(rng);
    out
}

/// Runs one anti-entropy exchange both ways between `a` and `b`, as the
/// module documentation describes, with digests of the given sizes.
fn exchange(a: &mut LwwMap, b: &mut LwwMap, a_count: u32, b_count: u32, wall: u64) {
    // A → B: A's digest, through the codec.
    let digest_a = Digest::decode(a.digest_with(a_count).unwrap().to_bytes()).unwrap();
    // B → A: the differing buckets and B's entries in them.
    let buckets = b.digest_with(b_count).unwrap().diff(&digest_a);
    let buckets = Buckets::decode(buckets.to_bytes()).unwrap();
    let from_b = Delta::decode(b.entries_in(&buckets).to_bytes().unwrap()).unwrap();
    // A answers with its own entries there, then merges B's.
    let from_a = Delta::decode(a.entries_in(&buckets).to_bytes().unwrap()).unwrap();
    assert!(a.merge(from_b, wall).unwrap().skipped.is_empty());
    assert!(b.merge(from_a, wall).unwrap().skipped.is_empty());
}

fn bucket_count() -> impl Strategy<Value = u32> {
    (0u32..=10).prop_map(|bits| 1 << bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any order, duplication and batching of the same deltas gives the
    /// same entries and the same digest; merging again changes nothing.
    #[test]
    fn replicas_converge_whatever_order_deltas_arrive_in(
        steps in prop::collection::vec(step(3), 1..60),
        seed in any::<u64>(),
    ) {
        let mut cluster = Cluster::new(3);
        let deltas = cluster.run(&steps);
        prop_assume!(!deltas.is_empty());
        let mut rng = SmallRng::seed_from_u64(seed);
        let in_order = replay(node(7), &deltas, &mut rng);
        for _ in 0..3 {
            let order = shuffled_with_duplicates(&deltas, &mut rng);
            let mut other = replay(node(8), &order, &mut rng);
            prop_assert_eq!(other.to_delta(), in_order.to_delta());
            prop_assert_eq!(other.digest(), in_order.digest());
            prop_assert_eq!((other.len(), other.tombstones()), (in_order.len(), in_order.tombstones()));
            let again = other.merge(in_order.to_delta(), u64::MAX / 2).unwrap();
            prop_assert_eq!(again.applied, 0);
            prop_assert!(again.changes.is_empty());
        }
        // Every replica that wrote is at most what all deltas together say:
        // merging all of them into it gives the full state too.
        for mut m in cluster.maps {
            for d in &deltas {
                m.merge(d.clone(), u64::MAX / 2).unwrap();
            }
            prop_assert!(m == in_order);
        }
    }

    /// Two replicas that shared a state, then took writes on both sides of
    /// a partition (concurrent writes to the same keys, deletes against
    /// puts), are equal after one exchange both ways, and hold the join of
    /// both sides.
    #[test]
    fn one_anti_entropy_exchange_heals_a_partition(
        common in prop::collection::vec(step(1), 0..30),
        left in prop::collection::vec(step(1), 0..40),
        right in prop::collection::vec(step(1), 0..40),
        a_count in bucket_count(),
        b_count in bucket_count(),
    ) {
        let mut a = Cluster::new(1);
        let shared = a.run(&common);
        let mut b = Cluster { maps: vec![LwwMap::new(node(1))], walls: a.walls.clone() };
        for d in shared {
            b.maps[0].merge(d, b.walls[0]).unwrap();
        }
        a.run(&left);
        b.run(&right);
        let (mut a, mut b) = (a.maps.remove(0), b.maps.remove(0));
        let mut join = LwwMap::new(node(9));
        join.merge(a.to_delta(), u64::MAX / 2).unwrap();
        join.merge(b.to_delta(), u64::MAX / 2).unwrap();

        exchange(&mut a, &mut b, a_count, b_count, u64::MAX / 2);
        prop_assert_eq!(a.to_delta(), b.to_delta());
        prop_assert_eq!(a.digest_with(Digest::MAX_BUCKETS), b.digest_with(Digest::MAX_BUCKETS));
        prop_assert!(a == join);
        prop_assert!(a.digest().diff(&b.digest()).is_empty());
    }

    /// Exchanges along any path reach everyone: three replicas that
    /// diverged, repaired pairwise in a random order and then along a
    /// chain, end equal.
    #[test]
    fn anti_entropy_along_any_path_converges(
        steps in prop::collection::vec(step(3), 0..60),
        pairs in prop::collection::vec((0usize..3, 0usize..3), 0..4),
        count in bucket_count(),
    ) {
        let mut cluster = Cluster::new(3);
        cluster.run(&steps);
        let maps = &mut cluster.maps;
        let chain = [(0, 1), (1, 2), (0, 1)];
        for (i, j) in pairs.into_iter().chain(chain) {
            if i == j {
                continue;
            }
            let (lo, hi) = (i.min(j), i.max(j));
            let (left, right) = maps.split_at_mut(hi);
            exchange(&mut left[lo], &mut right[0], count, count, u64::MAX / 2);
        }
        prop_assert_eq!(maps[0].to_delta(), maps[1].to_delta());
        prop_assert_eq!(maps[1].to_delta(), maps[2].to_delta());
    }

    /// Whatever two entries meet, the greater stamp wins in both orders.
    #[test]
    fn last_writer_wins_by_stamp(
        ta in 1u64..50, la in 0u16..3, na in 0usize..3, va in prop::option::of(any::<u8>()),
        tb in 1u64..50, lb in 0u16..3, nb in 0usize..3, vb in prop::option::of(any::<u8>()),
    ) {
        let sa = Stamp::new(Timestamp::new(ta, la), node(na));
        let sb = Stamp::new(Timestamp::new(tb, lb), node(nb));
        prop_assume!(sa != sb);
        let ea = DeltaEntry { key: "k".into(), stamp: sa, value: va.map(|v| Bytes::from(vec![v])) };
        let eb = DeltaEntry { key: "k".into(), stamp: sb, value: vb.map(|v| Bytes::from(vec![v])) };
        let winner = if sa > sb { &ea } else { &eb };
        for order in [[&ea, &eb], [&eb, &ea]] {
            let mut m = LwwMap::new(node(5));
            for e in order {
                m.merge(Delta::from(vec![e.clone()]), 1_000).unwrap();
            }
            prop_assert_eq!(m.to_delta().into_entries(), vec![winner.clone()]);
            prop_assert_eq!(m.get("k").map(|e| e.value.clone()), winner.value.clone());
        }
    }

    /// The clock never goes back, whatever the wall clock does, and stays
    /// above everything it observed; far-future stamps are refused and
    /// leave it unchanged.
    #[test]
    fn the_clock_is_monotonic_and_bounds_skew(
        events in prop::collection::vec(
            (any::<bool>(), 0u64..5_000, 0u64..8_000, any::<u16>()), 1..100),
    ) {
        let mut clock = Hlc::new(1_000);
        let mut floor = Timestamp::ZERO;
        for (is_now, wall, remote_ms, logical) in events {
            if is_now {
                let t = clock.now(wall).unwrap();
                prop_assert!(t > floor, "{:?} after {:?}", t, floor);
                prop_assert!(t.physical_ms() >= wall);
                floor = t;
            } else {
                let remote = Timestamp::new(remote_ms, logical);
                let before = clock.last();
                match clock.observe(remote, wall) {
                    Ok(()) => {
                        prop_assert!(remote_ms <= wall + 1_000);
                        floor = floor.max(remote);
                    }
                    Err(ClockError::TooFarAhead { ahead_ms, .. }) => {
                        prop_assert!(remote_ms > wall + 1_000);
                        prop_assert_eq!(ahead_ms, remote_ms - wall);
                        prop_assert_eq!(clock.last(), before);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
        }
    }

    /// Keys and values beyond the limits are refused with a typed error
    /// and nothing changes; a delta with any such entry is refused whole.
    #[test]
    fn limits_are_enforced_and_refusals_change_nothing(
        keys in prop::collection::vec("[a-z\\n\\x00é]{0,24}", 1..6),
        sizes in prop::collection::vec(0usize..100, 1..6),
    ) {
        let config = MapConfig { max_key_len: 16, max_value_len: 64, ..MapConfig::default() };
        let valid = |k: &str, n: usize| {
            !k.is_empty() && k.len() <= 16 && !k.chars().any(char::is_control) && n <= 64
        };
        let mut m = LwwMap::with_config(node(0), config);
        let mut entries = Vec::new();
        for (i, (k, &n)) in keys.iter().zip(sizes.iter().cycle()).enumerate() {
            let before = m.to_delta();
            let result = m.put(k, Bytes::from(vec![0; n]), EPOCH_MS);
            match &result {
                Ok(_) => prop_assert!(valid(k, n)),
                Err(MapError::EmptyKey | MapError::KeyTooLong { .. }
                    | MapError::ControlCharInKey { .. } | MapError::ValueTooLarge { .. }) => {
                    prop_assert!(!valid(k, n));
                    prop_assert_eq!(m.to_delta(), before);
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
            entries.push(DeltaEntry {
                key: k.clone(),
                stamp: Stamp::new(Timestamp::new(EPOCH_MS, i as u16), node(1)),
                value: Some(Bytes::from(vec![1; n])),
            });
        }
        let all_valid = entries.iter().all(|e| valid(&e.key, e.value.as_ref().map_or(0, Bytes::len)));
        let before = (m.to_delta(), m.digest(), m.seq());
        let result = m.merge(Delta::from(entries), EPOCH_MS);
        prop_assert_eq!(result.is_ok(), all_valid);
        if !all_valid {
            prop_assert_eq!((m.to_delta(), m.digest(), m.seq()), before);
        }
    }

    /// Every delta, digest and bucket set decodes to itself.
    #[test]
    fn the_codec_round_trips(
        entries in prop::collection::vec(
            ("\\PC{1,12}", 1u64.., any::<[u8; 16]>(),
             prop::option::of(prop::collection::vec(any::<u8>(), 0..40))),
            0..12),
        bits in 0u32..=10,
        values in prop::collection::vec(any::<u64>(), 1024),
        ids in prop::collection::vec(any::<u32>(), 0..40),
    ) {
        let delta: Delta = entries
            .into_iter()
            .map(|(key, t, origin, value)| DeltaEntry {
                key,
                stamp: Stamp::new(Timestamp::from_u64(t), NodeId(origin)),
                value: value.map(Bytes::from),
            })
            .collect();
        let bytes = delta.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), delta.encoded_len());
        prop_assert_eq!(Delta::decode(bytes).unwrap(), delta);

        let count = 1u32 << bits;
        let digest = Digest::from_buckets(values[..count as usize].to_vec()).unwrap();
        prop_assert_eq!(Digest::decode(digest.to_bytes()).unwrap(), digest);

        let buckets = Buckets::new(count, ids.into_iter().map(|i| i % count).collect()).unwrap();
        prop_assert_eq!(Buckets::decode(buckets.to_bytes()).unwrap(), buckets);
    }

    /// No byte string makes a decoder panic; what decodes re-encodes to
    /// the same bytes (one encoding per value).
    #[test]
    fn decoding_any_bytes_never_panics(
        tag in prop::sample::select(vec![0xC1u8, 0xC2, 0xC3, 0x00]),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&[tag]);
        raw.extend_from_slice(&body);
        let raw = raw.freeze();
        if let Ok(d) = Delta::decode(raw.clone()) {
            prop_assert_eq!(d.to_bytes().unwrap(), raw.clone());
        }
        if let Ok(d) = Digest::decode(raw.clone()) {
            prop_assert_eq!(d.to_bytes(), raw.clone());
        }
        if let Ok(b) = Buckets::decode(raw.clone()) {
            prop_assert_eq!(b.to_bytes(), raw.clone());
        }
    }

    /// Valid encodings cut short or with one byte changed decode to a value
    /// or a typed error, never a panic.
    #[test]
    fn damaged_encodings_never_panic(
        steps in prop::collection::vec(step(2), 1..20),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut cluster = Cluster::new(2);
        cluster.run(&steps);
        let m = &cluster.maps[0];
        let encoded = [
            m.to_delta().to_bytes().unwrap(),
            m.digest().to_bytes(),
            m.digest().diff(&cluster.maps[1].digest()).to_bytes(),
        ];
        for bytes in encoded {
            let short = bytes.slice(..cut.index(bytes.len()));
            let mut flipped = bytes.to_vec();
            let at = flip.index(flipped.len());
            flipped[at] ^= xor;
            for damaged in [short, Bytes::from(flipped)] {
                let results = [
                    Delta::decode(damaged.clone()).err(),
                    Digest::decode(damaged.clone()).err(),
                    Buckets::decode(damaged.clone()).err(),
                ];
                // At most one decoder can accept it: the tags differ.
                prop_assert!(results.iter().filter(|r| r.is_none()).count() <= 1);
                for e in results.into_iter().flatten() {
                    prop_assert!(!matches!(e, CodecError::TooLong { .. }), "{e:?}");
                }
            }
        }
    }
}
