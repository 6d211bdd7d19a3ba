//! Typed RPC over the mesh: services, clients, balancing, failover.
//!
//! A server registers a [`Service`] (method name → handler) with
//! [`Node::serve`](crate::Node::serve); it then answers calls on its own
//! subject and announces itself with heartbeats. A [`Client`] discovers
//! the instances from those heartbeats, picks one per call with its
//! [`Policy`](crate::balance::Policy), sends the call with the remaining
//! deadline, and:
//! - drops the handler on the server when the caller gives up (the call
//!   future dropped, or the deadline passed: a cancel message follows);
//! - fails over idempotent calls to another instance when the one it was
//!   waiting on stops heartbeating (within a retry budget);
//! - sends any call elsewhere when nobody received it ("no responders").
//!
//! ```text
//! client ── _RPC.<svc>.<instance> (Call{method, budget, codec, metadata, body}) ──► server
//! client ◄── reply inbox (Ok{metadata, body} | Err{status, ...} | Item.. End) ──── server
//! client ── _RPC.<svc>.<instance> (Cancel{inbox}) ───────────────────────────────► server
//! server ── _RPC.HB.<svc> every 500 ms (Heartbeat{node, weight, leaving}) ───────► clients
//! ```

mod client;
mod detector;
mod envelope;
mod error;
mod server;

pub use client::{Call, CallOpts, Client, ClientBuilder, RawCall, Reply, RpcStream};
pub use envelope::Codec;
pub use error::RpcError;
pub use server::{Context, Service, Serving};

/// What `#[meshwire::service]` expands to refers to; not public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// Call metadata (headers), both ways.
pub type Metadata = std::collections::BTreeMap<String, String>;
