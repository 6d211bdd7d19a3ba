//! A node's identity: an Ed25519 key pair, the [`NodeId`] derived from its
//! public key, and the certificate that carries the key in TLS.

use super::error::SecurityError;
use meshwire_proto::wire::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The DNS name suffix that names a node in a certificate:
/// `<nodeid>.meshwire`. Self-signed identities carry it; in CA mode the
/// CA-issued certificate must carry it for the NodeId of its own key.
pub const NAME_SUFFIX: &str = "meshwire";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4):
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) },
/// followed by the 32 key bytes. RFC 8410 forbids parameters, so every
/// valid Ed25519 SPKI is exactly these 12 bytes plus the key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The NodeId of an Ed25519 public key.
///
/// **Definition** (stable, part of the protocol): the first 16 bytes of
/// SHA-256 over the 32-byte Ed25519 public key, as in RFC 8032, with
/// nothing prepended or appended. Its text form is [`NodeId`]'s base32.
///
/// So a NodeId cannot be claimed without the private key: TLS proves
/// possession of the key, and both ends recompute the id from it.
pub fn node_id_of(public_key: &[u8; 32]) -> NodeId {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    NodeId::from_bytes(id)
}

/// The DNS name a certificate uses to name a node: `<nodeid>.meshwire`.
pub fn node_name(node: NodeId) -> String {
    format!("{node}.{NAME_SUFFIX}")
}

/// The Ed25519 public key inside a certificate (its end-entity
/// SubjectPublicKeyInfo), or why there is none.
pub(crate) fn ed25519_key_of(cert: &CertificateDer<'_>) -> Result<[u8; 32], String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or("the certificate's key is not an Ed25519 key")?;
    key.try_into()
        .map_err(|_| "the certificate's Ed25519 key is malformed".to_string())
}

/// The NodeId of the key inside a certificate.
pub(crate) fn node_id_of_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, String> {
    ed25519_key_of(cert).map(|key| node_id_of(&key))
}

/// A node's identity: its Ed25519 key pair, the [`NodeId`] derived from
/// the public key (see [`node_id_of`]), and the certificate chain that TLS
/// presents.
///
/// By default the chain is one self-signed certificate made for the key
/// (subject alternative name `<nodeid>.meshwire`, valid until the year
/// 4096): peers identify a node by its key, not by a CA's word, so the
/// certificate is only a container for the key. Organisations that run
/// their own CA replace it with [`Identity::with_certificate_chain`].
///
/// Cloning is cheap (the key is shared). `Debug` prints the NodeId only,
/// never the key.
#[derive(Clone)]
pub struct Identity {
    key: Arc<rcgen::KeyPair>,
    public_key: [u8; 32],
    node_id: NodeId,
    chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The name of the key file in a node's data directory.
    pub const KEY_FILE: &'static str = "node.key";

