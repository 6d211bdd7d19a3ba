//! RPC workloads: a router that serves `bench.echo` (server side) and a
//! client node attached to it (client side), over TCP on 127.0.0.1. A call
//! is one direct link each way: client → router/server → client, the same
//! path a tarpc or tonic call takes.

use super::harness::{self, Security, ServerUp};
use super::pin::Placement;
use super::report::{self, Header, Latencies, Outcome, Percentiles, Phase, Progress};
use super::{Load, Stop};
use anyhow::Context as _;
use meshwire::rpc::{Client, Service};
use meshwire::Node;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICE: &str = "bench";
const METHOD: &str = "echo";

/// Serial round trips (rpc-latency, request-latency), one at a time.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("count", |a| a.help("Measure exactly this many round trips [default: 20000 unless --duration]")),
    mut_arg("duration", |a| a.help("Measure for this many seconds instead of --count (decimals allowed)")),
)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    pub(crate) load: Load,
}

/// rpc-throughput: N calls in flight continuously.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("count", |a| a.help("Measure exactly this many calls instead of --duration")),
    mut_arg("duration", |a| a.help("Measure for this many seconds (decimals allowed) [default: 5 unless --count]")),
)]
pub(crate) struct ThroughputArgs {
    #[command(flatten)]
    load: Load,
    /// Calls in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_inflight)]
    inflight: u32,
}

fn parse_inflight(s: &str) -> Result<u32, String> {
    super::parse_between(
        s,
        1..=65_536,
        "keep between 1 and 65536 calls in flight, e.g. --inflight 64",
    )
}

#[derive(Serialize)]
struct ThroughputJson {
    #[serde(flatten)]
    header: Header,
    inflight: u32,
    calls: u64,
    seconds: f64,
    msgs_per_sec: f64,
    #[serde(flatten)]
    lat: Percentiles,
}

/// What the client side measured.
struct Measured {
    lat: Latencies,
    elapsed: Duration,
}

pub(crate) async fn latency(
    a: &LatencyArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let stop = a.load.stop(Stop::Count(20_000));
    let m = run_pair("rpc-latency", &a.load, stop, 1, placement, tls).await?;
    report::serial_outcome(
        Header::new("rpc-latency", placement, a.load.size, tls),
        placement.describe(),
        "calls",
        &m.lat,
        m.elapsed,
        format!(
            "rpc-latency: serial {}-byte echo RPC over TCP on 127.0.0.1 ({} warm-up calls)",
            a.load.size, a.load.warmup
        ),
    )
}

pub(crate) async fn throughput(
    a: &ThroughputArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let stop = a.load.stop(Stop::After(Duration::from_secs(5)));
    let m = run_pair("rpc-throughput", &a.load, stop, a.inflight, placement, tls).await?;
    let calls = m.lat.count();
    let secs = m.elapsed.as_secs_f64();
    let out = ThroughputJson {
        header: Header::new("rpc-throughput", placement, a.load.size, tls),
        inflight: a.inflight,
        calls,
        seconds: round6(secs),
        msgs_per_sec: report::round1(calls as f64 / secs.max(1e-9)),
        lat: m.lat.percentiles(),
    };
    let mut rows = vec![
        ("pin".to_owned(), placement.describe()),
        report::tls_row(tls),
        ("in flight".to_owned(), a.inflight.to_string()),
        ("calls".to_owned(), format!("{calls} in {secs:.2} s")),
        ("calls/s".to_owned(), report::rate(out.msgs_per_sec)),
    ];
    rows.extend(out.lat.rows());
    Ok(Outcome {
        json: serde_json::to_value(&out)?,
        title: format!(
            "rpc-throughput: {}-byte echo RPC, {} in flight, over TCP on 127.0.0.1",
            a.load.size, a.inflight
        ),
        rows,
    })
}

