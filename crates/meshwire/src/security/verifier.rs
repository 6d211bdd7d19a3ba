//! The certificate verifiers rustls calls during the handshake: one for
//! the client side (checking the server) and one for the server side
//! (checking clients), sharing one decision.
//!
//! **Nodes mode** replaces chain validation with a key check. Identity
//! certificates are self-signed containers for a key, so there is no chain
//! to validate; what matters is that the peer holds the private key of a
//! trusted NodeId. The verifier recomputes the NodeId from the key in the
//! end-entity certificate and admits it or not; rustls then calls
//! `verify_tls13_signature`, which checks the handshake signature against
//! that same key, proving possession. The certificate's own signature,
//! validity dates and names are not consulted: they add nothing that the
//! key check does not already decide.
//!
//! **CA mode** runs rustls's WebPKI verifiers against the CA roots, with
//! the name `<nodeid>.meshwire` computed from the presented key as the name
//! to check, so the CA must have certified that NodeId (see
//! [`Trust::Ca`](super::Trust::Ca)).
//!
//! Only Ed25519 handshake signatures are offered and accepted: a NodeId is
//! the digest of an Ed25519 key, so nothing else can be a node.

use super::error::Refusal;
use super::identity::{node_id_of_certificate, node_name};
use meshwire_proto::wire::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::collections::HashSet;
use std::sync::Arc;

/// Who is admitted, as the verifiers hold it.
#[derive(Debug)]
pub(crate) enum Admit<Ca: ?Sized> {
    /// These NodeIds (the node's own id already included).
    Nodes(HashSet<NodeId>),
    /// Whatever this WebPKI verifier accepts under the `<nodeid>.meshwire`
    /// name of the presented key.
    Ca(Arc<Ca>),
}

/// The decision shared by both sides: the presented key's NodeId, if
/// admitted, or why not.
#[derive(Debug)]
pub(crate) struct PeerCheck<Ca: ?Sized> {
    pub(crate) admit: Admit<Ca>,
    /// The NodeId the client dialled; `None` on the server side and for
    /// clients that accept any admitted node.
    pub(crate) expected: Option<NodeId>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl<Ca: ?Sized> PeerCheck<Ca> {
    /// Derives the NodeId, compares it with the expected one, and in Nodes
    /// mode decides. In CA mode the caller still has to run the chain check.
    fn identify(&self, end_entity: &CertificateDer<'_>) -> Result<NodeId, Refusal> {
        let node = node_id_of_certificate(end_entity)
            .map_err(|reason| Refusal::NotAnIdentity { reason })?;
        if let Some(expected) = self.expected {
            if expected != node {
                return Err(Refusal::WrongNode {
                    expected,
                    presented: node,
                });
            }
        }
        if let Admit::Nodes(set) = &self.admit {
            if !set.contains(&node) {
                return Err(Refusal::NotTrusted { node });
            }
        }
        Ok(node)
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Checks the signature with the key in `cert`, the one `identify`
        // admitted: this is the proof of possession.
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn refuse(r: Refusal) -> Error {
    tracing::debug!(node = ?r.node(), "TLS peer refused: {r}");
    r.into()
}

/// The name a CA-mode certificate must carry for `node`.
fn ca_name(node: NodeId) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(node_name(node))
        .map_err(|e| Error::General(format!("node name {node}: {e}")))
}

fn tls12_refused() -> Error {
    // Unreachable in practice: the configs only enable TLS 1.3.
    Error::General("TLS 1.2 is not accepted by meshwire".to_string())
}

/// Checks the server, on the client side.
pub(crate) type ServerCheck = PeerCheck<WebPkiServerVerifier>;

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let node = self.identify(end_entity).map_err(refuse)?;
        if let Admit::Ca(webpki) = &self.admit {
            // The name we dialled is irrelevant (SNI is off and addresses
            // are not identities); the certificate must name its own key.
            let name = ca_name(node)?;
            webpki
                .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
                .map_err(|reason| refuse(Refusal::NotCertified { node, reason }))?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Checks clients, on the server side. Client authentication is mandatory.
pub(crate) type ClientCheck = PeerCheck<dyn ClientCertVerifier>;

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.admit {
            Admit::Ca(webpki) => webpki.root_hint_subjects(),
            Admit::Nodes(_) => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let node = self.identify(end_entity).map_err(refuse)?;
        if let Admit::Ca(webpki) = &self.admit {
            let certified = webpki
                .verify_client_cert(end_entity, intermediates, now)
                .and_then(|_| {
                    // WebPKI's client verifier checks no names; the CA must
                    // still have certified this NodeId.
                    let name = ca_name(node)?;
                    webpki::EndEntityCert::try_from(end_entity)
                        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
                        .map_err(|e| {
                            Error::InvalidCertificate(rustls::CertificateError::Other(
                                rustls::OtherError(Arc::new(e)),
                            ))
                        })
                });
            certified.map_err(|reason| refuse(Refusal::NotCertified { node, reason }))?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
