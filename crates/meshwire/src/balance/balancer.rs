//! [`Balancer`]: endpoint state and the five policies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshwire_proto::wire::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::ejection::{EjectionConfig, Outlier};
use super::ewma::{PeakEwma, DEFAULT_DECAY};
use super::ring::HashRing;
use super::{Endpoint, Policy};

/// Latency assumed, in nanoseconds, when no endpoint has a sample yet. Its
/// value is irrelevant (every endpoint is costed the same then); it only has
/// to be positive so that outstanding counts still differ.
const NEUTRAL_NANOS: f64 = 1_000_000.0;

/// What the balancer knows about one endpoint.
#[derive(Debug, Clone, Copy)]
struct EndpointState {
    id: NodeId,
    advertised: u32,
    /// The client's override, copied from `Balancer::overrides`.
    overridden: Option<u32>,
    /// Calls started and not yet finished.
    outstanding: u32,
    latency: PeakEwma,
    outlier: Outlier,
    /// Smooth weighted round robin's running value.
    current: i64,
}

impl EndpointState {
    fn new(id: NodeId, advertised: u32, overridden: Option<u32>) -> Self {
        Self {
            id,
            advertised,
            overridden,
            outstanding: 0,
            latency: PeakEwma::new(),
            outlier: Outlier::default(),
            current: 0,
        }
    }

    fn weight(&self) -> u32 {
        self.overridden.unwrap_or(self.advertised)
    }
}

/// Chooses the endpoint for each call, and takes misbehaving ones out of
/// rotation. One per client and service; see the [module docs](super) for
/// the policies and the call order.
///
/// ```
/// use std::time::{Duration, Instant};
/// use meshwire::balance::{Balancer, Endpoint, Policy};
/// use meshwire::NodeId;
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let mut lb = Balancer::with_seed(Policy::RoundRobin, 7);
/// lb.set_endpoints(&[Endpoint::new(a, 1), Endpoint::new(b, 1)]);
/// let now = Instant::now();
/// let first = lb.pick(now, None, &[]).unwrap();
/// lb.on_start(first);
/// // The call failed; retry elsewhere.
/// lb.on_finish(now, first, Duration::from_millis(3), false);
/// let retry = lb.pick(now, None, &[first]).unwrap();
/// assert_ne!(first, retry);
/// ```
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Policy,
    /// Sorted by id, ids unique: the stable order every policy relies on,
    /// and what `on_finish` binary-searches.
    eps: Vec<EndpointState>,
    /// Client overrides by id, kept for ids not (or no longer) present so
    /// that an endpoint that leaves and returns keeps its override.
    overrides: HashMap<NodeId, u32>,
    /// Built for `ConsistentHash` only, rebuilt when membership changes.
    ring: HashRing,
    /// Round robin's position: the last id it returned. An id rather than an
    /// index, so the rotation continues where it was when endpoints come
    /// and go.
    rr_last: Option<NodeId>,
    rng: SmallRng,
    ejection: EjectionConfig,
    decay: Duration,
    /// Candidate indices for the current pick, kept to avoid allocating per
    /// call.
    scratch: Vec<usize>,
}

