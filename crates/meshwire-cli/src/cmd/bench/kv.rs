//! `meshwire bench kv`: shared maps, both consistency modes.
//!
//! The server side runs a three-member Raft group (routers with `raft`, each
//! with its log in its own temporary directory on the real disk, so every
//! acknowledged write is fsynced by a majority); the client side attaches
//! to the first router. For each mode it measures, on a map of 1000 keys:
//! - put and get one at a time (latency percentiles, and the rate that
//!   gives);
//! - put and get with `--inflight` calls outstanding (operations per
//!   second).
//!
//! Linearizable: a put is a Raft write (forwarded to the leader, fsynced
//! by two of three members); a get is a read-index read (one heartbeat
//! round to a majority). Eventual: a put writes the client's own replica
//! and hands the delta to the router (reliable publish: it resolves on the
//! router's ack); a get reads the local replica.

use super::harness::{self, Security, ServerUp};
use super::pin::Placement;
use super::report::{self, Header, Latencies, Outcome, Percentiles, Phase, Progress};
use super::Stop;
use anyhow::Context as _;
use meshwire::state::{Consistency, SharedMap};
use meshwire::Node;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Put and get latency and throughput of shared maps, linearizable (Raft)
/// and eventual (CRDT).
#[derive(clap::Args, Debug)]
pub(crate) struct KvArgs {
    /// Value size in bytes (a JSON string of this many characters).
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = parse_value_size)]
    size: usize,
    /// Operations per serial phase (put, then get), after warm-up.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = super::parse_count)]
    ops: u64,
    /// Unmeasured operations before each mode.
    #[arg(long, value_name = "N", default_value_t = 200)]
    warmup: u64,
    /// Seconds per throughput phase (decimals allowed).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = super::parse_seconds)]
    seconds: Duration,
    /// Calls outstanding in the throughput phases.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = parse_inflight)]
    inflight: u32,
    /// Only this mode (default: both).
    #[arg(long, value_enum)]
    only: Option<Mode>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Linearizable,
    Eventual,
}

fn parse_value_size(s: &str) -> Result<usize, String> {
    let limit = meshwire::state::raft::MAX_VALUE_LEN - 2;
    match s.parse::<usize>() {
        Ok(n) if n <= limit => Ok(n),
        _ => Err(format!(
            "write a value size of at most {limit} bytes (values are at most 256 KiB), e.g. 64 (got {s:?})"
        )),
    }
}

fn parse_inflight(s: &str) -> Result<u32, String> {
    super::parse_between(
        s,
        1..=4096,
        "keep between 1 and 4096 calls in flight, e.g. --inflight 32",
    )
}

/// Keys the benchmark cycles through.
const KEYS: u64 = 1000;
/// Raft members on the server side.
const MEMBERS: usize = 3;

/// One measured phase.
#[derive(Serialize, Debug)]
struct PhaseResult {
    consistency: Mode,
    op: &'static str,
    inflight: u32,
    ops: u64,
    ops_per_sec: f64,
    #[serde(flatten)]
    lat: Percentiles,
}

#[derive(Serialize)]
struct KvJson {
    #[serde(flatten)]
    header: Header,
    members: usize,
    results: Vec<PhaseResult>,
    /// The common schema: the linearizable serial put.
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p999_us: Option<f64>,
}

pub(crate) async fn run(a: &KvArgs, placement: &Placement, tls: bool) -> anyhow::Result<Outcome> {
    let modes: Vec<Mode> = match a.only {
        Some(m) => vec![m],
        None => vec![Mode::Linearizable, Mode::Eventual],
    };
    let (size, ops, warmup, seconds, inflight) = (a.size, a.ops, a.warmup, a.seconds, a.inflight);
    let phases_secs = seconds.as_secs_f64() * 2.0 * modes.len() as f64;
    let results = harness::run(
        "kv",
        placement,
        Security::new(tls)?,
        Stop::After(Duration::from_secs_f64(phases_secs)),
        warmup,
        |security| async move { raft_group(&security).await },
        move |security, addr, progress| async move {
            let node = security.client("kv-client", &addr).await?;
            let r = measure(
                &node, &modes, size, ops, warmup, seconds, inflight, &progress,
            )
            .await;
            node.shutdown().await;
            r
        },
    )
    .await?;
    let first = results
        .iter()
        .find(|r| r.consistency == Mode::Linearizable && r.op == "put" && r.inflight == 1);
    let out = KvJson {
        header: Header::new("kv", placement, a.size, tls),
        members: MEMBERS,
        p50_us: first.map(|r| r.lat.p50_us),
        p99_us: first.map(|r| r.lat.p99_us),
        p999_us: first.map(|r| r.lat.p999_us),
        results,
    };
    let mut rows = vec![
        ("pin".to_owned(), placement.describe()),
        report::tls_row(tls),
        (
            "group".to_owned(),
            format!(
                "{MEMBERS} Raft members (logs fsynced to a real disk); the client attaches to one"
            ),
        ),
    ];
    for r in &out.results {
        let mode = match r.consistency {
            Mode::Linearizable => "linearizable",
            Mode::Eventual => "eventual",
        };
        let label = if r.inflight == 1 {
            format!("{mode} {} serial", r.op)
        } else {
            format!("{mode} {} ×{}", r.op, r.inflight)
        };
        rows.push((
            label,
            format!(
                "{:>10}/s   p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
                report::rate(r.ops_per_sec),
                r.lat.p50_us,
                r.lat.p99_us,
                r.lat.p999_us
            ),
        ));
    }
    Ok(Outcome {
        json: serde_json::to_value(&out)?,
        title: format!(
            "kv: shared maps, {}-byte values over {KEYS} keys, put and get, serial and {} in flight",
            a.size, a.inflight
        ),
        rows,
    })
}

