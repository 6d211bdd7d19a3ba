//! The hash maps and sets of the hot path: std's, with aHash instead of
//! SipHash.
//!
//! Every message does several lookups (the routing trie by subject token,
//! the engine's peers and subscriptions by id); with SipHash, hashing was
//! about 6 % of a router's CPU under load (`perf`, stream-throughput).
//! aHash is several times faster and, seeded at random per process like
//! std's `RandomState`, keeps its resistance to collision floods: subject
//! tokens come off the network, so a fixed-key hasher (FxHash) would let a
//! peer degrade a router with colliding subscriptions.

/// `std::collections::HashMap` with aHash. Build with `HashMap::default()`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// `std::collections::HashSet` with aHash. Build with `HashSet::default()`.
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
