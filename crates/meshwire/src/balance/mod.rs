//! Load balancing and failover policy: which instance of a service gets a call.
//!
//! Sans-IO like the protocol core: nothing here reads a clock, spawns or
//! sleeps. Time comes in as `now`, randomness from a seedable generator, so
//! every decision can be replayed in a test. The RPC client owns one
//! [`Balancer`] per service and feeds it membership and call outcomes.
//!
//! ```text
//!  membership ──set_endpoints──►┌──────────┐
//!  user ──set_weight_override──►│ Balancer │──pick(now, key, exclude)──► NodeId
//!  call ──on_start / on_finish─►└──────────┘
//!                  each retry: RetryBudget::withdraw, then pick(.., exclude = tried)
//! ```
//!
//! ## Call order
//! For every call: [`Balancer::pick`] → [`Balancer::on_start`] with the
//! picked id when the request is sent → [`Balancer::on_finish`] exactly once
//! when it ends (success, error or timeout; a cancelled call should report
//! `ok = true` unless the endpoint was at fault, so that giving up does not
//! eject anyone). `on_start`/`on_finish` pairs drive the outstanding-call
//! count, the latency estimate and outlier ejection; a missing `on_finish`
//! leaves the endpoint looking busy. Retries: call
//! [`RetryBudget::deposit`] once per call, and before each retry
//! [`RetryBudget::withdraw`]; if it allows the retry, `pick` again with every
//! id already tried in `exclude`.
//!
//! ## Policies
//! | [`Policy`] | picks | why this algorithm |
//! |---|---|---|
//! | `RoundRobin` | each endpoint in turn, in id order | exact and stateless enough to continue across membership changes: it remembers the last id, not a position |
//! | `Random` | uniformly | no shared state at all; fine for many independent clients |
//! | `Weighted` | in proportion to weight | nginx's smooth weighted round robin: exact shares, and the picks of a heavy endpoint are spread out instead of sent in bursts |
//! | `LeastLoaded` (default) | the cheaper of two random endpoints, cost = latency × (outstanding + 1) | power of two choices: almost the load spread of "least loaded of all", without every client herding to the same endpoint on stale information |
//! | `ConsistentHash` | the endpoint owning the call's key on a hash ring | a key moves only when its endpoint leaves, or when a joining one takes it over |
//!
//! Across all policies:
//! - **Weight 0** means never pick (a server draining itself). Otherwise only
//!   `Weighted` uses weights; `ConsistentHash` explains why it does not in
//!   its own docs (`ring.rs`). A client override wins over the advertised
//!   weight and survives membership changes.
//! - **`exclude`** removes endpoints already tried by this call. If every
//!   endpoint is excluded (or has weight 0), `pick` returns `None`.
//! - **Ejected** endpoints are skipped, unless every remaining candidate is
//!   ejected: then the one ejected longest ago is returned. An ejected
//!   endpoint may be broken, but refusing to call anything is surely broken.
//! - **Ties** in rotation order and ring positions are broken by [`NodeId`]
//!   order, so independent clients with the same view make the same choice.
//!
//! ## Latency and ejection
//! `LeastLoaded` estimates latency with a peak EWMA decaying over 10 s
//! (Finagle's; see [`Balancer::with_ewma_decay`]). An endpoint without
//! samples is costed at the mean of the others' estimates, so a newcomer gets
//! traffic straight away without being flooded. Outlier ejection
//! ([`EjectionConfig`]) applies to every policy.
//!
//! [`NodeId`]: crate::NodeId

mod balancer;
mod budget;
mod ejection;
mod ewma;
mod ring;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use meshwire_proto::wire::NodeId;

pub use balancer::Balancer;
pub use budget::RetryBudget;
pub use ejection::EjectionConfig;

/// How a [`Balancer`] chooses an endpoint. See the [module docs](self) for
/// why each algorithm was chosen.
///
/// The text forms (`Display`, `FromStr`) are the CLI's: `round-robin`,
/// `random`, `weighted`, `least-loaded`, `consistent-hash` (`hash` is
/// accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Every endpoint in turn, in id order.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// In proportion to the endpoints' weights (smooth weighted round robin).
    Weighted,
    /// Power of two choices over latency × outstanding calls. The default: it
    /// routes around slow and busy instances without configuration.
    #[default]
    LeastLoaded,
    /// By the call's key on a consistent-hash ring; calls without a key go
    /// round robin.
    ConsistentHash,
}

impl Policy {
    /// The text form, as the CLI spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Random => "random",
            Self::Weighted => "weighted",
            Self::LeastLoaded => "least-loaded",
            Self::ConsistentHash => "consistent-hash",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that [`Policy::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown balancing policy {0:?}: use round-robin, random, weighted, least-loaded or consistent-hash"
)]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Self::RoundRobin),
            "random" => Ok(Self::Random),
            "weighted" => Ok(Self::Weighted),
            "least-loaded" => Ok(Self::LeastLoaded),
            "consistent-hash" | "hash" => Ok(Self::ConsistentHash),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

/// One instance of a service, as membership reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The node serving the instance.
    pub id: NodeId,
    /// Relative capacity advertised by the server; 0 means never pick it (a
    /// server draining itself). Only `Weighted` uses other values; a client
    /// can override it with [`Balancer::set_weight_override`].
    pub weight: u32,
}

impl Endpoint {
    /// An endpoint with the given weight.
    pub const fn new(id: NodeId, weight: u32) -> Self {
        Self { id, weight }
    }
}