impl Default for Balancer {
    /// A `LeastLoaded` balancer seeded from the OS.
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl Balancer {
    /// A balancer with no endpoints, its random generator seeded from the OS.
    pub fn new(policy: Policy) -> Self {
        Self::from_rng(policy, SmallRng::from_os_rng())
    }

    /// A balancer whose random choices are fixed by `seed`: the same inputs
    /// give the same picks. For tests and simulations.
    pub fn with_seed(policy: Policy, seed: u64) -> Self {
        Self::from_rng(policy, SmallRng::seed_from_u64(seed))
    }

    fn from_rng(policy: Policy, rng: SmallRng) -> Self {
        Self {
            policy,
            eps: Vec::new(),
            overrides: HashMap::new(),
            ring: HashRing::default(),
            rr_last: None,
            rng,
            ejection: EjectionConfig::default(),
            decay: DEFAULT_DECAY,
            scratch: Vec::new(),
        }
    }

    /// Replaces the outlier-ejection settings (default:
    /// [`EjectionConfig::default`]).
    pub fn with_ejection(mut self, cfg: EjectionConfig) -> Self {
        self.ejection = cfg;
        self
    }

    /// Replaces `LeastLoaded`'s latency decay constant τ (default 10 s):
    /// after τ without samples an estimate keeps `1/e` of its value. Shorter
    /// reacts faster to recovery and is noisier.
    pub fn with_ewma_decay(mut self, tau: Duration) -> Self {
        self.decay = tau;
        self
    }

    /// The policy this balancer applies.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Replaces the endpoint set (membership changed).
    ///
    /// Endpoints whose id stays keep their statistics (outstanding calls,
    /// latency, ejection, rotation state) and take the new advertised weight;
    /// new ones start fresh; the state of those that left is dropped. If an
    /// id appears twice, the last entry wins.
    pub fn set_endpoints(&mut self, eps: &[Endpoint]) {
        let mut incoming: Vec<Endpoint> = eps.to_vec();
        // Stable sort then keep the last of each run: "last entry wins".
        incoming.sort_by_key(|e| e.id);
        incoming.reverse();
        incoming.dedup_by_key(|e| e.id);
        incoming.reverse();

        let old = std::mem::take(&mut self.eps);
        self.eps = incoming
            .iter()
            .map(|e| match old.binary_search_by_key(&e.id, |s| s.id) {
                Ok(i) => EndpointState {
                    advertised: e.weight,
                    ..old[i]
                },
                Err(_) => EndpointState::new(e.id, e.weight, self.overrides.get(&e.id).copied()),
            })
            .collect();
        self.rebuild_ring();
    }

    /// The current endpoint set, sorted by id, with the weights the servers
    /// advertised (see [`effective_weight`](Self::effective_weight) for the
    /// weight in use).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.eps
            .iter()
            .map(|s| Endpoint::new(s.id, s.advertised))
            .collect()
    }

    /// Sets (`Some`) or clears (`None`) the client's own weight for `id`,
    /// which wins over the advertised one. It may name an endpoint not (yet)
    /// in the set, and it outlives membership changes.
    pub fn set_weight_override(&mut self, id: NodeId, weight: Option<u32>) {
        match weight {
            Some(w) => self.overrides.insert(id, w),
            None => self.overrides.remove(&id),
        };
        if let Ok(i) = self.index(id) {
            let was_on = self.eps[i].weight() > 0;
            self.eps[i].overridden = weight;
            if was_on != (self.eps[i].weight() > 0) {
                self.rebuild_ring();
            }
        }
    }

    /// The weight in use for `id` (override, else advertised), or `None` if
    /// it is not in the set.
    pub fn effective_weight(&self, id: NodeId) -> Option<u32> {
        self.index(id).ok().map(|i| self.eps[i].weight())
    }

    /// Calls to `id` started and not yet finished, or `None` if it is not in
    /// the set.
    pub fn outstanding(&self, id: NodeId) -> Option<u32> {
        self.index(id).ok().map(|i| self.eps[i].outstanding)
    }

