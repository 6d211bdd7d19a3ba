//! `bench model`: the textbook cost model of node interaction, measured.
//!
//! The model (issue 5): when n nodes all talk to each other by message
//! passing, a round has n(n−1)/2 interactions and costs
//! T = n(n−1)/2·(ts+tr+tp); with RPC to shared state every node interacts
//! once with the holder of the state, T = n·(ts+tr+tp). ts, tr and tp are
//! the send, receive and processing time of one interaction. This workload
//! measures ts, tr and tp, then T for each n, and prints one against the
//! other.
//!
//! **Where things run.** One router on the server side (CPU 1 with
//! `--pin split`), which also holds the shared state; n client nodes
//! attached to it, all on the client side's one thread (CPU 0 with `split`
//! or `same`), each with a handler task; links are TCP on 127.0.0.1 (TLS
//! unless `--insecure`). Node counts grow from A to B in one run: nodes are
//! added, never restarted.
//!
//! **An exchange** is one message from one node to another, through the
//! router, processed by the receiver: the sender calls
//! `node.publish(subject, payload).send()` (reliable and ordered, the
//! default delivery), the router forwards it, the receiver's node hands it
//! to its subscription, and the receiver's handler decodes the 16-byte
//! header, checks the message is addressed to it and checks a CRC-32 of
//! the payload. It is complete when the handler is done.
//!
//! - **ts**: how long `Publish::send()` takes on the sender; it returns once
//!   the sender's node has the message queued in its reliable session.
//! - **tr**: from then until the receiver's handler has the message: the
//!   sender node's encoding, encryption and write (which `send()` leaves to
//!   the node's engine task), the router, the receiver node, the wake-up
//!   of the handler. Every node runs in this process, so both ends are read
//!   off one monotonic clock: a true one-way time, not half a round trip.
//! - **tp**: the handler's work, from having the message to having checked it.
//!
//! Why `send()` and not `publish(..).await`: the awaited publish resolves at
//! the router's ack, which travels back while the router forwards the
//! message on, so it overlaps tr and ts+tr+tp would count the
//! sender→router leg twice. Timed with `send()` the three are consecutive,
//! and their sum is one exchange (checked: the two-node exchange measured
//! whole is `exchange_us`). The awaited publish is reported as well
//! (`publish_acked_us`), outside the model. Each part is the median over
//! `--rounds` exchanges between two nodes taking turns to send, after
//! `--warmup` unmeasured ones, with only those two nodes attached.
//!
//! **An all-to-all round**: every pair of the n nodes exchanges one
//! message, n(n−1)/2 exchanges; which of the two sends alternates so each
//! node sends about as often as it receives. **An RPC round**: each of the n
//! nodes calls `put` on the shared state once, n calls: the request goes to
//! the router, which runs the same processing, stores the payload's
//! checksum in a table keyed by node and answers it, and the caller checks
//! the answer. The holder of the state is the router rather than one of
//! the nodes (a coordinator calling the n−1 others), because the textbook
//! picture is n nodes each talking to the one holder of shared state (n
//! interactions, as the model counts), and because a call then crosses two
//! links (caller → router → caller) as an exchange does (sender → router →
//! receiver): the same ts+tr+tp stands for one interaction in both.
//!
//! **Serial** rounds run each interaction after the previous completed, as
//! the model assumes; T is the wall time of the round. The **in flight**
//! columns run the same rounds with every message sent (or call made) at
//! once: how far a pipelining mesh beats the serial model. For each n the
//! four kinds of round are measured `--rounds` times, interleaved, so that
//! noise on a shared machine touches them alike; the table shows p50 over
//! rounds, the JSON p50 and p99.

mod mesh;
mod plot;

use super::harness::{self, Security, ServerUp};
use super::pin::Placement;
use super::report::{self, Header, Latencies, Outcome, Percentiles, Phase};
use super::Stop;
use anyhow::Context as _;
use mesh::Mesh;
use serde::Serialize;
use std::path::PathBuf;

/// The most nodes a run may attach (all-to-all rounds grow as n²).
const MAX_NODES: u32 = 32;

