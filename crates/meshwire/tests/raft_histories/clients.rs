//! Clients: random operations against the members, made the way
//! `state/linearizable.rs` sends them and `state/group.rs` serves them,
//! each recorded for the checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshwire::state::raft::{Command, CommandResult, KvReader, Member, RaftNodeId, DEFAULT_MAP};
use meshwire::testkit::linearizability::{KvOp, KvOutcome, Recorder};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::ServerState;
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;

use crate::cluster::{Cluster, Incarnation, MEMBERS};

/// A client gives up on an operation after a time drawn from this range
/// (per client, in ms): a write then has an unknown outcome, a read saw
/// nothing. Production waits 5 s. Shorter keeps scenarios short and makes
/// more outcomes unknown, which is where bugs hide; and a client that
/// waits on an isolated leader for a whole partition does nothing else.
const PATIENCE_MS: std::ops::Range<u64> = 200..1000;

/// The share of answers to writes lost on the way back to the client, as
/// when the member that answers dies or a link breaks: the write applied,
/// and the client sends it again.
const REPLY_LOSS: f64 = 0.03;

/// How long one attempt of a write waits before the write is sent again
/// (production: 2.5 s of a 5 s call).
const ATTEMPT: Duration = Duration::from_millis(150);

/// What a scenario does wrong on purpose, to prove the check notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
    /// Reads are served by whatever member the client reached, from its
    /// state machine, without the read index: followers lag.
    StaleFollowerReads,
    /// A member that believes it leads answers reads from its own state
    /// without confirming with a quorum: an isolated old leader still
    /// believes it does (openraft 0.9 leaders do not step down on their
    /// own).
    UnconfirmedLeaderReads,
    /// Writes are sent again after a lost reply without their request id,
    /// so a second copy applies again.
    RetriesWithoutRequestId,
}

/// How one operation ended, as the client sees it.
enum Answer {
    /// A definite result.
    Done(KvOutcome),
    /// Definitely not applied (a write) or nothing seen (a read): left out
    /// of the history.
    Refused,
    /// Maybe applied: the client gave up, or the member stopped with the
    /// entry possibly replicated.
    Unknown,
}

/// The outcome a write's [`CommandResult`] reports, for the operation
/// that proposed it.
fn write_outcome(op: &KvOp, result: CommandResult) -> KvOutcome {
    match (op, result) {
        (KvOp::Put { .. }, CommandResult::Written { version }) => KvOutcome::Put(version),
        (KvOp::Cas { .. }, CommandResult::Written { version }) => KvOutcome::Cas(Ok(version)),
        (KvOp::Cas { .. }, CommandResult::CasFailed { current }) => KvOutcome::Cas(Err(current)),
        (KvOp::Delete { .. }, CommandResult::Deleted { existed, version }) => {
            KvOutcome::Deleted { existed, version }
        }
        (op, result) => panic!("{op} was answered with {result:?}"),
    }
}

fn command(op: &KvOp) -> Command {
    let map = DEFAULT_MAP.to_owned();
    match op.clone() {
        KvOp::Put { key, value } => Command::Put { map, key, value },
        KvOp::Delete { key } => Command::Delete { map, key },
        KvOp::Cas {
            key,
            expected,
            value,
        } => Command::Cas {
            map,
            key,
            expected,
            value,
        },
        other => panic!("{other} is not a write"),
    }
}

