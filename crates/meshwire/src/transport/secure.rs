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
use std::sync::Arc;
use std::time::Duration;

/// A TLS node's link configurations, built once and shared by the accept
/// loop and every dialler.
#[derive(Clone)]
pub(crate) struct LinkTls {
    server: Arc<ServerConfig>,
    /// For dialling addresses: any admitted node may answer, and the
    /// handshake says which one did.
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls").finish_non_exhaustive()
    }
}

impl LinkTls {
    pub(crate) fn new(identity: &Identity, trust: &Trust) -> Result<Self, SecurityError> {
        Ok(Self {
            server: security::tls::server_config(identity, trust)?,
            client: security::tls::client_config(identity, trust, None)?,
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
            let (stream, peer) = security::tls::accept(&tls.server, io, timeout).await?;
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
            let (stream, peer) = security::tls::connect(&tls.client, io, timeout).await?;
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
