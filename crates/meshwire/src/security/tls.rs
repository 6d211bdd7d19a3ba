//! TLS 1.3 with mutual authentication: the rustls configurations and the
//! handshake helpers links use.
//!
//! What the configurations fix, and why:
//! - **TLS 1.3 only.** No TLS 1.2 (a peer that offers only 1.2 is refused),
//!   so only AEAD suites with forward secrecy exist.
//! - **Client certificates are mandatory**: both ends prove a key.
//! - **No 0-RTT and no session resumption.** Early data can be replayed,
//!   and a resumed session would skip the certificate check, so a peer
//!   removed from the trust list could come back on an old ticket. A full
//!   handshake is one round trip on links that live for hours.
//! - **No SNI.** Nodes do not host several names, and SNI would put the
//!   NodeId being dialled on the wire in clear.
//! - The `ring` crypto provider is passed explicitly (no process-wide
//!   default is installed), so embedding programs keep control of theirs.
//!
//! ```text
//!  client                                        server
//!  connect(client_config(id, trust, expected)) ──► accept(server_config(id, trust))
//!    checks: server key → NodeId ∈ trust,          checks: client key → NodeId ∈ trust
//!            and = expected                         (refusal names the NodeId)
//!  ◄───────────── (TlsStream, peer NodeId) on both sides ─────────────►
//! ```
//!
//! One thing TLS 1.3 cannot give the client: the server checks the
//! client's certificate after the client considers the handshake done, so
//! when the server refuses a client, the client's [`connect`] still
//! succeeds and the refusal arrives as an error (an alert) on its first
//! read. A link protocol that waits for the server's first message learns
//! of it there.

use super::error::{HandshakeError, SecurityError};
use super::identity::{node_id_of_certificate, Identity};
use super::sniff::{self, Opening};
use super::trust::Trust;
use super::verifier::{Admit, ClientCheck, PeerCheck, ServerCheck};
use meshwire_proto::wire::NodeId;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub use super::sniff::Rewound;
pub use rustls;
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// The default for the handshake timeout of [`accept`] and [`connect`]:
/// long enough for a loaded machine, short enough that stalled
/// connections do not pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one protocol version links use.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, SecurityError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone())?;
    }
    Ok(Arc::new(store))
}

fn nodes_admitted(identity: &Identity, set: &HashSet<NodeId>) -> HashSet<NodeId> {
    let mut admitted = set.clone();
    admitted.insert(identity.node_id());
    admitted
}

