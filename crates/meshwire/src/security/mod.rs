//! Node identities, trust, and mutually authenticated TLS 1.3 for links.
//!
//! Every node holds an Ed25519 key ([`Identity`]); its [`NodeId`] is the
//! digest of the public key ([`node_id_of`]), so an id cannot be claimed
//! without the key. During the TLS handshake each end proves its key, the
//! other end recomputes the NodeId from it and admits it or not
//! ([`Trust`]): a list of NodeIds, or an organisation's CA.
//!
//! ```text
//!   DIR/node.key ──► Identity ──┬─► node_id() = SHA-256(public key)[..16]
//!   (PKCS#8, 0600)              └─► self-signed cert, SAN <nodeid>.meshwire
//!   --trust FILE ──► Trust::Nodes ─┐
//!   --ca FILE    ──► Trust::Ca ────┴─► tls::server_config / tls::client_config
//!                                        └─► tls::accept / tls::connect
//!                                              → (TLS stream, peer NodeId)
//! ```
//!
//! | part | what |
//! |---|---|
//! | [`Identity`], [`node_id_of`] | the key pair, its NodeId, its certificate; key files |
//! | [`Trust`] | who is admitted: trust files, CA roots |
//! | [`Authority`] | an in-memory CA that certifies the nodes of a test, demo or example |
//! | [`permissions`] | who may publish, subscribe, serve and call what: the TOML file routers enforce |
//! | [`tls`] | rustls configurations (TLS 1.3 only, mutual auth) and handshake helpers |
//! | [`SecurityError`], [`HandshakeError`], [`Refusal`] | set-up errors, per-connection errors, why a peer was turned away |
//!
//! The default [`Trust`] admits only the node's own key: a node that was
//! told nothing admits no unknown key.
//!
//! Every node runs [`tls::accept`] and [`tls::connect`] on every network
//! link unless built with
//! [`NodeBuilder::insecure`](crate::NodeBuilder::insecure); a node told
//! nothing uses its data directory's key (or a fresh one) and admits only
//! that key. In-memory (`mem:`) links never leave the process and stay
//! plaintext. [`Authority`] certifies the nodes of a test or demo in one
//! line ([`NodeBuilder::certified_by`](crate::NodeBuilder::certified_by)).

mod authority;
mod error;
mod identity;
pub mod permissions;
mod sniff;
pub mod tls;
mod trust;
mod verifier;

pub use authority::Authority;
pub use error::{HandshakeError, Refusal, SecurityError};
pub use identity::{node_id_of, node_name, Identity, NAME_SUFFIX};
pub use meshwire_proto::wire::{NodeId, Operation};
pub use permissions::{Permissions, PermissionsError};
pub use trust::Trust;
