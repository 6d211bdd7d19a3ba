//! Recorded histories from a simulated three-member Raft group, checked
//! for linearizability (issue 6).
//!
//! Each scenario is one seed: three members on their own temporary
//! directories (the real log store, real fsyncs), networked by
//! [`SimNetwork`](meshwire::state::raft::sim_network::SimNetwork); 3–5
//! clients doing gets, puts, deletes and compare-and-swaps on 2–4 keys
//! against random members, the way `state/linearizable.rs` sends them
//! (writes with a request id, sent again until answered) and
//! `state/group.rs` serves them; and a nemesis that partitions, cuts
//! single links, loses and delays messages, isolates the leader until the
//! others have elected a new one, crashes the leader and restarts it from
//! its directory, all during the clients' traffic. Every operation is
//! recorded, and the history is checked with
//! [`testkit::linearizability`](meshwire::testkit::linearizability).
//!
//! ```text
//! clients ──invoke/finish──► Recorder ──► check()
//!    │ client_write, or ensure_linearizable + KvReader::get; forwarded once to the leader
//!    ▼
//! member 1 ◄──► SimNetwork(seed) ◄──► members 2, 3     ◄── nemesis(seed): cuts, loss,
//!  open(dir) + Raft::new                                     delay, crash, restart
//! ```
//!
//! | file | what |
//! |---|---|
//! | `raft_histories/cluster.rs` | members on tempdirs, the network, crash and restart, where a request is forwarded |
//! | `raft_histories/clients.rs` | the operations, the error classes (refused, unknown) and why, the planted bugs |
//! | `raft_histories/nemesis.rs` | the faults and their plan |
//!
//! Run more histories with `MESHWIRE_HISTORIES=N` (seeds `0..N`), replay
//! one with `MESHWIRE_SEED=S`. The seed fixes every random decision (the
//! operations, the faults and their timing, the network's losses and
//! delays), not how tokio interleaves the tasks: a replay makes a rare
//! failure likely, not certain.
//!
//! Time is real. tokio's paused clock does not work here: the log's
//! writer thread fsyncs outside the runtime, and while the runtime waits
//! for it, the paused clock jumps to the next timer. Tried: one scenario
//! ran 116 virtual hours, every write timed out and every read was
//! refused.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

// A crate root's modules are looked for beside it, in `tests/`, where
// cargo would build each file as a test of its own: they live one folder
// down instead.
#[path = "raft_histories/clients.rs"]
mod clients;
#[path = "raft_histories/cluster.rs"]
mod cluster;
#[path = "raft_histories/nemesis.rs"]
mod nemesis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshwire::testkit::linearizability::{check, Budget, CheckResult, History, Recorder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use clients::{Bug, Client, Tally};
use cluster::{Cluster, TestResult, WAIT};
use nemesis::{nemesis, Faults};

/// Histories checked by a plain `cargo test` (the issue asks for 200).
const DEFAULT_HISTORIES: u64 = 200;
/// Scenarios run at once. Each mostly waits (fsyncs, heartbeats,
/// timeouts), so several share two cores without starving Raft.
const CONCURRENT: usize = 8;
/// Client traffic on the healed group after the faults, before the
/// clients stop.
const HEALED: Duration = Duration::from_millis(250);
/// Search steps per history. Histories here have a few hundred
/// operations on 2–4 keys and need far fewer.
const CHECK_STEPS: u64 = 2_000_000;
/// At most this share of histories may end `Unknown` (out of budget).
const MAX_UNKNOWN_SHARE: f64 = 0.02;

/// What one scenario produced.
struct Outcome {
    seed: u64,
    history: History,
    faults: Faults,
    tally: Tally,
    result: CheckResult,
}

/// Runs the scenario of `seed` (with `bug` planted, if any) and checks
/// its history.
async fn scenario(seed: u64, bug: Option<Bug>) -> TestResult<Outcome> {
    let cluster = Cluster::start(seed).await?;
    if cluster.await_leader(WAIT).await.is_none() {
        return Err(format!("no leader within {WAIT:?}"));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let keys: Arc<[String]> = (0..rng.random_range(2..=4))
        .map(|k| format!("k{k}"))
        .collect();
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=rng.random_range(3..=5u64))
        .map(|id| {
            let client_rng = SmallRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id));
            let client = Client::new(id, client_rng, Arc::clone(&keys));
            let run = client.run(
                Arc::clone(&cluster),
                recorder.clone(),
                Arc::clone(&stop),
                bug,
            );
            tokio::spawn(run)
        })
        .collect();

    let faults = nemesis(&cluster, seed).await;
    if faults.is_ok() {
        tokio::time::sleep(HEALED).await; // traffic on the healed group
    }
    stop.store(true, Ordering::SeqCst);
    // Each client finishes its operation in flight within its patience.
    let mut tally = Tally::default();
    for client in clients {
        let client_tally = tokio::time::timeout(WAIT, client)
            .await
            .map_err(|_| "a client did not stop".to_owned())?
            .map_err(|e| format!("a client failed: {e}"))?;
        tally.add(&client_tally);
    }
    let faults = faults?;
    tally.forwarded = cluster.forwarded();
    tally.with_snapshot = cluster.with_snapshot();
    cluster.shutdown().await?;

    let history = recorder.history().map_err(|e| e.to_string())?;
    // The search is CPU work: off the runtime's workers, which keep the
    // other scenarios' heartbeats on time.
    let checked = history.clone();
    let result = tokio::task::spawn_blocking(move || check(&checked, Budget::steps(CHECK_STEPS)))
        .await
        .map_err(|e| format!("the checker failed: {e}"))?;
    Ok(Outcome {
        seed,
        history,
        faults,
        tally,
        result,
    })
}