    /// Picks the endpoint for a call at `now`.
    ///
    /// `key` is used by `ConsistentHash` (a call without one goes round
    /// robin) and ignored by the other policies. `exclude` lists endpoints
    /// this call already tried, so a retry goes elsewhere. Endpoints with
    /// weight 0 are never picked; ejected ones only if every other candidate
    /// is ejected too, and then the one ejected longest ago. `None` means no
    /// candidate at all: the set is empty, or all excluded or weight 0.
    pub fn pick(&mut self, now: Instant, key: Option<&[u8]>, exclude: &[NodeId]) -> Option<NodeId> {
        let fallback = self.collect_candidates(now, exclude);
        if self.scratch.is_empty() {
            return fallback.map(|i| self.eps[i].id);
        }
        let idx = match (self.policy, key) {
            (Policy::RoundRobin, _) | (Policy::ConsistentHash, None) => self.round_robin(),
            (Policy::Random, _) => self.random(),
            (Policy::Weighted, _) => self.weighted(),
            (Policy::LeastLoaded, _) => self.least_loaded(now),
            (Policy::ConsistentHash, Some(key)) => {
                let cands = &self.scratch;
                // The ring holds every endpoint with weight > 0, a superset of
                // the candidates, so the walk finds one; round robin covers a
                // ring that disagrees, which would be a bug.
                match self.ring.find(key, |i| cands.binary_search(&i).is_ok()) {
                    Some(i) => Some(i),
                    None => self.round_robin(),
                }
            }
        };
        idx.map(|i| self.eps[i].id)
    }

    /// A call to `id` was sent. Unknown ids are ignored.
    pub fn on_start(&mut self, id: NodeId) {
        if let Ok(i) = self.index(id) {
            let ep = &mut self.eps[i];
            ep.outstanding = ep.outstanding.saturating_add(1);
        }
    }

    /// A call to `id` ended at `now` after `latency`; `ok` is false if the
    /// endpoint failed it (error, timeout, broken link). Updates the
    /// outstanding count, the latency estimate and outlier ejection. Unknown
    /// ids (the endpoint left while the call was in flight) are ignored.
    pub fn on_finish(&mut self, now: Instant, id: NodeId, latency: Duration, ok: bool) {
        let Ok(i) = self.index(id) else {
            return;
        };
        let ep = &mut self.eps[i];
        ep.outstanding = ep.outstanding.saturating_sub(1);
        if ok {
            ep.latency.observe(now, latency, self.decay);
            ep.outlier.on_success();
        } else {
            ep.latency.observe_failure(now, latency, self.decay);
            if ep.outlier.on_failure(now, &self.ejection) {
                tracing::debug!(node = %id, "endpoint ejected after consecutive failures");
            }
        }
    }

    /// Whether `id` is ejected at `now`. False for unknown ids.
    pub fn is_ejected(&self, now: Instant, id: NodeId) -> bool {
        self.index(id)
            .is_ok_and(|i| self.eps[i].outlier.is_ejected(now))
    }

    fn index(&self, id: NodeId) -> Result<usize, usize> {
        self.eps.binary_search_by_key(&id, |s| s.id)
    }

