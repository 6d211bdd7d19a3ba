//! The errors of the security layer: setting it up ([`SecurityError`]),
//! running a handshake ([`HandshakeError`]), and why a verifier turned a
//! peer away ([`Refusal`]).
//!
//! They are kept apart because they are handled apart: a [`SecurityError`]
//! is fatal at start-up (fix a file and restart), a [`HandshakeError`]
//! concerns one connection (close it, count it, keep serving the others),
//! and a [`Refusal`] is what the log line and the metric should name.

use meshwire_proto::wire::NodeId;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while loading, saving or using key, trust and
/// certificate files, or while building a TLS configuration. All of these
/// are fatal for the node that hits them: fix the file and start again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A key file does not hold a PKCS#8 Ed25519 private key.
    #[error(
        "{} is not a usable node key ({reason}); it must be an Ed25519 private key in \
         PKCS#8 PEM (\"BEGIN PRIVATE KEY\"). Restore it from a backup, or move it away to \
         create a new identity (this changes the node's id: peers that trust the old id \
         must be told the new one)",
        path.display()
    )]
    BadKey {
        /// The file (empty when the key did not come from a file).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a trust file is not a NodeId.
    #[error(
        "{}:{line}: {text:?} is not a node id ({reason}); write one node id per line \
         (26 characters of a-z and 2-7, as printed by `meshwire keygen` or in a node's \
         ready line), `#` starts a comment",
        path.display()
    )]
    BadTrustLine {
        /// The trust file.
        path: PathBuf,
        /// The line number, counting from 1.
        line: usize,
        /// The offending line (trimmed, at most 80 characters).
        text: String,
        /// Why it is not a NodeId.
        reason: String,
    },
    /// A certificate file holds no certificate, or one that cannot be used.
    #[error(
        "{}: {reason}; it must hold PEM certificates (\"BEGIN CERTIFICATE\")",
        path.display()
    )]
    BadCertificates {
        /// The file (empty when the certificates did not come from a file).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate chain given to an identity certifies another key.
    #[error(
        "the certificate is for {}, but this node's key is {expected}; \
         have the CA sign a certificate for this node's key \
         (see Identity::certificate_signing_request_pem)",
        found.map_or_else(|| "a key that is not Ed25519".to_string(), |id| format!("node {id}"))
    )]
    CertificateKeyMismatch {
        /// The NodeId of this identity's key.
        expected: NodeId,
        /// The NodeId of the key in the certificate, if it is Ed25519.
        found: Option<NodeId>,
    },
    /// Generating a key, a certificate or a certificate request failed.
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a TLS handshake failed. Concerns one connection only: close it and
/// keep serving the others.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// This side refused the peer: it is not trusted, not the node that was
    /// expected, or its certificate is not acceptable. Log it with
    /// [`HandshakeError::peer`]; trying again will not help until the trust
    /// configuration changes.
    #[error("refused the peer: {0}")]
    Refused(Refusal),
    /// The peer refused this side (a TLS alert came back: most often this
    /// node is not in the peer's trust list, or the peer expected another
    /// node). The peer's log names the reason.
    #[error(
        "the peer refused the handshake (TLS alert {0:?}); is this node's id in the peer's \
         trust list, and is the peer the node you meant?"
    )]
    RefusedByPeer(rustls::AlertDescription),
    /// The peer does not speak TLS: a plaintext meshwire node (started with
    /// `--insecure`), or another protocol altogether.
    #[error(
        "the peer does not speak TLS (it sent {0}); a meshwire node started with --insecure \
         cannot talk to a secure one: start both with or both without --insecure"
    )]
    NotTls(String),
    /// The handshake did not finish within the handshake timeout
    /// (retryable: the peer may have been slow, or may be a stalled client).
    #[error("the TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// Any other TLS protocol failure: a TLS 1.2-only peer, no common cipher
    /// suite, a corrupt record.
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// The connection failed or was closed during the handshake
    /// (retryable).
    #[error("connection failed during the TLS handshake: {0}")]
    Io(io::Error),
}