    /// Generates a new random identity (from the operating system's RNG).
    pub fn generate() -> Result<Self, SecurityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| {
            SecurityError::Generate {
                what: "an Ed25519 key",
                reason: e.to_string(),
            }
        })?;
        Self::from_key_pair(key, PathBuf::new())
    }

    /// Reads an identity from a PKCS#8 PEM text ("BEGIN PRIVATE KEY"), as
    /// written by [`Identity::save`] or `openssl genpkey -algorithm ed25519`.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SecurityError> {
        Self::from_pem_at(pem, PathBuf::new())
    }

    fn from_pem_at(pem: &str, path: PathBuf) -> Result<Self, SecurityError> {
        let bad = |reason: String| SecurityError::BadKey {
            path: path.clone(),
            reason,
        };
        // Look for the PKCS#8 section ourselves, so that a certificate or
        // an "EC PRIVATE KEY" gets a precise message instead of "key rejected".
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                bad("no \"BEGIN PRIVATE KEY\" section".to_string())
            }
            e => bad(format!("bad PEM: {e}")),
        })?;
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| bad(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Self::from_key_pair(key, path)
    }

    fn from_key_pair(key: rcgen::KeyPair, path: PathBuf) -> Result<Self, SecurityError> {
        let public_key: [u8; 32] =
            key.public_key_raw()
                .try_into()
                .map_err(|_| SecurityError::BadKey {
                    path,
                    reason: "the public key is not 32 bytes long".to_string(),
                })?;
        let node_id = node_id_of(&public_key);
        let cert = self_signed_certificate(&key, node_id)?;
        Ok(Self {
            key: Arc::new(key),
            public_key,
            node_id,
            chain: vec![cert],
        })
    }

    /// Reads an identity from a key file (PKCS#8 PEM).
    ///
    /// A file that group or others may read still loads, with a warning
    /// in the log: refusing would stop a node over a fixable mistake, while
    /// the warning says how to fix it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let path = path.as_ref();
        let io = |action, source| SecurityError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let text = std::fs::read(path).map_err(|e| io("read", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| io("inspect", e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the node key file can be read by other users; run `chmod 600 {}`",
                    path.display()
                );
            }
        }
        let text = String::from_utf8(text).map_err(|_| SecurityError::BadKey {
            path: path.to_path_buf(),
            reason: "the file is not text".to_string(),
        })?;
        Self::from_pem_at(&text, path.to_path_buf())
    }

    /// Writes the private key as PKCS#8 PEM to `path`, replacing the file
    /// if there is one.
    ///
    /// The file is created with mode 0600 (on unix) and appears atomically:
    /// the key is written and synced to a temporary file beside it, which
    /// is then renamed over `path`, so a crash leaves the old key or the new
    /// one, never half of one. Replacing a key changes the node's id:
    /// callers that must not do that use [`Identity::load_or_create`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SecurityError> {
        let path = path.as_ref();
        let tmp = self.write_temp(path)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            SecurityError::Io {
                path: path.to_path_buf(),
                action: "replace",
                source: e,
            }
        })?;
        sync_parent(path);
        Ok(())
    }

    /// Writes the key to a new temporary file beside `path`, mode 0600,
    /// synced; returns the temporary file's path.
    fn write_temp(&self, path: &Path) -> Result<PathBuf, SecurityError> {
        let name = path
            .file_name()
            .map_or_else(|| "node.key".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let io = |action, source| SecurityError::Io {
            path: tmp.clone(),
            action,
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(|e| io("create", e))?;
        let written = file
            .write_all(self.key.serialize_pem().as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", e));
        }
        Ok(tmp)
    }

    /// The identity kept in `dir/node.key`: loaded if the file exists,
    /// otherwise generated and saved there (creating `dir`, mode 0700).
    ///
    /// Never replaces an existing key: when two processes start on the same
    /// empty directory at once, both end up with the one that was saved
    /// first (the new file is linked into place, which fails if the name is
    /// taken, rather than renamed over it).
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let dir = dir.as_ref();
        let path = dir.join(Self::KEY_FILE);
        if path.exists() {
            return Self::load(&path);
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(|e| SecurityError::Io {
            path: dir.to_path_buf(),
            action: "create directory",
            source: e,
        })?;
        let identity = Self::generate()?;
        let tmp = identity.write_temp(&path)?;
        let placed = match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(true),
            // Another process saved its key first: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // A filesystem without hard links: rename instead. Two nodes
            // starting at the same instant could then both think they won;
            // acceptable on such filesystems, and both keys are fresh.
            Err(_) => std::fs::rename(&tmp, &path).map(|()| true),
        };
        let _ = std::fs::remove_file(&tmp);
        match placed {
            Ok(true) => {
                sync_parent(&path);
                tracing::info!(
                    node = %identity.node_id,
                    path = %path.display(),
                    "created a new node identity"
                );
                Ok(identity)
            }
            Ok(false) => Self::load(&path),
            Err(e) => Err(SecurityError::Io {
                path,
                action: "create",
                source: e,
            }),
        }
    }

    /// This node's id, derived from its public key (see [`node_id_of`]).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The certificate chain TLS presents, end-entity certificate first.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Presents `chain` (end-entity certificate first, then intermediates)
    /// instead of the self-signed certificate: for CA mode, where a CA has
    /// certified this node's key.
    ///
    /// Fails if the end-entity certificate is not for this identity's key,
    /// which would otherwise only show up as refused handshakes.
    pub fn with_certificate_chain(
        mut self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, SecurityError> {
        let leaf = chain
            .first()
            .ok_or_else(|| SecurityError::BadCertificates {
                path: PathBuf::new(),
                reason: "the certificate chain is empty".to_string(),
            })?;
        let found = ed25519_key_of(leaf).ok();
        if found != Some(self.public_key) {
            return Err(SecurityError::CertificateKeyMismatch {
                expected: self.node_id,
                found: found.map(|k| node_id_of(&k)),
            });
        }
        self.chain = chain;
        Ok(self)
    }

    /// [`Identity::with_certificate_chain`] with the chain read from a PEM
    /// file (end-entity certificate first).
    pub fn with_certificate_file(self, path: impl AsRef<Path>) -> Result<Self, SecurityError> {
        let chain = super::trust::read_certificates(path.as_ref())?;
        self.with_certificate_chain(chain)
    }

    /// A PEM certificate signing request ("BEGIN CERTIFICATE REQUEST") for
    /// this node's key, naming it `<nodeid>.meshwire`: what to send to the
    /// organisation's CA for CA mode.
    pub fn certificate_signing_request_pem(&self) -> Result<String, SecurityError> {
        let generate = |e: rcgen::Error| SecurityError::Generate {
            what: "a certificate signing request",
            reason: e.to_string(),
        };
        let params = certificate_params(self.node_id).map_err(generate)?;
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(generate)
    }

    /// The private key, in the form rustls takes it.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn certificate_params(node: NodeId) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![node_name(node)])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node.to_string());
    Ok(params)
}

/// The self-signed certificate for `key`. rcgen's default validity (1975
/// to 4096) is kept on purpose: a self-signed identity certificate is a
/// container for the key, and expiring it would only break links without
/// revoking anything.
fn self_signed_certificate(
    key: &rcgen::KeyPair,
    node: NodeId,
) -> Result<CertificateDer<'static>, SecurityError> {
    certificate_params(node)
        .and_then(|params| params.self_signed(key))
        .map(|cert| cert.der().clone())
        .map_err(|e| SecurityError::Generate {
            what: "a self-signed certificate",
            reason: e.to_string(),
        })
}

