//! `meshwire bench`: benchmarks as programs (DESIGN.md §5), one subcommand
//! per workload.
//!
//! Every workload runs its parts in this one process but on separate
//! single-threaded tokio runtimes, each on its own OS thread, so that
//! `--pin` places them exactly: `same` puts every side on CPU 0, `split`
//! puts the server side on CPU 1 and the client side on CPU 0, `none`
//! leaves placement to the OS. Links are real TCP on 127.0.0.1.
//!
//! Output is a human table, or with `--json` one JSON object on stdout with
//! at least `workload`, `pin`, `tls` and either latency percentiles
//! (`p50_us`, `p99_us`, `p999_us`) or `msgs_per_sec` (DESIGN.md §4).
//!
//! Layout, so that the other workloads of issue 5 slot in: [`pin`] plans
//! and runs the pinned sides, [`report`] turns histograms into tables, JSON
//! and the progress line, and each family of workloads has its own module
//! ([`rpc`], [`messaging`], [`model`] for the textbook cost model, and
//! [`tcp`] for the floor).

mod harness;
mod kv;
mod messaging;
mod model;
mod pin;
mod report;
mod rpc;
mod tcp;

use std::time::Duration;

pub(crate) use pin::Pin;

/// Run a benchmark; prints a human table, or one JSON object with --json.
///
/// Pinning matters on small machines: a round trip between threads on the
/// same core costs a few microseconds, across cores tens. Every result says
/// which placement it ran with.
#[derive(clap::Args, Debug)]
#[command(
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = "Example: meshwire bench rpc-latency --pin split --json"
)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

/// Options every workload shares (accepted before or after the workload).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Common {
    /// Where the sides run: `same` = all on CPU 0, `split` = server on
    /// CPU 1 and client on CPU 0, `none` = wherever the OS puts them.
    #[arg(long, value_enum, default_value_t = Pin::Split, global = true)]
    pin: Pin,
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// Plaintext links. By default the benchmark's nodes use mutual TLS
    /// 1.3, as every meshwire link does.
    #[arg(long, global = true, conflicts_with = "vs_insecure")]
    insecure: bool,
    /// Run the workload twice, with TLS and with --insecure, and report
    /// what TLS costs (latency and throughput, same placement).
    #[arg(long, global = true)]
    vs_insecure: bool,
}

/// How much work a workload does: payload size, warm-up, and when to stop.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Load {
    /// Payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = parse_size)]
    size: usize,
    /// Unmeasured operations before measuring (connections, caches and
    /// branch predictors warm up).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    warmup: u64,
    /// Measure exactly this many operations.
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = parse_count)]
    count: Option<u64>,
    /// Measure for this many seconds (decimals allowed).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    /// After this many operations.
    Count(u64),
    /// Once this much time has passed (operations in flight then finish).
    After(Duration),
}

impl Load {
    /// The stop condition, with `default` when neither --count nor
    /// --duration was given.
    fn stop(&self, default: Stop) -> Stop {
        match (self.count, self.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) => Stop::After(d),
            (None, None) => default,
        }
    }
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
enum Workload {
    /// Serial echo RPC: one call at a time; latency percentiles.
    RpcLatency(rpc::LatencyArgs),
    /// Pipelined echo RPC: N calls in flight; calls per second.
    RpcThroughput(rpc::ThroughputArgs),
    /// Serial request/reply through a router: requester → router →
    /// responder → reply; latency percentiles.
    RequestLatency(rpc::LatencyArgs),
    /// Publisher → router → subscriber(s) (--subs N for fan-out), reliable
    /// and ordered or --best-effort; messages per second.
    PubsubThroughput(messaging::PubSubArgs),
    /// pubsub-throughput with many subscribers: every message reaches each
    /// (--subs N); messages and deliveries per second.
    Fanout(messaging::PubSubArgs),
    /// Reliable one-way messages over one direct link (publisher → router
    /// that subscribes itself); messages per second.
    StreamThroughput(messaging::StreamArgs),
    /// The floor: serial raw TCP ping-pong, no meshwire in the path.
    TcpLatency(tcp::LatencyArgs),
    /// The textbook cost model: measures ts, tr, tp of one exchange, then
    /// all-to-all (n(n−1)/2 exchanges) and RPC (n calls) rounds for each
    /// n of --nodes, against T = n(n−1)/2·(ts+tr+tp) and n·(ts+tr+tp).
    Model(model::ModelArgs),
    /// Shared maps on a three-member Raft group (and eventual replicas):
    /// put and get latency, serial and with --inflight outstanding, for
    /// both consistency modes.
    Kv(kv::KvArgs),
}

/// Payloads above this do not fit one message with the RPC envelope.
const MAX_SIZE: usize = 1024 * 1024 - 4096;

fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("write a whole number of bytes, e.g. 64 (got {s:?})"))?;
    if n > MAX_SIZE {
        return Err(format!(
            "{n} bytes is above the largest payload a call carries ({MAX_SIZE}); use less"
        ));
    }
    Ok(n)
}

/// A whole number in `range`, or `advice` and what was given.
fn parse_between(
    s: &str,
    range: std::ops::RangeInclusive<u32>,
    advice: &str,
) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("{advice} (got {s:?})")),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "measure at least one operation, e.g. --count 20000 (got {s:?})"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("write a number of seconds, e.g. 5 or 0.5 (got {s:?})"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 24.0 * 3600.0 {
        return Err(format!(
            "{s} seconds: use a duration above 0 and at most a day (86400)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    if a.common.vs_insecure && matches!(a.workload, Workload::TcpLatency(_)) {
        return Err(super::UsageError(
            "--vs-insecure compares meshwire links with and without TLS; tcp-latency is raw \
             TCP (no TLS either way): drop --vs-insecure, or pick an rpc-* workload"
                .to_owned(),
        )
        .into());
    }
    if let Workload::Model(m) = &a.workload {
        m.check(a.common.vs_insecure)?;
    }
    let placement = pin::plan(a.common.pin);
    if let Some(note) = &placement.note {
        eprintln!("meshwire: warning: {note}");
    }
    let out = if a.common.vs_insecure {
        let secure = run_workload(&a.workload, &placement, true).await?;
        let plain = run_workload(&a.workload, &placement, false).await?;
        report::tls_cost(&secure, &plain)?
    } else {
        run_workload(&a.workload, &placement, !a.common.insecure).await?
    };
    report::print(&out, a.common.json)
}

async fn run_workload(
    workload: &Workload,
    placement: &pin::Placement,
    tls: bool,
) -> anyhow::Result<report::Outcome> {
    match workload {
        Workload::RpcLatency(w) => rpc::latency(w, placement, tls).await,
        Workload::RpcThroughput(w) => rpc::throughput(w, placement, tls).await,
        Workload::RequestLatency(w) => messaging::request_latency(w, placement, tls).await,
        Workload::PubsubThroughput(w) => {
            messaging::pubsub_throughput("pubsub-throughput", w, placement, tls).await
        }
        Workload::Fanout(w) => messaging::pubsub_throughput("fanout", w, placement, tls).await,
        Workload::StreamThroughput(w) => messaging::stream_throughput(w, placement, tls).await,
        Workload::TcpLatency(w) => tcp::latency(w, placement).await,
        Workload::Model(w) => model::run(w, placement, tls).await,
        Workload::Kv(w) => kv::run(w, placement, tls).await,
    }
}