/// Runs every seed, [`CONCURRENT`] at a time. A scenario that cannot run
/// (a harness or cluster failure, not a violation) is an error naming its
/// seed.
async fn run_seeds(seeds: &[u64], bug: Option<Bug>) -> Vec<TestResult<Outcome>> {
    let mut pending = seeds.iter().copied();
    let mut running = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    loop {
        while running.len() < CONCURRENT {
            let Some(seed) = pending.next() else { break };
            running.spawn(async move {
                let outcome = scenario(seed, bug).await;
                outcome.map_err(|e| format!("seed {seed} (replay with MESHWIRE_SEED={seed}): {e}"))
            });
        }
        match running.join_next().await {
            Some(joined) => {
                done.push(joined.unwrap_or_else(|e| Err(format!("a scenario failed: {e}"))))
            }
            None => return done,
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = value.parse();
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_partitions_and_leader_crashes_are_linearizable() {
    let seeds: Vec<u64> = match env_u64("MESHWIRE_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("MESHWIRE_HISTORIES").unwrap_or(DEFAULT_HISTORIES)).collect(),
    };
    let started = Instant::now();
    let outcomes = run_seeds(&seeds, None).await;

    let mut failures = Vec::new();
    let mut out_of_budget = Vec::new();
    let (mut faults, mut tally, mut recorded) = (Faults::default(), Tally::default(), 0);
    for outcome in outcomes {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        recorded += outcome.history.len();
        faults.add(&outcome.faults);
        tally.add(&outcome.tally);
        match &outcome.result {
            CheckResult::Ok => {}
            CheckResult::Unknown { .. } => out_of_budget.push(outcome.seed),
            result => failures.push(format!(
                "seed {seed} (replay with MESHWIRE_SEED={seed}) is not linearizable:\n{result}",
                seed = outcome.seed
            )),
        }
    }
    eprintln!(
        "raft histories: {} checked in {:.1} s, {} failed, {} out of check budget {:?}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len(),
        out_of_budget.len(),
        out_of_budget,
    );
    eprintln!(
        "  operations: {recorded} recorded; {} reads and {} writes issued, {} forwarded to \
         the leader, {} answers to writes lost; refused and left out: {} reads, {} writes; \
         {} writes of unknown outcome",
        tally.reads,
        tally.writes,
        tally.forwarded,
        tally.lost_replies,
        tally.refused_reads,
        tally.refused_writes,
        tally.unknown_writes,
    );
    eprintln!(
        "  faults: {} isolations, {} link cuts, {} heals, {} loss and {} delay spells, \
         {} leader crashes, {} restarts; {} of {} members held a snapshot at the end",
        faults.isolations,
        faults.link_cuts,
        faults.heals,
        faults.loss,
        faults.delay,
        faults.leader_crashes,
        faults.restarts,
        tally.with_snapshot,
        seeds.len() * 3,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let allowed = (seeds.len() as f64 * MAX_UNKNOWN_SHARE).ceil() as usize;
    assert!(
        out_of_budget.len() <= allowed,
        "{} histories ran out of check budget (at most {allowed} may): seeds {out_of_budget:?}",
        out_of_budget.len()
    );
    assert_eq!(
        faults.leader_crashes,
        seeds.len() as u64,
        "every scenario crashes its leader once"
    );
}

/// Seeds whose scenario caught the planted bug on each of 7 runs while
/// this test was written. How tokio interleaves the tasks varies, so one
/// seed is not certain to catch it again; these together are. After
/// changing the scenarios, find new ones with `MESHWIRE_PLANTED_SEEDS=N`:
/// it tries seeds `0..N` and prints which caught each bug.
const STALE_FOLLOWER_SEEDS: &[u64] = &[0, 1, 4, 5];
const UNCONFIRMED_LEADER_SEEDS: &[u64] = &[11, 15, 17, 20, 22, 23, 29, 31];
const NO_REQUEST_ID_SEEDS: &[u64] = &[0, 1, 3, 4, 6, 7, 9, 11];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_bugs_are_caught() {
    let search = env_u64("MESHWIRE_PLANTED_SEEDS");
    for (bug, seeds) in [
        (Bug::StaleFollowerReads, STALE_FOLLOWER_SEEDS),
        (Bug::UnconfirmedLeaderReads, UNCONFIRMED_LEADER_SEEDS),
        (Bug::RetriesWithoutRequestId, NO_REQUEST_ID_SEEDS),
    ] {
        let seeds: Vec<u64> = match search {
            Some(n) => (0..n).collect(),
            None => seeds.to_vec(),
        };
        let mut caught = Vec::new();
        for outcome in run_seeds(&seeds, Some(bug)).await {
            let outcome = outcome.unwrap();
            if let Some(violation) = outcome.result.violation() {
                if caught.is_empty() {
                    eprintln!("{bug:?}, seed {}: {violation}", outcome.seed);
                }
                caught.push(outcome.seed);
            }
        }
        caught.sort_unstable();
        eprintln!(
            "{bug:?}: caught by {} of {} seeds: {caught:?}",
            caught.len(),
            seeds.len()
        );
        assert!(
            !caught.is_empty(),
            "{bug:?} went unnoticed with seeds {seeds:?}"
        );
    }
}