impl HandshakeError {
    /// The NodeId of the peer this side refused, when it presented an
    /// Ed25519 key; what a log line or a per-peer strike counter wants.
    pub fn peer(&self) -> Option<NodeId> {
        match self {
            HandshakeError::Refused(r) => r.node(),
            _ => None,
        }
    }

    /// True for failures where trying again later may succeed (timeouts,
    /// dropped connections); false for refusals and protocol mismatches,
    /// which need a configuration change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandshakeError::Timeout(_) | HandshakeError::Io(_))
    }

    /// Classifies what tokio-rustls returned. It reports TLS failures as an
    /// `io::Error` wrapping a `rustls::Error`; our verifiers put a
    /// [`Refusal`] inside that, so we dig it back out.
    pub(crate) fn from_io(e: io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::from_tls(tls),
            None => HandshakeError::Io(e),
        }
    }

    /// Classifies a TLS failure (ours, or the peer's alert).
    pub(crate) fn from_tls(tls: &rustls::Error) -> Self {
        use rustls::{CertificateError, Error as E, InvalidMessage};
        match tls {
            E::InvalidCertificate(CertificateError::Other(other)) => {
                match other.0.downcast_ref::<Refusal>() {
                    Some(refusal) => HandshakeError::Refused(refusal.clone()),
                    None => HandshakeError::Tls(tls.clone()),
                }
            }
            E::AlertReceived(alert) => HandshakeError::RefusedByPeer(*alert),
            E::InvalidMessage(InvalidMessage::InvalidContentType) => {
                HandshakeError::NotTls("bytes that are not a TLS record".to_string())
            }
            _ => HandshakeError::Tls(tls.clone()),
        }
    }
}

/// Why this side turned a peer away during the handshake. Travels inside
/// the `rustls::Error` a verifier returns (as
/// `CertificateError::Other`), so that whoever logs the failed handshake
/// can name the peer; [`HandshakeError::Refused`] hands it back typed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer's key is not in the trust list.
    #[error(
        "node {node} is not trusted; to admit it, add the line `{node}` to this node's \
         trust file (--trust)"
    )]
    NotTrusted {
        /// The peer's NodeId (derived from the key it presented).
        node: NodeId,
    },
    /// The peer is trusted, but it is not the node this side dialled.
    #[error(
        "expected node {expected}, but the peer presented the key of node {presented}; \
         check the address, or the node id you configured for it"
    )]
    WrongNode {
        /// The NodeId this side expected.
        expected: NodeId,
        /// The NodeId of the key the peer presented.
        presented: NodeId,
    },
    /// In CA mode: the certificate chain does not lead to a trusted CA, is
    /// expired, or does not name the NodeId of its own key.
    #[error(
        "node {node} was refused in CA mode: {reason}; its certificate must be issued by a \
         CA in this node's CA file and carry the DNS name {node}.meshwire"
    )]
    NotCertified {
        /// The peer's NodeId (derived from the key it presented).
        node: NodeId,
        /// What the certificate check said.
        reason: rustls::Error,
    },
    /// The peer's certificate does not carry an Ed25519 key, so it has no
    /// NodeId.
    #[error(
        "the peer's certificate carries no Ed25519 key ({reason}); meshwire node identities \
         are Ed25519 keys"
    )]
    NotAnIdentity {
        /// What is wrong with the certificate.
        reason: String,
    },
}

impl Refusal {
    /// The NodeId of the refused peer, when it has one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Refusal::NotTrusted { node } | Refusal::NotCertified { node, .. } => Some(*node),
            Refusal::WrongNode { presented, .. } => Some(*presented),
            Refusal::NotAnIdentity { .. } => None,
        }
    }
}

impl From<Refusal> for rustls::Error {
    fn from(r: Refusal) -> Self {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(r),
        )))
    }
}
