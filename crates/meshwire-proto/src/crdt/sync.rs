//! Anti-entropy: digests that tell two replicas where they differ, and the
//! entries to ship for those places.
//!
//! Every key falls in one of [`Digest::MAX_BUCKETS`] fine buckets by the
//! top bits of a hash of the key; a bucket's digest value is the XOR of
//! the hashes of its entries (key, stamp and value; tombstones included).
//! XOR makes the value independent of the order entries arrived in, and
//! lets the map keep it up to date in O(1) per write. A digest with fewer
//! buckets folds neighbouring fine buckets together, so replicas can trade
//! coarse digests (small messages) for larger repair batches, and two
//! digests of different sizes still compare (the finer one is folded).
//!
//! The hash is XXH3-64 with its default secret: a frozen specification,
//! the same on every process, platform and version, unlike the randomly
//! seeded hashers of the hot path. Keys cannot be chosen to flood a
//! bucket's *hash table* here (there is none); at worst a writer puts many
//! keys in one bucket and makes its repair batch large.

use super::delta::{Delta, Stamp};
use super::error::BucketCountError;
use super::map::LwwMap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// log2 of the number of fine buckets a map keeps.
const FINE_BITS: u32 = 10;
/// How many fine buckets a map keeps: 8 KiB of XORs per map.
pub(crate) const FINE_BUCKETS: usize = 1 << FINE_BITS;

/// The hash of a key alone, which picks its bucket.
pub(crate) fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// The fine bucket of a key hash: its top bits.
pub(crate) fn fine_bucket(key_hash: u64) -> usize {
    (key_hash >> (64 - FINE_BITS)) as usize
}

/// The bucket of a key hash among `count` (a power of two ≤ the fine
/// count): its top `log2(count)` bits, so bucket `i` of a coarse digest
/// covers fine buckets `i * r .. (i + 1) * r`.
fn bucket_of(key_hash: u64, count: u32) -> usize {
    // A shift by 64 (count 1) is not defined; everything is bucket 0.
    key_hash
        .checked_shr(64 - count.trailing_zeros())
        .unwrap_or(0) as usize
}

/// The hash of one entry's whole state. Lengths and tags separate the
/// fields, so two different entries never feed the hasher the same bytes.
pub(crate) fn entry_hash(key: &str, stamp: Stamp, value: Option<&[u8]>) -> u64 {
    let mut h = Xxh3Default::new();
    h.update(&(key.len() as u64).to_be_bytes());
    h.update(key.as_bytes());
    h.update(&stamp.time.as_u64().to_be_bytes());
    h.update(stamp.origin.as_bytes());
    match value {
        None => h.update(&[0]),
        Some(v) => {
            h.update(&[1]);
            h.update(v);
        }
    }
    h.digest()
}

/// Checks that `count` is a power of two from 1 to
/// [`Digest::MAX_BUCKETS`].
fn check_count(count: u32) -> Result<(), BucketCountError> {
    if count.is_power_of_two() && count <= Digest::MAX_BUCKETS {
        Ok(())
    } else {
        Err(BucketCountError(count))
    }
}

/// A summary of a replica's entries: one 64-bit value per bucket of keys.
/// Equal digests mean equal replicas (up to a 2^-64 chance per bucket).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Digest {
    buckets: Vec<u64>,
}

impl Digest {
    /// Buckets in [`LwwMap::digest`]: a 2 KiB digest, and a repair batch of
    /// 1/256 of the map per differing bucket.
    pub const DEFAULT_BUCKETS: u32 = 256;
    /// The most buckets a digest has (the resolution a map keeps).
    pub const MAX_BUCKETS: u32 = FINE_BUCKETS as u32;

    /// A digest from its bucket values (how many: a power of two up to
    /// [`Digest::MAX_BUCKETS`]).
    pub fn from_buckets(buckets: Vec<u64>) -> Result<Self, BucketCountError> {
        let count = u32::try_from(buckets.len()).unwrap_or(u32::MAX);
        check_count(count)?;
        Ok(Self { buckets })
    }

    /// How many buckets.
    pub fn bucket_count(&self) -> u32 {
        // At most MAX_BUCKETS, checked at construction.
        self.buckets.len() as u32
    }

    /// The bucket values.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// The same digest with `count` buckets (a power of two, at most this
    /// digest's count): neighbouring buckets XORed together.
    pub fn fold_to(&self, count: u32) -> Result<Digest, BucketCountError> {
        check_count(count)?;
        if count > self.bucket_count() {
            return Err(BucketCountError(count));
        }
        let ratio = self.buckets.len() / count as usize;
        let buckets = self
            .buckets
            .chunks(ratio)
            .map(|c| c.iter().fold(0, |acc, b| acc ^ b))
            .collect();
        Ok(Digest { buckets })
    }

    /// The buckets where `self` and `theirs` differ, at the coarser of the
    /// two resolutions. Ship [`LwwMap::entries_in`] of them both ways and
    /// the two replicas hold the same entries there.
    pub fn diff(&self, theirs: &Digest) -> Buckets {
        let count = self.bucket_count().min(theirs.bucket_count());
        let fold = |d: &Digest| {
            if d.bucket_count() == count {
                d.clone()
            } else {
                // `count` is a power of two below d's count: cannot fail.
                d.fold_to(count).unwrap_or_else(|_| d.clone())
            }
        };
        let (mine, theirs) = (fold(self), fold(theirs));
        let ids = mine
            .buckets
            .iter()
            .zip(&theirs.buckets)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect();
        Buckets { count, ids }
    }
}

