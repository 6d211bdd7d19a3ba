//! The consistent-hash ring behind [`Policy::ConsistentHash`](super::Policy::ConsistentHash).
//!
//! Every endpoint owns [`VNODES`] points on a 64-bit ring; a key belongs to
//! the first point at or after its own hash (wrapping). Two properties make
//! this the right structure for affinity routing:
//!
//! - **Minimal movement.** An endpoint's points depend on its id alone, never
//!   on who else is in the set. When it leaves, only the arcs it owned change
//!   hands (its keys move to its successors); when it joins, it only takes
//!   arcs from others. Every other key keeps its endpoint.
//! - **Agreement between clients.** Positions come from a hash that is fixed
//!   by this file (FNV-1a 64 with a murmur3 finaliser), not from
//!   `std::collections::hash_map::DefaultHasher`, whose output may change
//!   between Rust releases. Two clients that see the same endpoint set send a
//!   key to the same endpoint, whatever they were built with.
//!
//! Virtual nodes even out the arc lengths: with 128 points per endpoint each
//! one's share is within about ±10 % of `1/N`, where a single point would
//! leave shares ranging over an order of magnitude.
//!
//! **Weights do not scale the number of points.** Weights advertised by
//! servers have no fixed unit (1 and 100 are both plausible defaults), so a
//! weight → point-count mapping either explodes the ring (weight 1000 ×
//! 128 points) or must be normalised against the other endpoints' weights,
//! which couples every endpoint's points to the whole set and breaks minimal
//! movement. Key stability is the reason to choose this policy, so weight only
//! decides membership here: weight 0 takes the endpoint off the ring, any
//! other weight puts it on with the same share. Use `Weighted` for
//! proportional shares.

use meshwire_proto::wire::NodeId;

/// Points on the ring per endpoint.
pub(crate) const VNODES: u32 = 128;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, over `chunks` as if they were one byte string.
///
/// Written out rather than taken from a crate: it is eight lines, and what we
/// need above all is that it never changes, which owning it guarantees.
fn fnv1a(chunks: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for chunk in chunks {
        for &b in *chunk {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// murmur3's 64-bit finaliser. FNV-1a mixes the last bytes of its input
/// poorly into the high bits, and replica indices differ only in their last
/// bytes; without this step the points of one endpoint would cluster.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Where a request key lands on the ring. Stable across builds and platforms.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    fmix64(fnv1a(&[key]))
}

/// Where replica `replica` of endpoint `id` sits on the ring. Stable across
/// builds and platforms: the index is hashed as little-endian bytes.
pub(crate) fn point_hash(id: &NodeId, replica: u32) -> u64 {
    fmix64(fnv1a(&[id.as_bytes(), &replica.to_le_bytes()]))
}

/// The ring: points sorted by position, each naming an endpoint by its index
/// in the balancer's (id-sorted) endpoint list.
#[derive(Debug, Default, Clone)]
pub(crate) struct HashRing {
    /// `(position, endpoint index)`, sorted. Ties (two points at the same
    /// position, astronomically rare) are broken by index, which follows id
    /// order, so every client breaks them the same way.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// Builds the ring over `members`: `(index, id)` of every endpoint that
    /// belongs on it.
    pub(crate) fn build(members: impl Iterator<Item = (usize, NodeId)>) -> Self {
        let mut points = Vec::new();
        for (idx, id) in members {
            points.extend((0..VNODES).map(|r| (point_hash(&id, r), idx)));
        }
        points.sort_unstable();
        Self { points }
    }

    /// Walks the ring clockwise from `key`'s position and returns the first
    /// endpoint index `accept` takes.
    ///
    /// Skipping an unacceptable endpoint (excluded by a retry, or ejected)
    /// lands on the endpoint that would own the key if that one had left the
    /// set, so failover is itself consistent: every client retries a key on
    /// the same second choice.
    pub(crate) fn find(&self, key: &[u8], mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = key_hash(key);
        let start = self.points.partition_point(|&(pos, _)| pos < h);
        let n = self.points.len();
        // An endpoint's points are scattered, so the walk rarely goes far; its
        // bound is one full turn, after which nothing is acceptable.
        (0..n)
            .map(|step| self.points[(start + step) % n].1)
            .find(|&idx| accept(idx))
    }
}