/// Seconds to the microsecond.
pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Runs the router serving the echo service (server side) and the calling
/// client (client side) on their pinned threads; returns what the client
/// measured.
async fn run_pair(
    label: &'static str,
    load: &Load,
    stop: Stop,
    inflight: u32,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Measured> {
    let (size, warmup) = (load.size, load.warmup);
    harness::run(
        label,
        placement,
        Security::new(tls)?,
        stop,
        warmup,
        |security| async move {
            let node = security.router().await?;
            let serving = node
                .serve(
                    Service::new(SERVICE).unary(METHOD, true, |_ctx, b: Vec<u8>| async move {
                        Ok::<_, String>(b)
                    }),
                )
                .await
                .context("cannot serve the bench echo service on the router; this is a bug")?;
            let mut up = ServerUp::router(node)?;
            up.keep.push(Box::new(serving));
            Ok(up)
        },
        move |security, addr, progress| async move {
            let node = security.client("client", &addr).await?;
            let r = drive(&node, size, warmup, stop, inflight, &progress).await;
            node.shutdown().await;
            r
        },
    )
    .await
}

/// The client side: discover the service, warm up, measure.
async fn drive(
    node: &Node,
    size: usize,
    warmup: u64,
    stop: Stop,
    inflight: u32,
    progress: &Arc<Progress>,
) -> anyhow::Result<Measured> {
    let client = Client::builder(node, SERVICE)
        .build()
        .await
        .context("the bench client could not subscribe to discovery; this is a bug")?;
    if client.instances().is_empty() {
        anyhow::bail!(
            "the bench client did not discover the echo service within a second; the \
             machine may be overloaded: retry, or use --pin none"
        );
    }
    let payload = vec![0xA5u8; size];
    progress.phase(Phase::Warmup);
    let mut lat = Latencies::new()?;
    if warmup > 0 {
        if inflight == 1 {
            serial(&client, &payload, Stop::Count(warmup), &mut lat, progress).await?;
        } else {
            pipelined(
                &client,
                &payload,
                Stop::Count(warmup),
                inflight,
                &mut lat,
                progress,
            )
            .await?;
        }
    }
    let mut lat = Latencies::new()?;
    progress.phase(Phase::Measuring);
    let elapsed = if inflight == 1 {
        serial(&client, &payload, stop, &mut lat, progress).await?
    } else {
        pipelined(&client, &payload, stop, inflight, &mut lat, progress).await?
    };
    Ok(Measured { lat, elapsed })
}

/// Checks an echo reply.
fn check(sent: &[u8], r: Result<Vec<u8>, meshwire::rpc::RpcError<String>>) -> anyhow::Result<()> {
    let got = r.context("a bench echo call failed; retry, or rerun with --log debug to see why")?;
    if got != sent {
        anyhow::bail!(
            "the echo service answered {} bytes that differ from the {} sent; this is a bug",
            got.len(),
            sent.len()
        );
    }
    Ok(())
}

/// One call at a time; returns the time from the first call to the last
/// reply.
async fn serial(
    client: &Client,
    payload: &[u8],
    stop: Stop,
    lat: &mut Latencies,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut done = 0u64;
    let mut end = start;
    loop {
        let t = Instant::now();
        let more = match stop {
            Stop::Count(n) => done < n,
            Stop::After(d) => t - start < d,
        };
        if !more {
            break;
        }
        let r = client
            .call::<Vec<u8>, Vec<u8>, String>(METHOD, payload.to_vec())
            .await;
        end = Instant::now();
        lat.record(end - t);
        check(payload, r)?;
        done += 1;
        progress.tick();
    }
    Ok(end - start)
}

/// `inflight` tasks on this (single-threaded) runtime, each calling in a
/// loop, so that `inflight` calls are outstanding at all times until the
/// stop condition; returns the time from the first call to the last reply.
/// Long-lived tasks (rather than a future per call) keep the harness's own
/// allocations off the measured path.
async fn pipelined(
    client: &Client,
    payload: &[u8],
    stop: Stop,
    inflight: u32,
    lat: &mut Latencies,
    progress: &Arc<Progress>,
) -> anyhow::Result<Duration> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..inflight {
        let (client, payload, issued, progress) = (
            client.clone(),
            payload.to_vec(),
            issued.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Latencies::new()?;
            let mut end = start;
            loop {
                let t = Instant::now();
                let more = match stop {
                    Stop::Count(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                    Stop::After(d) => t - start < d,
                };
                if !more {
                    break;
                }
                let r = client
                    .call::<Vec<u8>, Vec<u8>, String>(METHOD, payload.clone())
                    .await;
                end = Instant::now();
                lat.record(end - t);
                check(&payload, r)?;
                progress.tick();
            }
            anyhow::Ok((lat, end))
        });
    }
    let mut end = start;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.context("a bench client task panicked; this is a bug")??;
        lat.merge(&l);
        end = end.max(e);
    }
    Ok(end - start)
}