/// Some buckets of a digest of `count` buckets: where two replicas differ.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Buckets {
    count: u32,
    /// Ascending, unique, each below `count`.
    ids: Vec<u32>,
}

impl Buckets {
    /// A set of bucket ids of a `count`-bucket digest. Ids are sorted and
    /// de-duplicated; an id of `count` or more is an error.
    pub fn new(count: u32, mut ids: Vec<u32>) -> Result<Self, BucketCountError> {
        check_count(count)?;
        ids.sort_unstable();
        ids.dedup();
        if let Some(&bad) = ids.iter().find(|&&id| id >= count) {
            return Err(BucketCountError(bad));
        }
        Ok(Self { count, ids })
    }

    /// Every bucket: [`LwwMap::entries_in`] of it is the whole map.
    pub fn all(count: u32) -> Result<Self, BucketCountError> {
        check_count(count)?;
        Ok(Self {
            count,
            ids: (0..count).collect(),
        })
    }

    /// The resolution the ids refer to.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The bucket ids, ascending.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// How many buckets.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the digests were equal: nothing to repair.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl LwwMap {
    /// The digest with [`Digest::DEFAULT_BUCKETS`] buckets.
    pub fn digest(&self) -> Digest {
        // DEFAULT_BUCKETS is a valid count: this cannot fail.
        self.digest_with(Digest::DEFAULT_BUCKETS)
            .unwrap_or_else(|_| Digest {
                buckets: vec![0; Digest::DEFAULT_BUCKETS as usize],
            })
    }

    /// The digest with `count` buckets (a power of two, 1 to
    /// [`Digest::MAX_BUCKETS`]). Costs O(count), whatever the map's size.
    pub fn digest_with(&self, count: u32) -> Result<Digest, BucketCountError> {
        check_count(count)?;
        let fine = self.fine_buckets();
        if fine.is_empty() {
            return Ok(Digest {
                buckets: vec![0; count as usize],
            });
        }
        Digest {
            buckets: fine.to_vec(),
        }
        .fold_to(count)
    }

    /// Every entry, tombstones included, whose key falls in one of
    /// `buckets`: what to ship to a replica whose digest differs there.
    /// Costs O(entries): the map is scanned once.
    pub fn entries_in(&self, buckets: &Buckets) -> Delta {
        if buckets.is_empty() {
            return Delta::new();
        }
        let mut wanted = vec![false; buckets.count as usize];
        for &id in &buckets.ids {
            wanted[id as usize] = true;
        }
        self.delta_where(|h| wanted[bucket_of(h, buckets.count)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::hlc::Timestamp;
    use crate::wire::NodeId;

    #[test]
    fn the_hash_is_stable_across_processes_and_versions() {
        // Pinned values: if these change, replicas of different versions
        // would see every bucket differ and re-ship whole maps forever.
        assert_eq!(key_hash(""), 0x2d06800538d394c2);
        assert_eq!(key_hash("orders/1"), key_hash("orders/1"));
        let stamp = Stamp::new(Timestamp::new(1, 2), NodeId([7; 16]));
        let a = entry_hash("k", stamp, Some(b"v"));
        assert_ne!(a, entry_hash("k", stamp, None));
        assert_ne!(a, entry_hash("k", stamp, Some(b"")));
        assert_eq!(a, entry_hash("k", stamp, Some(b"v")));
        // Checked against the reference C libxxhash (XXH3_64bits) over the
        // same bytes: the layout is what another implementation must hash.
        assert_eq!(a, 0xbb988b48daca407c);
    }

    #[test]
    fn coarse_buckets_cover_whole_runs_of_fine_buckets() {
        for h in [
            0u64,
            1,
            u64::MAX,
            0x8000_0000_0000_0000,
            0x1234_5678_9abc_def0,
        ] {
            let fine = fine_bucket(h);
            assert_eq!(bucket_of(h, Digest::MAX_BUCKETS), fine);
            for bits in 0..=FINE_BITS {
                let count = 1u32 << bits;
                let ratio = FINE_BUCKETS / count as usize;
                assert_eq!(bucket_of(h, count), fine / ratio, "{h:x} {count}");
            }
        }
    }

    #[test]
    fn bucket_counts_are_checked() {
        for bad in [0, 3, 2048, 1000] {
            assert_eq!(check_count(bad), Err(BucketCountError(bad)));
        }
        assert!(Digest::from_buckets(vec![0; 3]).is_err());
        let d = Digest::from_buckets(vec![1, 2, 4, 8]).unwrap();
        assert_eq!(d.fold_to(2).unwrap().buckets(), &[3, 12]);
        assert_eq!(d.fold_to(1).unwrap().buckets(), &[15]);
        assert!(d.fold_to(8).is_err());
        assert!(Buckets::new(4, vec![4]).is_err());
        assert_eq!(Buckets::new(4, vec![3, 1, 3]).unwrap().ids(), &[1, 3]);
    }

    #[test]
    fn digests_of_different_sizes_compare_at_the_coarser() {
        let fine = Digest::from_buckets(vec![1, 1, 0, 5]).unwrap();
        let coarse = Digest::from_buckets(vec![0, 4]).unwrap();
        let d = fine.diff(&coarse);
        assert_eq!((d.count(), d.ids()), (2, &[1][..]));
        assert_eq!(coarse.diff(&fine), d);
    }
}