/// One attempt of a write, as `group.rs` serves it: propose on the member
/// the client reached; on `ForwardToLeader`, once more on the leader.
///
/// Why each error class is safe to call "refused":
/// - `ForwardToLeader` from `client_write` (openraft 0.9) is sent either
///   before anything is appended (the member does not lead, or its
///   leadership is not yet committed), or when the entry was truncated
///   from this member's log by a newer leader's conflicting entry, which
///   it never comes back from. Either way it is never applied.
/// - A leader we cannot reach (none known, down, partitioned): the request
///   was never sent.
///
/// Everything else after the request was sent is unknown: a timeout (the
/// entry may sit in an isolated leader's log, or be committed with its
/// reply still on the way), and `Fatal` (the member stopped, perhaps after
/// replicating the entry).
async fn write_attempt(
    cluster: &Cluster,
    at: RaftNodeId,
    member: Incarnation,
    op: &KvOp,
    command: &Command,
    deadline: Instant,
) -> Answer {
    let proposing = member.raft.client_write(command.clone());
    let proposed = tokio::time::timeout_at(deadline, proposing).await;
    let to = match proposed {
        Ok(Ok(reply)) => return Answer::Done(write_outcome(op, reply.data)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => to,
        Ok(Err(_)) | Err(_) => return Answer::Unknown,
    };
    let Some(leader) = cluster.forward_target(at, &to) else {
        return Answer::Refused;
    };
    match tokio::time::timeout_at(deadline, leader.raft.client_write(command.clone())).await {
        Ok(Ok(reply)) => Answer::Done(write_outcome(op, reply.data)),
        // Leadership moved while forwarding: `group.rs` answers NoLeader
        // and does not forward twice.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Answer::Refused,
        Ok(Err(_)) | Err(_) => Answer::Unknown,
    }
}

/// A linearizable read as `group.rs` makes it: read index
/// (`ensure_linearizable`, which also waits until the member has applied
/// that index) on the member, then its state machine; on
/// `ForwardToLeader`, the same on the leader, once. Any failure saw
/// nothing, so it is refused.
async fn read(
    cluster: &Cluster,
    at: RaftNodeId,
    member: Incarnation,
    key: &str,
    deadline: Instant,
    bug: Option<Bug>,
) -> Answer {
    let get = |reader: &KvReader| {
        let got = reader.get(DEFAULT_MAP, key).unwrap();
        Answer::Done(KvOutcome::Got(got))
    };
    match bug {
        Some(Bug::StaleFollowerReads) => return get(&member.reader),
        Some(Bug::UnconfirmedLeaderReads) => {
            let metrics = member.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Leader {
                return get(&member.reader);
            }
            let believed = metrics.current_leader.unwrap_or(at);
            let to = ForwardToLeader::new(believed, Member::default());
            return match cluster.forward_target(at, &to) {
                Some(leader) => get(&leader.reader),
                None => Answer::Refused,
            };
        }
        Some(Bug::RetriesWithoutRequestId) | None => {}
    }
    let confirmed = tokio::time::timeout_at(deadline, member.raft.ensure_linearizable()).await;
    let to = match confirmed {
        Ok(Ok(_)) => return get(&member.reader),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => to,
        Ok(Err(_)) | Err(_) => return Answer::Refused,
    };
    let Some(leader) = cluster.forward_target(at, &to) else {
        return Answer::Refused;
    };
    match tokio::time::timeout_at(deadline, leader.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => get(&leader.reader),
        Ok(Err(_)) | Err(_) => Answer::Refused,
    }
}

/// How the operations of a scenario ended, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    /// Forwarded by the member the client reached to the leader.
    pub(crate) forwarded: u64,
    pub(crate) refused_reads: u64,
    pub(crate) refused_writes: u64,
    pub(crate) unknown_writes: u64,
    /// Answers to applied writes that the client did not get.
    pub(crate) lost_replies: u64,
    /// Members holding a snapshot when the scenario ended.
    pub(crate) with_snapshot: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, other: &Tally) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.forwarded += other.forwarded;
        self.refused_reads += other.refused_reads;
        self.refused_writes += other.refused_writes;
        self.unknown_writes += other.unknown_writes;
        self.lost_replies += other.lost_replies;
        self.with_snapshot += other.with_snapshot;
    }
}

/// One client: random operations until told to stop.
pub(crate) struct Client {
    id: u64,
    rng: SmallRng,
    keys: Arc<[String]>,
    /// The member it sends half its operations to, like the router a
    /// node is attached to; the rest go to a random member. Without a
    /// home, every client soon waits on a write to an isolated leader
    /// and the majority side sees no traffic.
    home: RaftNodeId,
    /// How long it waits for an answer.
    patience: Duration,
    /// The last version this client saw per key: what its next cas
    /// expects (a real client reads, then swaps).
    seen: HashMap<String, u64>,
    written: u64,
    tally: Tally,
}

impl Client {
    /// Client `id`, whose choices all come from `rng`.
    pub(crate) fn new(id: u64, mut rng: SmallRng, keys: Arc<[String]>) -> Client {
        Client {
            id,
            home: MEMBERS[rng.random_range(0..MEMBERS.len())],
            patience: Duration::from_millis(rng.random_range(PATIENCE_MS)),
            rng,
            keys,
            seen: HashMap::new(),
            written: 0,
            tally: Tally::default(),
        }
    }

    fn next_op(&mut self) -> KvOp {
        let key = self.keys[self.rng.random_range(0..self.keys.len())].clone();
        self.written += 1;
        let value = format!("c{}-{}", self.id, self.written);
        match self.rng.random_range(0..100) {
            0..35 => KvOp::get(key),
            35..60 => KvOp::put(key, value),
            60..75 => KvOp::delete(key),
            _ => {
                let seen = self.seen.get(&key).copied().unwrap_or(0);
                // Mostly what it saw; sometimes "absent", or a version
                // that is surely stale.
                let expected = match self.rng.random_range(0..10) {
                    0 => 0,
                    1 => seen.saturating_sub(1),
                    _ => seen,
                };
                KvOp::cas(key, expected, value)
            }
        }
    }

