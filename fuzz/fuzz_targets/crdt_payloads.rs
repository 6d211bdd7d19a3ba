//! Fuzzes the replicated-map payloads (PROTOCOL.md §12): what a replica
//! decodes and merges straight off the network.
//!
//! Seeds: `cargo run --manifest-path fuzz/Cargo.toml --example
//! write_crdt_seeds`.
//!
//! Input layout: `wall | bytes`, where `wall` is the first 8 bytes (big
//! endian, missing bytes are 0) and the rest is offered to every decoder.
//! Checked:
//!
//! - no decoder panics, and whatever decodes re-encodes to the same bytes;
//! - a decoded delta merged into a small-limits replica either is refused
//!   whole (nothing changes) or applies; merging it again changes nothing
//!   (idempotence), and the replica's digest matches a fresh replica that
//!   merged its full state;
//! - a decoded digest diffs against the replica's, and the entries of the
//!   differing buckets are a valid delta.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meshwire_proto::crdt::{Buckets, Delta, Digest, LwwMap, MapConfig};
use meshwire_proto::wire::NodeId;

fuzz_target!(|data: &[u8]| {
    let (head, rest) = data.split_at(data.len().min(8));
    let mut wall = [0u8; 8];
    wall[..head.len()].copy_from_slice(head);
    let wall = u64::from_be_bytes(wall);
    let bytes = Bytes::copy_from_slice(rest);

    let config = MapConfig {
        max_key_len: 64,
        max_value_len: 256,
        ..MapConfig::default()
    };
    // A replica with some state, so digests and buckets have something
    // to differ from and merges have something to lose to or beat.
    let mut replica = LwwMap::with_config(NodeId([1; 16]), config);
    for (i, key) in ["a", "b/1", "b/2", "c"].into_iter().enumerate() {
        replica
            .put(key, Bytes::from(vec![i as u8; i]), 1_700_000_000_000)
            .expect("a valid local write");
    }
    replica
        .delete("b/2", 1_700_000_000_000)
        .expect("a valid local delete");

    if let Ok(delta) = Delta::decode(bytes.clone()) {
        assert_eq!(
            delta.to_bytes().ok(),
            Some(bytes.clone()),
            "delta re-encodes"
        );
        let before = replica.to_delta();
        match replica.merge(delta.clone(), wall) {
            Err(e) => {
                let _ = e.to_string();
                assert_eq!(
                    replica.to_delta(),
                    before,
                    "a refused delta changed the map"
                );
            }
            Ok(_) => {
                let again = replica
                    .merge(delta, wall)
                    .expect("accepted once, accepted again");
                assert!(again.changes.is_empty(), "merging twice changed the map");
                let mut copy = LwwMap::with_config(NodeId([2; 16]), config);
                copy.merge(replica.to_delta(), u64::MAX / 2)
                    .expect("a replica's own state merges");
                assert_eq!(
                    copy.digest(),
                    replica.digest(),
                    "same entries, different digest"
                );
            }
        }
    }
    if let Ok(digest) = Digest::decode(bytes.clone()) {
        assert_eq!(digest.to_bytes(), bytes, "digest re-encodes");
        let buckets = replica.digest().diff(&digest);
        let delta = replica.entries_in(&buckets);
        assert!(Delta::decode(delta.to_bytes().expect("a map's delta encodes")).is_ok());
    }
    if let Ok(buckets) = Buckets::decode(bytes.clone()) {
        assert_eq!(buckets.to_bytes(), bytes, "bucket set re-encodes");
        let _ = replica.entries_in(&buckets);
    }
});