/// The configuration for the accepting side of links: TLS 1.3 only,
/// client certificates mandatory and checked against `trust`, this
/// identity's certificate chain presented, no resumption, no early data.
///
/// Build it once and share it: every [`accept`] takes the same `Arc`.
pub fn server_config(
    identity: &Identity,
    trust: &Trust,
) -> Result<Arc<ServerConfig>, SecurityError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let admit: Admit<dyn rustls::server::danger::ClientCertVerifier> = match trust {
        Trust::Nodes(set) => Admit::Nodes(nodes_admitted(identity, set)),
        Trust::Ca(roots) => Admit::Ca(
            WebPkiClientVerifier::builder_with_provider(root_store(roots)?, provider.clone())
                .build()
                .map_err(|e| SecurityError::BadCertificates {
                    path: Default::default(),
                    reason: format!("cannot use the CA roots: {e}"),
                })?,
        ),
    };
    let verifier = Arc::new(ClientCheck {
        admit,
        expected: None,
        algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            identity.certificate_chain().to_vec(),
            identity.private_key_der(),
        )?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The configuration for the dialling side of links: TLS 1.3 only, this
/// identity's certificate chain presented as the client certificate, the
/// server checked against `trust` and, when `expected` is given, required
/// to be that node. No resumption, no early data, no SNI.
///
/// With `expected = None` any admitted node is accepted, and [`connect`]
/// says which one answered.
pub fn client_config(
    identity: &Identity,
    trust: &Trust,
    expected: Option<NodeId>,
) -> Result<Arc<ClientConfig>, SecurityError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let admit = match trust {
        Trust::Nodes(set) => Admit::Nodes(nodes_admitted(identity, set)),
        Trust::Ca(roots) => Admit::Ca(
            WebPkiServerVerifier::builder_with_provider(root_store(roots)?, provider.clone())
                .build()
                .map_err(|e| SecurityError::BadCertificates {
                    path: Default::default(),
                    reason: format!("cannot use the CA roots: {e}"),
                })?,
        ),
    };
    let verifier: Arc<ServerCheck> = Arc::new(PeerCheck {
        admit,
        expected,
        algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            identity.certificate_chain().to_vec(),
            identity.private_key_der(),
        )?;
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// Runs the server side of the handshake on `io` (a TCP or Unix stream),
/// within `timeout`. Returns the encrypted stream and the peer's NodeId,
/// derived from the key it proved it holds.
///
/// On failure the connection is dropped (closed). Log the error with its
/// [`HandshakeError::peer`]; a refused peer has already been told with a
/// TLS alert, and a plaintext meshwire peer with a meshwire `Close` frame
/// (a TLS alert would mean nothing to it). Bytes that do not open a TLS
/// handshake are refused before any TLS work.
pub async fn accept<S>(
    config: &Arc<ServerConfig>,
    io: S,
    timeout: Duration,
) -> Result<(ServerTlsStream<Rewound<S>>, NodeId), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    let handshake = async {
        let (opening, mut io) = sniff::read_opening(io).await.map_err(HandshakeError::Io)?;
        match opening {
            Opening::Tls => acceptor.accept(io).await.map_err(HandshakeError::from_io),
            Opening::PlainMeshwire => {
                sniff::refuse_plaintext(&mut io).await;
                Err(HandshakeError::NotTls(
                    "a plaintext meshwire Hello".to_owned(),
                ))
            }
            Opening::Other(what) => Err(HandshakeError::NotTls(what)),
        }
    };
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))??;
    let node = peer_node_id(stream.get_ref().1.peer_certificates())?;
    Ok((stream, node))
}

/// Runs the client side of the handshake on `io` (a TCP or Unix stream),
/// within `timeout`. Returns the encrypted stream and the server's NodeId,
/// derived from the key it proved it holds (and equal to the expected one
/// if `config` was built with one).
///
/// A server that refuses this client is only heard from on the first read
/// (see the [module docs](self)).
pub async fn connect<S>(
    config: &Arc<ClientConfig>,
    io: S,
    timeout: Duration,
) -> Result<(ClientTlsStream<S>, NodeId), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    // Not sent (SNI is off) and not checked (the verifier checks keys),
    // but rustls needs a name.
    let name = ServerName::try_from(super::identity::NAME_SUFFIX)
        .map_err(|e| HandshakeError::Tls(rustls::Error::General(e.to_string())))?;
    let stream = tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
        .map_err(HandshakeError::from_io)?;
    let node = peer_node_id(stream.get_ref().1.peer_certificates())?;
    Ok((stream, node))
}

/// The NodeId of the peer of a finished handshake. The verifier already
/// admitted this key; it is derived again here rather than passed out of
/// the verifier, which rustls gives no channel for.
fn peer_node_id(certs: Option<&[CertificateDer<'static>]>) -> Result<NodeId, HandshakeError> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or_else(|| HandshakeError::Tls(rustls::Error::NoCertificatesPresented))?;
    node_id_of_certificate(leaf)
        .map_err(|reason| HandshakeError::Tls(rustls::Error::General(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_tls13_only_without_resumption() {
        let id = Identity::generate().unwrap();
        let server = server_config(&id, &Trust::default()).unwrap();
        assert_eq!(server.send_tls13_tickets, 0);
        assert_eq!(server.max_early_data_size, 0);
        assert!(!server.session_storage.can_cache());
        let client = client_config(&id, &Trust::default(), None).unwrap();
        assert!(!client.enable_early_data);
        assert!(!client.enable_sni);
        assert!(client
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.tls13().is_some()));
    }

    #[test]
    fn a_bad_ca_root_is_a_setup_error() {
        let id = Identity::generate().unwrap();
        let trust = Trust::Ca(vec![CertificateDer::from(vec![1, 2, 3])]);
        let err = server_config(&id, &trust).unwrap_err();
        assert!(matches!(err, SecurityError::Tls(_)), "{err:?}");
    }
}