/// model: all-to-all messaging and RPC rounds of n nodes against the
/// textbook cost model.
#[derive(clap::Args, Debug)]
pub(crate) struct ModelArgs {
    /// Node counts to measure: A..B (both included) or one number N;
    /// 2 ≤ A ≤ B ≤ 32.
    #[arg(long, value_name = "A..B", default_value = "2..8", value_parser = parse_nodes)]
    nodes: NodeRange,
    /// Measured rounds per node count (and exchanges for ts, tr, tp).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = parse_rounds)]
    rounds: u32,
    /// Unmeasured rounds before measuring each node count.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = parse_warmup)]
    warmup: u32,
    /// Message size in bytes (at least the 16-byte header).
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = super::parse_size)]
    size: usize,
    /// Also draw measured against model as an SVG chart into FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

/// `--nodes`: the node counts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRange {
    from: u32,
    to: u32,
}

fn parse_nodes(s: &str) -> Result<NodeRange, String> {
    let advice = "write a range of node counts A..B with 2 ≤ A ≤ B ≤ 32, e.g. --nodes 2..8, or \
                  one count, e.g. --nodes 4";
    let whole = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{advice} (got {s:?})"))
    };
    let (from, to) = match s.split_once("..") {
        Some((a, b)) => (whole(a)?, whole(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let n = whole(s)?;
            (n, n)
        }
    };
    if from < 2 || to > MAX_NODES || from > to {
        return Err(format!("{advice} (got {s:?})"));
    }
    Ok(NodeRange { from, to })
}

fn parse_rounds(s: &str) -> Result<u32, String> {
    super::parse_between(
        s,
        1..=1_000_000,
        "measure between 1 and 1000000 rounds, e.g. --rounds 200",
    )
}

fn parse_warmup(s: &str) -> Result<u32, String> {
    super::parse_between(
        s,
        0..=1_000_000,
        "use between 0 and 1000000 warm-up rounds, e.g. --warmup 20",
    )
}

impl ModelArgs {
    /// What clap cannot check: a plot needs one run and a directory to go to.
    pub(crate) fn check(&self, vs_insecure: bool) -> Result<(), crate::cmd::UsageError> {
        let Some(plot) = &self.plot else {
            return Ok(());
        };
        if vs_insecure {
            return Err(crate::cmd::UsageError(
                "--plot draws one run and --vs-insecure makes two: drop one of them (run \
                 model twice, with and without --insecure, for two plots)"
                    .to_owned(),
            ));
        }
        let dir = plot.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            return Err(crate::cmd::UsageError(format!(
                "--plot {}: the directory {} does not exist; create it or pick another path",
                plot.display(),
                dir.display()
            )));
        }
        Ok(())
    }
}

/// One round kind at one n: the model and what was measured.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Versus {
    /// The textbook's T for this n, from the measured ts, tr, tp.
    model_us: f64,
    /// Serial rounds, p50 and p99 over rounds.
    measured_p50_us: f64,
    measured_p99_us: f64,
    /// measured p50 / model.
    ratio: f64,
    /// Everything in flight at once, p50 and p99 over rounds.
    pipelined_p50_us: f64,
    pipelined_p99_us: f64,
}

/// One node count's result.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Row {
    n: u32,
    /// Messages in an all-to-all round: n(n−1)/2.
    exchanges: u32,
    /// Calls in an RPC round: n.
    calls: u32,
    all_to_all: Versus,
    rpc: Versus,
}

#[derive(Serialize)]
struct ModelJson {
    #[serde(flatten)]
    header: Header,
    nodes_from: u32,
    nodes_to: u32,
    rounds: u32,
    warmup: u32,
    ts_us: f64,
    tr_us: f64,
    tp_us: f64,
    /// ts + tr + tp: the model's cost of one interaction.
    model_exchange_us: f64,
    /// One two-node exchange measured whole (p50).
    exchange_us: f64,
    /// `publish(..).await` until the router's ack (p50), outside the model.
    publish_acked_us: f64,
    rows: Vec<Row>,
    /// The largest n's serial all-to-all rounds, so that this result has
    /// the latency fields every workload has.
    #[serde(flatten)]
    largest: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    plot: Option<String>,
}

/// What one n's rounds measured.
struct Rounds {
    n: u32,
    all_to_all: Latencies,
    rpc: Latencies,
    all_to_all_pipelined: Latencies,
    rpc_pipelined: Latencies,
}

