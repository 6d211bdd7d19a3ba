//! Writes the seed corpus for the `crdt_payloads` fuzz target into
//! `fuzz/seeds/crdt_payloads/`:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example write_crdt_seeds
//!
//! Each seed is `wall: u64 BE | payload` (the layout the target reads):
//! a delta with values and a tombstone, a digest, a bucket set, so the
//! fuzzer starts from valid encodings of all three.

use bytes::Bytes;
use meshwire_proto::crdt::LwwMap;
use meshwire_proto::wire::NodeId;
use std::path::PathBuf;

const WALL_MS: u64 = 1_700_000_000_000;

fn main() -> std::io::Result<()> {
    let mut map = LwwMap::new(NodeId::from_bytes([0xa5; 16]));
    for (key, value) in [("a", "1"), ("b/1", "{\"n\":2}"), ("zz", "")] {
        map.put(key, Bytes::from(value), WALL_MS)
            .expect("valid write");
    }
    map.delete("b/1", WALL_MS + 5).expect("valid delete");
    let mut other = LwwMap::new(NodeId::from_bytes([0x11; 16]));
    other
        .put("a", Bytes::from("2"), WALL_MS)
        .expect("valid write");
    let seeds: [(&str, Bytes); 3] = [
        ("delta", map.to_delta().to_bytes().expect("encodable")),
        (
            "digest",
            map.digest_with(16).expect("valid count").to_bytes(),
        ),
        ("buckets", map.digest().diff(&other.digest()).to_bytes()),
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds/crdt_payloads");
    std::fs::create_dir_all(&dir)?;
    for (name, payload) in seeds {
        let mut seed = (WALL_MS + 10).to_be_bytes().to_vec();
        seed.extend_from_slice(&payload);
        std::fs::write(dir.join(name), seed)?;
        println!("wrote {name}");
    }
    Ok(())
}