    /// The member for the next request: the home half the time, else a
    /// random one that is up.
    fn pick(&mut self, cluster: &Cluster) -> Option<(RaftNodeId, Incarnation)> {
        let up = cluster.up_ids();
        let at = if self.rng.random_bool(0.5) && up.contains(&self.home) {
            self.home
        } else {
            *up.get(self.rng.random_range(0..up.len().max(1)))?
        };
        Some((at, cluster.member(at)?))
    }

    /// A write as `state/linearizable.rs` makes it: with a request id
    /// ([`Command::Once`]: the state machine applies it once and answers
    /// a second copy with the first answer), sent again to a member the
    /// client picks anew after each attempt that did not answer, until one
    /// does or the client gives up. It is unknown if some attempt may have
    /// been applied, refused if none was.
    async fn write(
        &mut self,
        cluster: &Cluster,
        op: &KvOp,
        deadline: Instant,
        bug: Option<Bug>,
    ) -> Answer {
        let once = match bug {
            Some(Bug::RetriesWithoutRequestId) => command(op),
            _ => Command::Once {
                id: self.rng.random(),
                command: Box::new(command(op)),
            },
        };
        let mut unanswered = false;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some((at, member)) = self.pick(cluster) {
                let attempt = (Instant::now() + ATTEMPT).min(deadline);
                match write_attempt(cluster, at, member, op, &once, attempt).await {
                    // Applied, but the answer is lost on the way back.
                    Answer::Done(_) if self.rng.random_bool(REPLY_LOSS) => {
                        self.tally.lost_replies += 1;
                        unanswered = true;
                    }
                    Answer::Done(outcome) => return Answer::Done(outcome),
                    Answer::Unknown => unanswered = true,
                    Answer::Refused => {}
                }
            }
            if Instant::now() + pause >= deadline {
                return if unanswered {
                    Answer::Unknown
                } else {
                    Answer::Refused
                };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn learn(&mut self, op: &KvOp, outcome: &KvOutcome) {
        let version = match outcome {
            KvOutcome::Got(got) => got.as_ref().map_or(0, |(_, v)| *v),
            KvOutcome::Put(v) | KvOutcome::Cas(Ok(v)) => *v,
            KvOutcome::Cas(Err(current)) => *current,
            KvOutcome::Deleted { .. } => 0,
            _ => return,
        };
        self.seen.insert(op.key().to_owned(), version);
    }

    /// Runs operations, one at a time, until `stop`; each is recorded in
    /// `recorder`. Returns how they ended.
    pub(crate) async fn run(
        mut self,
        cluster: Arc<Cluster>,
        recorder: Recorder,
        stop: Arc<AtomicBool>,
        bug: Option<Bug>,
    ) -> Tally {
        while !stop.load(Ordering::SeqCst) {
            let op = self.next_op();
            let deadline = Instant::now() + self.patience;
            let call = recorder.invoke(self.id, op.clone());
            let is_read = matches!(op, KvOp::Get { .. });
            let answer = match &op {
                KvOp::Get { key } => match self.pick(&cluster) {
                    Some((at, member)) => read(&cluster, at, member, key, deadline, bug).await,
                    // Never with one crash at a time.
                    None => Answer::Refused,
                },
                _ => self.write(&cluster, &op, deadline, bug).await,
            };
            let refused = matches!(answer, Answer::Refused);
            let tally = &mut self.tally;
            *(if is_read {
                &mut tally.reads
            } else {
                &mut tally.writes
            }) += 1;
            match answer {
                Answer::Done(outcome) => {
                    self.learn(&op, &outcome);
                    call.finish(outcome);
                }
                Answer::Refused if is_read => {
                    tally.refused_reads += 1;
                    call.refused();
                }
                Answer::Refused => {
                    tally.refused_writes += 1;
                    call.refused();
                }
                Answer::Unknown => {
                    tally.unknown_writes += 1;
                    call.finish(KvOutcome::Unknown);
                }
            }
            // A short, seeded pause between operations varies how they
            // overlap; after a refusal a longer one, as production waits
            // before it retries a write refused for want of a leader. It
            // paces, it does not synchronise.
            let pause = match refused {
                true => self.rng.random_range(5..20),
                false => self.rng.random_range(0..3),
            };
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        self.tally
    }
}