pub(crate) async fn run(
    a: &ModelArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let NodeRange { from, to } = a.nodes;
    let (size, warmup, rounds) = (a.size.max(mesh::HEADER), a.warmup, a.rounds);
    // One progress tick per exchange of the parts (two passes), then one
    // per round of each n.
    let per_pass = u64::from(warmup) + u64::from(rounds);
    let ticks = per_pass * (2 + u64::from(to - from + 1));
    let (parts, measured) = harness::run(
        "model",
        placement,
        Security::new(tls)?,
        Stop::Count(ticks),
        0,
        |security| async move {
            let node = security.router().await?;
            let serving = node
                .serve(mesh::state_service())
                .await
                .context("cannot serve the bench shared state on the router; this is a bug")?;
            let mut up = ServerUp::router(node)?;
            up.keep.push(Box::new(serving));
            Ok(up)
        },
        move |security, addr, progress| async move {
            progress.unit("rounds");
            let mut mesh = Mesh::new(security, addr, size);
            let r = async {
                mesh.grow(2).await?;
                progress.phase(Phase::Measuring);
                let parts = mesh.parts(warmup, rounds, &progress).await?;
                let mut measured = Vec::new();
                for n in from..=to {
                    let k = n as usize;
                    mesh.grow(k).await?;
                    let mut m = Rounds {
                        n,
                        all_to_all: Latencies::new()?,
                        rpc: Latencies::new()?,
                        all_to_all_pipelined: Latencies::new()?,
                        rpc_pipelined: Latencies::new()?,
                    };
                    for i in 0..warmup + rounds {
                        let t = [
                            mesh.all_to_all(k, false).await?,
                            mesh.rpc(k, false).await?,
                            mesh.all_to_all(k, true).await?,
                            mesh.rpc(k, true).await?,
                        ];
                        if i >= warmup {
                            m.all_to_all.record(t[0]);
                            m.rpc.record(t[1]);
                            m.all_to_all_pipelined.record(t[2]);
                            m.rpc_pipelined.record(t[3]);
                        }
                        progress.tick();
                    }
                    measured.push(m);
                }
                anyhow::Ok((parts, measured))
            }
            .await;
            mesh.shutdown().await;
            r
        },
    )
    .await?;
    outcome(a, placement, tls, size, &parts, &measured)
}

/// Rounds to two decimals (parts below a microsecond).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn versus(model_us: f64, serial: &Latencies, pipelined: &Latencies) -> Versus {
    let p50 = serial.quantile_us(0.5);
    Versus {
        model_us: report::round1(model_us),
        measured_p50_us: report::round1(p50),
        measured_p99_us: report::round1(serial.quantile_us(0.99)),
        ratio: round2(p50 / model_us.max(1e-9)),
        pipelined_p50_us: report::round1(pipelined.quantile_us(0.5)),
        pipelined_p99_us: report::round1(pipelined.quantile_us(0.99)),
    }
}

