//! # meshwire — nodes that talk to each other
//!
//! Reliable pub/sub and request/reply between the processes of a
//! distributed system, embedded: no broker to install. Every process runs a
//! [`Node`]; nodes that listen are routers and form a full mesh, the others
//! attach to a router.
//!
//! ```text
//!  client ──┐                       ┌── client
//!  client ──┤ router ◄──────► router ├── client      at most one router-to-router hop
//!           └──────► router ◄──────┘
//! ```
//!
//! Delivery, per publish: **reliable** (the default: survives any link
//! failure — the session resumes and nothing is lost or duplicated),
//! **best effort** (at most once), each **ordered** (default) or
//! **unordered**. `publish(..).await` resolves when the first router owns
//! the message.
//!
//! ```no_run
//! # async fn demo() -> meshwire::Result<()> {
//! use meshwire::{security::Authority, Node};
//! // Links are mutually authenticated TLS 1.3; these nodes admit each
//! // other because one authority certified both (see `security`).
//! let ca = Authority::generate("example")?;
//! let a = Node::builder().listen("127.0.0.1:0").certified_by(&ca).start().await?;
//! let b = Node::builder().listen("127.0.0.1:0").certified_by(&ca)
//!     .peer(a.listen_addr().unwrap()).start().await?;
//! let mut workers = a.subscribe("jobs.>").group("workers").await?;
//! b.publish("jobs.resize", "img-42").await?;
//! let job = workers.recv().await.unwrap();
//! # Ok(()) }
//! ```
//!
//! ## Typed RPC
//!
//! `#[meshwire::service]` on a trait of async methods gives a typed client
//! and a server; underneath, [`rpc::Service`] and [`rpc::Client`] do the
//! work: discovery by heartbeats, a [`balance::Policy`] per client,
//! deadlines enforced on the server, cancellation when the caller gives
//! up, idempotent failover within a retry budget. See `docs/RPC.md`.
//!
//! ## Modules
//! | part | what |
//! |---|---|
//! | [`Node`], [`NodeBuilder`] | start a router or client, publish, subscribe, request |
//! | [`Subscription`], [`Message`] | what you receive |
//! | [`rpc`], [`service`] | typed RPC: services, clients, the macro |
//! | [`balance`] | balancing policies, outlier ejection, retry budgets |
//! | [`state`] | shared state: replicated maps ([`state::SharedMap`]), linearizable (Raft, on openraft) or eventual (CRDT) |
//! | [`testkit`] | TCP proxies that cut links or damage TLS records on demand, for tests and demos; a linearizability checker for replicated maps |
//! | [`security`] | Ed25519 identities, trust lists and CAs, mutual TLS 1.3 on every network link (on by default; `NodeBuilder::insecure` to opt out), per-NodeId permissions (`NodeBuilder::permissions_file`) |
//! | [`NodeConfig`], [`StrikeConfig`] | every limit and timer, with defaults (abuse limits: `docs/SECURITY.md`) |
//! | `abuse` (private) | the accept-time gate (`Admission`), strikes against ping and reconnect floods |
//! | `engine` (private) | the one task per node that owns sessions and routing |
//! | `link`, `transport` (private) | socket I/O: TCP, Unix sockets (`unix:PATH`) and in-memory (`mem:NAME`) |
//!
//! The protocol itself (frames, sessions, routing tables) lives in the
//! sans-IO crate [`meshwire_proto`], re-exported as [`proto`].
//!
//! ## Metrics
//! Counters and gauges go through the [`metrics`] facade (install any
//! recorder): `meshwire_messages_published_total`,
//! `meshwire_messages_delivered_total`, `meshwire_messages_forwarded_total`,
//! `meshwire_messages_unmatched_total`, `meshwire_messages_unroutable_total`,
//! `meshwire_messages_lost_total`,
//! `meshwire_best_effort_dropped_total`, `meshwire_links_up`,
//! `meshwire_links_opened_total`, `meshwire_links_refused_total`,
//! `meshwire_frames_rejected_total`, `meshwire_protocol_errors_total`,
//! `meshwire_handshake_timeouts_total`, `meshwire_slow_consumers_total`,
//! `meshwire_permission_denied_total` (label `op`);
//! `meshwire_connections_refused_total{reason}` (closed at accept by a
//! limit), `meshwire_strikes_total{count}`,
//! `meshwire_nodes_refused_total{count}`, `meshwire_strikes_untracked_total`;
//! for RPC `meshwire_rpc_calls_served_total`, `meshwire_rpc_cancelled_total`,
//! `meshwire_rpc_deadline_exceeded_total`, `meshwire_rpc_handler_panics_total`,
//! `meshwire_rpc_retries_total`, `meshwire_rpc_hedges_total`.

mod abuse;
pub mod balance;
mod config;
mod engine;
mod error;
mod link;
mod node;
mod pubsub;
pub mod rpc;
pub mod security;
pub mod state;
pub mod testkit;
mod transport;

pub use config::{NodeConfig, StrikeConfig};
pub use engine::{PeerStatus, Status};
pub use error::{Error, Result};
pub use meshwire_macros::service;
pub use meshwire_proto as proto;
pub use meshwire_proto::wire::NodeId;
pub use node::{Node, NodeBuilder, Publish, Replies, Request, Subscribe};
pub use pubsub::{Message, Subscription};