/// The server side: three routers with `raft`, the later two peering with
/// the first, each with its log in a temporary directory; up once the group
/// has three voters.
async fn raft_group(security: &Security) -> anyhow::Result<ServerUp> {
    let dir = tempfile::Builder::new()
        .prefix("meshwire-bench-kv-")
        .tempdir()
        .context("cannot make a temporary directory for the Raft logs")?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..MEMBERS {
        let mut b = security
            .builder()
            .name(format!("member-{i}"))
            .listen("127.0.0.1:0")
            .data_dir(dir.path().join(format!("m{i}")))
            .raft();
        if let Some(first) = nodes.first().and_then(Node::listen_addr) {
            b = b.peer(first);
        }
        nodes.push(
            b.start()
                .await
                .context("cannot start a bench Raft member")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = nodes[0].raft_group().await {
            if info.voters.len() == MEMBERS && info.leader.is_some() {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the bench Raft group did not form within 30 s; retry, or use --pin none"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = nodes[0]
        .listen_addr()
        .context("the bench router has no listen address; this is a bug")?
        .to_owned();
    Ok(ServerUp {
        addr,
        nodes,
        keep: vec![Box::new(dir)],
    })
}

#[allow(clippy::too_many_arguments)] // the parts of one run
async fn measure(
    node: &Node,
    modes: &[Mode],
    size: usize,
    ops: u64,
    warmup: u64,
    seconds: Duration,
    inflight: u32,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<PhaseResult>> {
    progress.unit("ops");
    let value = Value::String("v".repeat(size));
    let mut results = Vec::new();
    for &mode in modes {
        let (name, consistency) = match mode {
            Mode::Linearizable => ("bench", Consistency::Linearizable),
            Mode::Eventual => ("bench-eventual", Consistency::Eventual),
        };
        let map: SharedMap<String, Value> = node
            .shared_map(name, consistency)
            .await
            .with_context(|| format!("cannot open the bench map {name}"))?;
        progress.phase(Phase::Warmup);
        for i in 0..warmup {
            map.put(&key(i), &value)
                .await
                .context("a warm-up put failed")?;
            progress.tick();
        }
        progress.phase(Phase::Measuring);
        // Gets read keys the warm-up or the serial puts wrote.
        let written = warmup.max(ops).min(KEYS);
        let keys = Keys { written };
        for op in ["put", "get"] {
            let (lat, elapsed) = serial(&map, op, &value, ops, keys, progress).await?;
            results.push(result(mode, op, 1, &lat, elapsed));
        }
        for op in ["put", "get"] {
            let (lat, elapsed) =
                pipelined(&map, op, &value, seconds, inflight, keys, progress).await?;
            results.push(result(mode, op, inflight, &lat, elapsed));
        }
    }
    Ok(results)
}

fn key(i: u64) -> String {
    format!("k{}", i % KEYS)
}

/// Which keys the operations use: puts any of [`KEYS`], gets only those
/// already written.
#[derive(Clone, Copy)]
struct Keys {
    written: u64,
}

impl Keys {
    fn for_op(self, op: &str, i: u64) -> u64 {
        if op == "get" {
            i % self.written.max(1)
        } else {
            i
        }
    }
}

fn result(
    mode: Mode,
    op: &'static str,
    inflight: u32,
    lat: &Latencies,
    elapsed: Duration,
) -> PhaseResult {
    PhaseResult {
        consistency: mode,
        op,
        inflight,
        ops: lat.count(),
        ops_per_sec: report::round1(lat.count() as f64 / elapsed.as_secs_f64().max(1e-9)),
        lat: lat.percentiles(),
    }
}

/// One operation: a put of `value`, or a get that must find a value.
async fn one(
    map: &SharedMap<String, Value>,
    op: &str,
    i: u64,
    value: &Value,
) -> anyhow::Result<()> {
    if op == "put" {
        map.put(&key(i), value)
            .await
            .context("a bench put failed")?;
    } else if map
        .get(&key(i))
        .await
        .context("a bench get failed")?
        .is_none()
    {
        anyhow::bail!("a bench get found no value for {}; this is a bug", key(i));
    }
    Ok(())
}

async fn serial(
    map: &SharedMap<String, Value>,
    op: &str,
    value: &Value,
    ops: u64,
    keys: Keys,
    progress: &Progress,
) -> anyhow::Result<(Latencies, Duration)> {
    let mut lat = Latencies::new()?;
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        one(map, op, keys.for_op(op, i), value).await?;
        lat.record(t.elapsed());
        progress.tick();
    }
    Ok((lat, start.elapsed()))
}

/// `inflight` tasks, each doing one operation after another until
/// `seconds` pass.
async fn pipelined(
    map: &SharedMap<String, Value>,
    op: &'static str,
    value: &Value,
    seconds: Duration,
    inflight: u32,
    keys: Keys,
    progress: &Arc<Progress>,
) -> anyhow::Result<(Latencies, Duration)> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..inflight {
        let (map, value, progress) = (map.clone(), value.clone(), progress.clone());
        tasks.spawn(async move {
            let mut lat = Latencies::new()?;
            let mut i = u64::from(t);
            while start.elapsed() < seconds {
                let began = Instant::now();
                one(&map, op, keys.for_op(op, i), &value).await?;
                lat.record(began.elapsed());
                progress.tick();
                i += u64::from(inflight);
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Latencies::new()?;
    while let Some(done) = tasks.join_next().await {
        lat.merge(&done.context("a bench kv task panicked; this is a bug")??);
    }
    Ok((lat, start.elapsed()))
}
