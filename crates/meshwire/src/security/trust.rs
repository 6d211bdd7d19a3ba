//! Who may connect: a list of NodeIds, or an organisation's CA.

use super::error::SecurityError;
use meshwire_proto::wire::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Which peers a node admits, checked during the TLS handshake on both
/// sides of every link.
///
/// Whatever the mode, a peer is identified by its Ed25519 key: its NodeId
/// is recomputed from the key it proved it holds (see
/// [`node_id_of`](super::node_id_of)), never taken from a name it claims.
///
/// The default, `Trust::Nodes(empty)`, admits only the node's own key
/// (other processes sharing it, such as CLI tools run with `--key`): a node
/// started without any trust configuration admits no unknown key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Admit exactly these NodeIds, plus always the node's own id. What
    /// `--trust FILE` gives ([`Trust::load`]).
    Nodes(HashSet<NodeId>),
    /// Admit any node whose certificate chain leads to one of these root
    /// certificates and which names the NodeId of its own key as the DNS
    /// name `<nodeid>.meshwire`; for organisations that issue certificates
    /// from their own CA. What `--ca FILE` gives ([`Trust::load_ca`]).
    ///
    /// Requiring that name means the CA vouched for this NodeId
    /// specifically: a certificate the same CA issued for some web server
    /// does not open the mesh.
    Ca(Vec<CertificateDer<'static>>),
}

impl Default for Trust {
    /// `Trust::Nodes(empty)`: only the node's own key.
    fn default() -> Self {
        Trust::Nodes(HashSet::new())
    }
}

impl Trust {
    /// Reads a trust file: one NodeId per line; `#` starts a comment (a
    /// whole line, or the rest of one); blank lines and surrounding spaces
    /// are ignored. A line that is not a NodeId is an error naming its line
    /// number: a typo must not silently lock a peer out.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SecurityError::Io {
            path: path.to_path_buf(),
            action: "read",
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// [`Trust::load`] on text in memory; `path` only names the source in
    /// error messages.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let mut nodes = HashSet::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let id = line
                .parse::<NodeId>()
                .map_err(|e| SecurityError::BadTrustLine {
                    path: path.as_ref().to_path_buf(),
                    line: index + 1,
                    text: raw.trim().chars().take(80).collect(),
                    reason: e.to_string(),
                })?;
            nodes.insert(id);
        }
        Ok(Trust::Nodes(nodes))
    }

    /// Reads the root certificates of CA mode from a PEM file (one or more
    /// "BEGIN CERTIFICATE" sections).
    pub fn load_ca(path: impl AsRef<Path>) -> Result<Self, SecurityError> {
        read_certificates(path.as_ref()).map(Trust::Ca)
    }

    /// The same trust, also admitting `nodes` (in `Nodes` mode; a CA
    /// decides for itself).
    pub fn with_nodes(self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        match self {
            Trust::Nodes(mut set) => {
                set.extend(nodes);
                Trust::Nodes(set)
            }
            ca @ Trust::Ca(_) => ca,
        }
    }
}

/// Every certificate in a PEM file, in file order; an error if there is
/// none, since an empty CA or chain file is always a mistake.
pub(crate) fn read_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|e| SecurityError::Io {
        path: path.to_path_buf(),
        action: "read",
        source: e,
    })?;
    let bad = |reason: String| SecurityError::BadCertificates {
        path: PathBuf::from(path),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".to_string()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbba";

    #[test]
    fn comments_blanks_and_spaces_are_ignored() {
        let text = format!("# peers\n\n  {A}  \n{B} # bob\n   # indented comment\n");
        let Trust::Nodes(set) = Trust::parse(&text, "t").unwrap() else {
            panic!("not Nodes")
        };
        assert_eq!(set.len(), 2);
        assert!(set.contains(&A.parse().unwrap()));
        assert!(set.contains(&B.parse().unwrap()));
    }

    #[test]
    fn a_bad_line_is_named_by_number() {
        let text = format!("# peers\n{A}\n\nnot-a-node-id\n");
        let err = Trust::parse(&text, "peers.trust").unwrap_err();
        match &err {
            SecurityError::BadTrustLine { line, text, .. } => {
                assert_eq!(*line, 4);
                assert_eq!(text, "not-a-node-id");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("peers.trust:4: "), "{err}");
    }

    #[test]
    fn with_nodes_adds_to_a_list_and_leaves_a_ca_alone() {
        let a: NodeId = A.parse().unwrap();
        let b: NodeId = B.parse().unwrap();
        let Trust::Nodes(set) = Trust::default() else {
            panic!("the default is Nodes")
        };
        assert!(set.is_empty(), "the default admits only the node itself");
        let Trust::Nodes(set) = Trust::default().with_nodes([a]).with_nodes([b, a]) else {
            panic!("not Nodes")
        };
        assert_eq!(set, [a, b].into_iter().collect());
        assert!(matches!(Trust::Ca(vec![]).with_nodes([a]), Trust::Ca(v) if v.is_empty()));
    }

    #[test]
    fn an_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "# nothing here\n").unwrap();
        let err = Trust::load_ca(&path).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
