//! The nemesis: faults during client traffic, all drawn from the seed.

use std::time::Duration;

use meshwire::state::raft::RaftNodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cluster::{Cluster, TestResult, MEMBERS, WAIT};

/// How long the nemesis injects faults; then it heals everything.
pub(crate) const FAULTY: Duration = Duration::from_millis(1500);

/// What the nemesis did in one scenario.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    pub(crate) isolations: u64,
    pub(crate) link_cuts: u64,
    pub(crate) heals: u64,
    pub(crate) loss: u64,
    pub(crate) delay: u64,
    pub(crate) leader_crashes: u64,
    pub(crate) restarts: u64,
}

impl Faults {
    pub(crate) fn add(&mut self, other: &Faults) {
        self.isolations += other.isolations;
        self.link_cuts += other.link_cuts;
        self.heals += other.heals;
        self.loss += other.loss;
        self.delay += other.delay;
        self.leader_crashes += other.leader_crashes;
        self.restarts += other.restarts;
    }
}

/// The faults every scenario has, in milliseconds from the start of
/// traffic.
#[derive(Debug)]
struct Plan {
    /// Cut the leader off from both others...
    isolate: u64,
    /// ...until here: long enough for the others to elect a new leader
    /// (300–400 ms without faults) and write through it while the old one
    /// still believes it leads.
    rejoin: u64,
    /// Crash whoever leads then...
    crash: u64,
    /// ...and restart it from its directory this much later.
    down_for: u64,
}

impl Plan {
    fn draw(rng: &mut SmallRng) -> Plan {
        let isolate = rng.random_range(50..200);
        let rejoin = isolate + rng.random_range(600..900);
        Plan {
            isolate,
            rejoin,
            crash: rejoin + rng.random_range(50..250),
            down_for: rng.random_range(100..400),
        }
    }
}

/// Faults for [`FAULTY`], from the seed: the [`Plan`] plus a random step
/// every 30–150 ms (isolations, single link cuts, heals, loss, delay).
/// Ends with everything healed and every member up.
pub(crate) async fn nemesis(cluster: &Cluster, seed: u64) -> TestResult<Faults> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let plan = Plan::draw(&mut rng);
    let mut faults = Faults::default();
    let start = Instant::now();
    let ms = Duration::from_millis;
    let (mut isolate_at, mut rejoin_at) = (Some(ms(plan.isolate)), None);
    let (mut crash_at, mut restart_at) = (Some(ms(plan.crash)), None);
    // The old leader held apart by the plan: random heals leave it alone.
    let mut held: Option<RaftNodeId> = None;
    // When the crash found no leader to crash.
    let mut leaderless_since = None;
    loop {
        let now = start.elapsed();
        let random_step = now + ms(rng.random_range(30..150));
        let next = [isolate_at, rejoin_at, crash_at, restart_at]
            .into_iter()
            .flatten()
            .fold(random_step, Duration::min);
        let planned_left = isolate_at.or(rejoin_at).or(crash_at).is_some();
        if next >= FAULTY && !planned_left {
            break;
        }
        if now > FAULTY + WAIT {
            return Err(format!("the planned faults did not happen: {plan:?}"));
        }
        tokio::time::sleep_until(start + next).await;
        let now = start.elapsed();
        let due = |at: Option<Duration>| at.is_some_and(|t| now >= t);
        if due(isolate_at) {
            // No leader (an election after a random fault): look again
            // shortly.
            isolate_at = Some(now + ms(20));
            if let Some(leader) = cluster.leader() {
                cluster.isolate(leader);
                faults.isolations += 1;
                held = Some(leader);
                isolate_at = None;
                let rejoin = ms(plan.rejoin).max(now + ms(600));
                rejoin_at = Some(rejoin);
                // Keep the order of the plan: the crash after the rejoin.
                crash_at = crash_at.map(|at| at.max(rejoin + ms(50)));
            }
        } else if due(rejoin_at) {
            held = None;
            rejoin_at = None;
            cluster.heal_except(None);
            faults.heals += 1;
        } else if due(crash_at) {
            crash_at = Some(now + ms(20));
            match cluster.leader() {
                Some(leader) => {
                    cluster.crash(leader).await?;
                    faults.leader_crashes += 1;
                    crash_at = None;
                    restart_at = Some(start.elapsed() + ms(plan.down_for));
                }
                None => {
                    // Random faults may keep every member from winning for
                    // a while: after 100 ms, heal so that one is elected.
                    let since = *leaderless_since.get_or_insert(now);
                    if now - since >= ms(100) {
                        cluster.heal_except(None);
                        faults.heals += 1;
                    }
                }
            }
        } else if due(restart_at) {
            restart_down(cluster, &mut faults).await?;
            restart_at = None;
        } else if now < FAULTY {
            random_fault(cluster, &mut rng, &mut faults, held);
        }
    }
    cluster.heal_except(None);
    cluster.network.set_loss(0.0, 0.0);
    cluster.network.set_delay(Duration::ZERO, Duration::ZERO);
    faults.heals += 1;
    restart_down(cluster, &mut faults).await?;
    Ok(faults)
}

/// Restarts every member that is down, from its directory.
async fn restart_down(cluster: &Cluster, faults: &mut Faults) -> TestResult<()> {
    for id in MEMBERS {
        if cluster.member(id).is_none() {
            cluster.boot(id).await?;
            faults.restarts += 1;
        }
    }
    Ok(())
}

/// One random fault, or the end of one. `held` stays isolated.
fn random_fault(
    cluster: &Cluster,
    rng: &mut SmallRng,
    faults: &mut Faults,
    held: Option<RaftNodeId>,
) {
    let any = |rng: &mut SmallRng| MEMBERS[rng.random_range(0..MEMBERS.len())];
    match rng.random_range(0..100) {
        // One member alone on its side (a 1|2 split).
        0..20 => {
            cluster.isolate(any(rng));
            faults.isolations += 1;
        }
        // One link: the third member still sees both ends.
        20..35 => {
            let a = any(rng);
            let others: Vec<RaftNodeId> = MEMBERS.into_iter().filter(|&m| m != a).collect();
            cluster.cut_link(a, others[rng.random_range(0..others.len())]);
            faults.link_cuts += 1;
        }
        35..60 => {
            cluster.heal_except(held);
            faults.heals += 1;
        }
        60..72 => {
            let p = rng.random_range(0.02..0.25);
            cluster.network.set_loss(p, p);
            faults.loss += 1;
        }
        72..80 => cluster.network.set_loss(0.0, 0.0),
        80..92 => {
            let max = Duration::from_millis(rng.random_range(1..25));
            cluster.network.set_delay(Duration::ZERO, max);
            faults.delay += 1;
        }
        _ => cluster.network.set_delay(Duration::ZERO, Duration::ZERO),
    }
}
