//! The node's identity on disk: `DIR/node.id`, created on first start.
//!
//! For plaintext nodes the id is 16 random bytes kept as text. A TLS node
//! ([`NodeBuilder::tls_from_data_dir`](crate::NodeBuilder::tls_from_data_dir))
//! uses `DIR/node.key` instead, and its id is the digest of that key.

use crate::Error;
use meshwire_proto::wire::NodeId;
use std::path::Path;

pub(crate) fn load_or_create(dir: &Path) -> Result<NodeId, Error> {
    let err = |e: std::io::Error| Error::DataDir {
        path: dir.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let file = dir.join("node.id");
    match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<NodeId>().map_err(|e| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}; delete it to make a new identity", file.display()),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId(rand::random());
            let tmp = dir.join("node.id.tmp");
            std::fs::write(&tmp, format!("{id}\n")).map_err(err)?;
            std::fs::rename(&tmp, &file).map_err(err)?;
            Ok(id)
        }
        Err(e) => Err(err(e)),
    }
}