fn outcome(
    a: &ModelArgs,
    placement: &Placement,
    tls: bool,
    size: usize,
    parts: &mesh::Parts,
    measured: &[Rounds],
) -> anyhow::Result<Outcome> {
    let median = |l: &Latencies| l.quantile_us(0.5);
    let (ts, tr, tp) = (
        median(&parts.send),
        median(&parts.receive),
        median(&parts.process),
    );
    let one = ts + tr + tp;
    let rows: Vec<Row> = measured
        .iter()
        .map(|m| {
            let exchanges = m.n * (m.n - 1) / 2;
            Row {
                n: m.n,
                exchanges,
                calls: m.n,
                all_to_all: versus(
                    f64::from(exchanges) * one,
                    &m.all_to_all,
                    &m.all_to_all_pipelined,
                ),
                rpc: versus(f64::from(m.n) * one, &m.rpc, &m.rpc_pipelined),
            }
        })
        .collect();
    let largest = measured
        .last()
        .context("no node count was measured; this is a bug")?
        .all_to_all
        .percentiles();
    let how = if tls {
        "TLS on"
    } else {
        "TLS off (--insecure)"
    };
    let plot = match &a.plot {
        Some(path) => {
            let title = format!(
                "meshwire bench model: T per round, measured vs model — pin {}, {how}, {size} B",
                placement.effective.as_str()
            );
            let svg = plot::svg(&rows, &title)?;
            std::fs::write(path, svg)
                .with_context(|| format!("cannot write the plot to {}", path.display()))?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let out = ModelJson {
        header: Header::new("model", placement, size, tls),
        nodes_from: a.nodes.from,
        nodes_to: a.nodes.to,
        rounds: a.rounds,
        warmup: a.warmup,
        ts_us: round2(ts),
        tr_us: round2(tr),
        tp_us: round2(tp),
        model_exchange_us: round2(one),
        exchange_us: round2(median(&parts.whole)),
        publish_acked_us: round2(median(&parts.acked)),
        rows,
        largest,
        plot,
    };
    let rows = table(&out, placement);
    Ok(Outcome {
        json: serde_json::to_value(&out)?,
        title: format!(
            "model: n nodes on one router on 127.0.0.1, {size}-byte messages, measured against \
             the textbook model ({} rounds per n after {} warm-up; µs, p50 over rounds)",
            a.rounds, a.warmup
        ),
        rows,
    })
}

/// The human table: the run's settings and parts, then one line per n.
fn table(out: &ModelJson, placement: &Placement) -> Vec<(String, String)> {
    let us = |v: f64| format!("{v:.2} µs");
    let mut rows = vec![
        ("pin".to_owned(), placement.describe()),
        report::tls_row(out.header.tls),
        (
            "ts".to_owned(),
            format!("{}  send call: Publish::send() returns", us(out.ts_us)),
        ),
        (
            "tr".to_owned(),
            format!(
                "{}  from then until the receiver's handler has it",
                us(out.tr_us)
            ),
        ),
        (
            "tp".to_owned(),
            format!("{}  handler: decode header, check CRC-32", us(out.tp_us)),
        ),
        (
            "ts+tr+tp".to_owned(),
            format!(
                "{}  (one exchange measured whole: {}; publish awaited to the router's ack: {})",
                us(out.model_exchange_us),
                us(out.exchange_us),
                us(out.publish_acked_us)
            ),
        ),
        (
            "model".to_owned(),
            "all-to-all T = n(n−1)/2·(ts+tr+tp), RPC T = n·(ts+tr+tp)".to_owned(),
        ),
        (
            "n".to_owned(),
            format!(
                "{:>5} {:>9} {:>9} {:>6} {:>9}  | {:>5} {:>9} {:>9} {:>6} {:>9}",
                "pairs",
                "a2a model",
                "measured",
                "ratio",
                "in flight",
                "calls",
                "rpc model",
                "measured",
                "ratio",
                "in flight"
            ),
        ),
    ];
    for r in &out.rows {
        let (a, c) = (&r.all_to_all, &r.rpc);
        rows.push((
            r.n.to_string(),
            format!(
                "{:>5} {:>9.1} {:>9.1} {:>6.2} {:>9.1}  | {:>5} {:>9.1} {:>9.1} {:>6.2} {:>9.1}",
                r.exchanges,
                a.model_us,
                a.measured_p50_us,
                a.ratio,
                a.pipelined_p50_us,
                r.calls,
                c.model_us,
                c.measured_p50_us,
                c.ratio,
                c.pipelined_p50_us
            ),
        ));
    }
    if let Some(p) = &out.plot {
        rows.push(("plot".to_owned(), p.clone()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ranges() {
        let ok = |s: &str| parse_nodes(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("2..8"), NodeRange { from: 2, to: 8 });
        assert_eq!(ok("2..=8"), NodeRange { from: 2, to: 8 });
        assert_eq!(ok("5"), NodeRange { from: 5, to: 5 });
        assert_eq!(ok("32..32"), NodeRange { from: 32, to: 32 });
        for bad in ["1..8", "2..33", "8..2", "0", "x", "2..", "..8", "2...8", ""] {
            let e = parse_nodes(bad).err();
            assert!(
                e.as_deref().is_some_and(|e| e.contains("--nodes 2..8")),
                "{bad:?} should be refused with advice, got {e:?}"
            );
        }
    }
}
