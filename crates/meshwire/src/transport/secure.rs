//! TLS on node links: the node's rustls configurations, and the handshake
//! run on each new TCP or Unix connection before it becomes a link.
//!
//! The handshake runs in the task that accepted or dialled the connection
//! (never in the engine), bounded by the node's handshake timeout. Its
//! result is the connection as split halves plus the NodeId the peer proved
//! with its key; the engine then requires the MWIR `Hello`/`Welcome` to name
//! that same node.
//!
//! In-memory (`mem:`) connections stay plaintext: they never leave the
//! process, and carry no authenticated id.

use super::{Raw, Stream};
use crate::security::{self, HandshakeError, Identity, NodeId, SecurityError, Trust};
use rustls::{ClientConfig, ServerConfig};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A TLS node's link configurations, shared by the accept loop, every
/// dialler and the engine. Each new connection takes the configurations
/// in force; [`LinkTls::set_trust`] replaces them (a trust reload), which
/// the next connection sees.
#[derive(Clone)]
pub(crate) struct LinkTls {
    identity: Identity,
    configs: Arc<RwLock<Configs>>,
}

struct Configs {
    server: Arc<ServerConfig>,
    /// For dialling addresses: any admitted node may answer, and the
    /// handshake says which one did.
    client: Arc<ClientConfig>,
    /// What they admit.
    trust: Trust,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls").finish_non_exhaustive()
    }
}

impl LinkTls {
    pub(crate) fn new(identity: &Identity, trust: &Trust) -> Result<Self, SecurityError> {
        Ok(Self {
            identity: identity.clone(),
            configs: Arc::new(RwLock::new(Configs::new(identity, trust)?)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Configs> {
        self.configs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn server(&self) -> Arc<ServerConfig> {
        self.read().server.clone()
    }

    fn client(&self) -> Arc<ClientConfig> {
        self.read().client.clone()
    }

    /// Whether the trust in force admits `node` by its id alone (a trust
    /// list). `None` in CA mode, where admission depends on a certificate
    /// chain the id does not carry.
    pub(crate) fn admits(&self, node: NodeId) -> Option<bool> {
        match &self.read().trust {
            Trust::Nodes(set) => Some(node == self.identity.node_id() || set.contains(&node)),
            _ => None,
        }
    }

    /// Admits what `trust` admits from the next connection on. On error
    /// (e.g. unusable CA roots) the trust in force stays.
    pub(crate) fn set_trust(&self, trust: &Trust) -> Result<(), SecurityError> {
        let fresh = Configs::new(&self.identity, trust)?;
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

impl Configs {
    fn new(identity: &Identity, trust: &Trust) -> Result<Self, SecurityError> {
        Ok(Self {
            server: security::tls::server_config(identity, trust)?,
            client: security::tls::client_config(identity, trust, None)?,
            trust: trust.clone(),
        })
    }
}

/// A connection ready to become a link, and the peer's NodeId when TLS
/// authenticated it.
pub(crate) type Secured = (Stream, Option<NodeId>);

/// The accepting side: TLS over the socket (TCP or Unix) when `tls` is set, plaintext otherwise
/// (and always for `mem:`).
pub(crate) async fn accept(
    raw: Raw,
    tls: Option<&LinkTls>,
    timeout: Duration,
) -> Result<Secured, HandshakeError> {
    match (raw, tls) {
        (Raw::Socket(io, remote), Some(tls)) => {
            let (stream, peer) = security::tls::accept(&tls.server(), io, timeout).await?;
            Ok((halves(stream, remote), Some(peer)))
        }
        (raw, _) => Ok((raw.plain(), None)),
    }
}

/// The dialling side: TLS over the socket (TCP or Unix) when `tls` is set, plaintext otherwise
/// (and always for `mem:`).
pub(crate) async fn connect(
    raw: Raw,
    tls: Option<&LinkTls>,
    timeout: Duration,
) -> Result<Secured, HandshakeError> {
    match (raw, tls) {
        (Raw::Socket(io, remote), Some(tls)) => {
            let (stream, peer) = security::tls::connect(&tls.client(), io, timeout).await?;
            Ok((halves(stream, remote), Some(peer)))
        }
        (raw, _) => Ok((raw.plain(), None)),
    }
}

fn halves<S>(stream: S, remote: String) -> Stream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (r, w) = tokio::io::split(stream);
    Stream {
        read: Box::new(r),
        write: Box::new(w),
        remote,
    }
}

/// Whether this connection will run TLS (so its handshake belongs in a
/// task of its own).
pub(crate) fn wants_tls(raw: &Raw, tls: Option<&LinkTls>) -> bool {
    tls.is_some() && matches!(raw, Raw::Socket(..))
}