    fn rebuild_ring(&mut self) {
        if self.policy != Policy::ConsistentHash {
            return;
        }
        let members = self
            .eps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.weight() > 0)
            .map(|(i, s)| (i, s.id));
        self.ring = HashRing::build(members);
    }

    /// Fills `scratch` with the indices (ascending, so in id order) of the
    /// endpoints that may be picked: weight > 0, not excluded, not ejected.
    /// Returns the all-ejected fallback: among the pickable-but-ejected, the
    /// one ejected longest ago (ties: lowest id).
    fn collect_candidates(&mut self, now: Instant, exclude: &[NodeId]) -> Option<usize> {
        self.scratch.clear();
        let mut fallback: Option<(Option<Instant>, usize)> = None;
        for (i, ep) in self.eps.iter().enumerate() {
            if ep.weight() == 0 || exclude.contains(&ep.id) {
                continue;
            }
            if ep.outlier.is_ejected(now) {
                let at = ep.outlier.ejected_at();
                if fallback.is_none_or(|(best, _)| at < best) {
                    fallback = Some((at, i));
                }
                continue;
            }
            self.scratch.push(i);
        }
        fallback.map(|(_, i)| i)
    }

    /// Next candidate after the last id returned, wrapping around. Following
    /// ids rather than positions keeps the rotation exact when endpoints join
    /// or leave: nobody is skipped or served twice because indices shifted.
    fn round_robin(&mut self) -> Option<usize> {
        let eps = &self.eps;
        let pos = match self.rr_last {
            Some(last) => self.scratch.partition_point(|&i| eps[i].id <= last),
            None => 0,
        };
        let i = self.scratch.get(pos).or(self.scratch.first()).copied()?;
        self.rr_last = Some(self.eps[i].id);
        Some(i)
    }

    fn random(&mut self) -> Option<usize> {
        let n = self.scratch.len();
        self.scratch.get(self.rng.random_range(0..n)).copied()
    }

    /// nginx's smooth weighted round robin: every candidate's `current`
    /// grows by its weight, the largest is picked and pays back the total.
    /// Over any `Σw` consecutive picks each endpoint is picked exactly `w`
    /// times, interleaved (5:1:1 gives a a b a c a a, not a a a a a b c).
    /// Endpoints skipped for this pick (excluded, ejected) neither grow nor
    /// pay, so they rejoin the rotation where they left it.
    fn weighted(&mut self) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(i64, usize)> = None;
        for &i in &self.scratch {
            let ep = &mut self.eps[i];
            let w = i64::from(ep.weight());
            ep.current = ep.current.saturating_add(w);
            total = total.saturating_add(w);
            // Strictly greater: ties go to the lowest id.
            if best.is_none_or(|(cur, _)| ep.current > cur) {
                best = Some((ep.current, i));
            }
        }
        let (_, i) = best?;
        self.eps[i].current = self.eps[i].current.saturating_sub(total);
        Some(i)
    }

    /// Power of two choices: compare two distinct random candidates and take
    /// the cheaper. Checking all candidates would send every client that
    /// shares the same stale view to the same endpoint at once; two random
    /// ones almost match the best possible spread (Mitzenmacher) while
    /// keeping clients apart. Cost = latency estimate × (outstanding + 1):
    /// latency ranks endpoints when idle, outstanding calls count the queue
    /// a new call would wait behind.
    fn least_loaded(&mut self, now: Instant) -> Option<usize> {
        let n = self.scratch.len();
        if n < 2 {
            return self.scratch.first().copied();
        }
        let a = self.rng.random_range(0..n);
        let mut b = self.rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let (ia, ib) = (self.scratch[a], self.scratch[b]);
        let neutral = self.neutral_latency(now, [ia, ib]);
        let (ca, cb) = (self.cost(now, ia, neutral), self.cost(now, ib, neutral));
        // `a` is itself random, so ties are broken at random.
        Some(if cb < ca { ib } else { ia })
    }

    fn cost(&self, now: Instant, i: usize, neutral: f64) -> f64 {
        let ep = &self.eps[i];
        let latency = ep.latency.estimate(now, self.decay).unwrap_or(neutral);
        // Floored at 1 ns: an estimate that decayed to zero must still let
        // the outstanding count tell endpoints apart.
        latency.max(1.0) * (f64::from(ep.outstanding) + 1.0)
    }

    /// The latency to assume for an endpoint without samples: the mean of
    /// the others' estimates. A newcomer is then neither starved (as with a
    /// pessimistic guess) nor flooded (as with zero) until it has answered.
    /// Computed only when one of the two contenders needs it.
    fn neutral_latency(&self, now: Instant, contenders: [usize; 2]) -> f64 {
        let needs = contenders
            .iter()
            .any(|&i| self.eps[i].latency.estimate(now, self.decay).is_none());
        if !needs {
            return NEUTRAL_NANOS;
        }
        let (sum, count) = self
            .eps
            .iter()
            .filter_map(|ep| ep.latency.estimate(now, self.decay))
            .fold((0.0, 0u32), |(s, c), e| (s + e, c + 1));
        if count == 0 {
            NEUTRAL_NANOS
        } else {
            sum / f64::from(count)
        }
    }
}