/// Makes a rename or link durable; best effort, as some filesystems refuse
/// to sync a directory and the file itself is already synced.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_sha256_prefix_of_public_key() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20.
        let id = node_id_of(&[0u8; 32]);
        assert_eq!(
            id.as_bytes(),
            &[
                0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f,
                0x8e, 0x20
            ]
        );
    }

    #[test]
    fn identity_certificate_carries_its_key() {
        let id = Identity::generate().unwrap();
        assert_eq!(id.node_id(), node_id_of(id.public_key()));
        let leaf = &id.certificate_chain()[0];
        assert_eq!(ed25519_key_of(leaf).unwrap(), *id.public_key());
        let parsed = webpki::EndEntityCert::try_from(leaf).unwrap();
        let name = rustls::pki_types::ServerName::try_from(node_name(id.node_id())).unwrap();
        parsed.verify_is_valid_for_subject_name(&name).unwrap();
    }

    #[test]
    fn pem_round_trip_keeps_the_node_id() {
        let id = Identity::generate().unwrap();
        let again = Identity::from_pkcs8_pem(&id.key.serialize_pem()).unwrap();
        assert_eq!(again.node_id(), id.node_id());
    }

    #[test]
    fn a_certificate_is_not_a_key() {
        let id = Identity::generate().unwrap();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "AAAA"
        );
        let err = Identity::from_pkcs8_pem(&pem).unwrap_err();
        assert!(err.to_string().contains("BEGIN PRIVATE KEY"), "{err}");
        let other = Identity::generate().unwrap();
        let err = id
            .with_certificate_chain(other.certificate_chain().to_vec())
            .unwrap_err();
        assert!(
            matches!(err, SecurityError::CertificateKeyMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_non_ed25519_key_is_refused_with_advice() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = Identity::from_pkcs8_pem(&p256.serialize_pem()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Ed25519"), "{text}");
        assert!(text.contains("move it away"), "{text}");
    }

    #[test]
    fn csr_names_the_node() {
        let id = Identity::generate().unwrap();
        let csr = id.certificate_signing_request_pem().unwrap();
        assert!(
            csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{csr}"
        );
    }
}
