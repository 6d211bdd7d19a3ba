//! A certificate authority held in memory: certifies node keys for CA-mode
//! trust ([`Trust::Ca`]).
//!
//! What it is for: a group of nodes created together, such as a test
//! cluster, the `demo`, or the examples, that must admit each other without
//! anyone writing their NodeIds into trust files first. Each node gets its
//! own Ed25519 identity; the authority signs a certificate naming its NodeId
//! (`<nodeid>.meshwire`), and every node trusts the authority's root. Links
//! are then mutually authenticated TLS 1.3 exactly as in production CA mode,
//! and a key the authority never certified is refused.
//!
//! Organisations with a CA of their own use it instead: they sign the
//! request from [`Identity::certificate_signing_request_pem`] and give nodes
//! `--ca FILE` and `--cert FILE`.

use super::error::SecurityError;
use super::identity::{node_name, Identity};
use super::trust::Trust;
use rustls::pki_types::CertificateDer;
use std::fmt;

/// An in-memory certificate authority for CA-mode trust. See the
/// [module docs](self).
///
/// ```
/// use meshwire::security::Authority;
/// # fn main() -> Result<(), meshwire::security::SecurityError> {
/// let ca = Authority::generate("my test mesh")?;
/// let a = ca.issue()?; // a fresh node identity, certified
/// let b = ca.issue()?;
/// assert_ne!(a.node_id(), b.node_id());
/// // Node::builder().tls(a, ca.trust()) ... Node::builder().tls(b, ca.trust())
/// # Ok(()) }
/// ```
pub struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new authority with a fresh key and a self-signed root certificate
    /// whose common name is `name`.
    pub fn generate(name: &str) -> Result<Self, SecurityError> {
        let generate = |e: rcgen::Error| SecurityError::Generate {
            what: "a certificate authority",
            reason: e.to_string(),
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self { cert, key })
    }

    /// The trust every node of this authority uses: admit whoever it
    /// certified.
    pub fn trust(&self) -> Trust {
        Trust::Ca(vec![self.root()])
    }

    /// The root certificate.
    pub fn root(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The root certificate in PEM, for `--ca FILE`.
    pub fn root_pem(&self) -> String {
        self.cert.pem()
    }

    /// `identity`, presenting a certificate from this authority for its
    /// key and NodeId.
    pub fn certify(&self, identity: Identity) -> Result<Identity, SecurityError> {
        let generate = |e: rcgen::Error| SecurityError::Generate {
            what: "a node certificate",
            reason: e.to_string(),
        };
        let params =
            rcgen::CertificateParams::new(vec![node_name(identity.node_id())]).map_err(generate)?;
        let leaf = params
            .signed_by(&PublicKey(*identity.public_key()), &self.cert, &self.key)
            .map_err(generate)?;
        identity.with_certificate_chain(vec![leaf.der().clone()])
    }

    /// A fresh node identity, certified by this authority.
    pub fn issue(&self) -> Result<Identity, SecurityError> {
        self.certify(Identity::generate()?)
    }
}

/// A bare Ed25519 public key, as a CA gets it from a signing request: the
/// authority never sees the node's private key.
struct PublicKey([u8; 32]);

impl rcgen::PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_identities_carry_their_own_node_name() {
        let ca = Authority::generate("t").unwrap();
        let id = ca.issue().unwrap();
        let leaf = &id.certificate_chain()[0];
        let parsed = webpki::EndEntityCert::try_from(leaf).unwrap();
        let name = rustls::pki_types::ServerName::try_from(node_name(id.node_id())).unwrap();
        parsed.verify_is_valid_for_subject_name(&name).unwrap();
        assert!(ca.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
