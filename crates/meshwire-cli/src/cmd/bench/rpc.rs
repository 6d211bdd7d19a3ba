//! RPC workloads: a router that serves `bench.echo` (server side) and a
//! client node attached to it (client side), over TCP on 127.0.0.1. A call
//! is one direct link each way: client → router/server → client, the same
//! path a tarpc or tonic call takes.

use super::pin::{spawn_side, Placement, Side};
use super::report::{self, Header, Latencies, Outcome, Percentiles, Phase, Progress};
use super::{Load, Stop};
use anyhow::Context as _;
use meshwire::rpc::{Client, Service};
use meshwire::security::{Authority, Identity, Trust};
use meshwire::{Node, NodeBuilder};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const SERVICE: &str = "bench";
const METHOD: &str = "echo";
/// How long to wait for the in-process router to come up.
const SETUP_WITHIN: Duration = Duration::from_secs(15);

/// rpc-latency: serial calls, one at a time.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("count", |a| a.help("Measure exactly this many calls [default: 20000 unless --duration]")),
    mut_arg("duration", |a| a.help("Measure for this many seconds instead of --count (decimals allowed)")),
)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    load: Load,
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
    match s.parse::<u32>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err(format!(
            "keep between 1 and 65536 calls in flight, e.g. --inflight 64 (got {s:?})"
        )),
    }
}

#[derive(Serialize)]
struct LatencyJson {
    #[serde(flatten)]
    header: Header,
    calls: u64,
    seconds: f64,
    calls_per_sec: f64,
    #[serde(flatten)]
    lat: Percentiles,
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
    let calls = m.lat.count();
    let secs = m.elapsed.as_secs_f64();
    let out = LatencyJson {
        header: Header::new("rpc-latency", placement, a.load.size, tls),
        calls,
        seconds: round6(secs),
        calls_per_sec: report::round1(calls as f64 / secs.max(1e-9)),
        lat: m.lat.percentiles(),
    };
    let mut rows = vec![
        ("pin".to_owned(), placement.describe()),
        report::tls_row(tls),
        (
            "calls".to_owned(),
            format!(
                "{calls} in {secs:.2} s ({} calls/s)",
                report::rate(out.calls_per_sec)
            ),
        ),
    ];
    rows.extend(out.lat.rows());
    Ok(Outcome {
        json: serde_json::to_string(&out)?,
        title: format!(
            "rpc-latency: serial {}-byte echo RPC over TCP on 127.0.0.1 ({} warm-up calls)",
            a.load.size, a.load.warmup
        ),
        rows,
    })
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
        json: serde_json::to_string(&out)?,
        title: format!(
            "rpc-throughput: {}-byte echo RPC, {} in flight, over TCP on 127.0.0.1",
            a.load.size, a.inflight
        ),
        rows,
    })
}

/// `b` on TLS as the given identity, or plaintext.
fn secured(b: NodeBuilder, security: Option<(Identity, Trust)>) -> NodeBuilder {
    match security {
        Some((identity, trust)) => b.tls(identity, trust),
        None => b.insecure(),
    }
}

/// Seconds to the microsecond.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Runs the server side and the client side on their pinned threads and
/// returns what the client measured.
async fn run_pair(
    label: &'static str,
    load: &Load,
    stop: Stop,
    inflight: u32,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Measured> {
    // With TLS (the default) one in-memory authority certifies both sides,
    // so their links are mutually authenticated as in production.
    let (server_security, client_security) = if tls {
        let ca = Authority::generate("meshwire bench")?;
        (
            Some((ca.issue()?, ca.trust())),
            Some((ca.issue()?, ca.trust())),
        )
    } else {
        (None, None)
    };
    let (addr_tx, addr_rx) = oneshot::channel::<anyhow::Result<String>>();
    // Dropping `stop_tx` (on any path out of here) stops the server side.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = spawn_side("server", placement, Side::Server, move || async move {
        let started = async {
            let node = secured(Node::builder(), server_security)
                .name("bench-server")
                .listen("127.0.0.1:0")
                .start()
                .await
                .context(
                    "cannot start the bench router on 127.0.0.1:0; check that loopback \
                     TCP works here (firewall, sandbox, file descriptor limit)",
                )?;
            let serving = node
                .serve(
                    Service::new(SERVICE).unary(METHOD, true, |_ctx, b: Vec<u8>| async move {
                        Ok::<_, String>(b)
                    }),
                )
                .await
                .context("cannot serve the bench echo service on the router; this is a bug")?;
            let addr = node
                .listen_addr()
                .context("the bench router has no listen address; this is a bug")?
                .to_owned();
            anyhow::Ok((node, serving, addr))
        }
        .await;
        let (node, serving, addr) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = addr_tx.send(Err(e));
                return Ok(());
            }
        };
        let _ = addr_tx.send(Ok(addr));
        let _ = stop_rx.await;
        drop(serving);
        node.shutdown().await;
        Ok(())
    })?;

    let addr = match tokio::time::timeout(SETUP_WITHIN, addr_rx).await {
        Ok(Ok(Ok(addr))) => addr,
        Ok(Ok(Err(e))) => {
            drop(stop_tx);
            let _ = server.finish().await;
            return Err(e);
        }
        Ok(Err(_)) => {
            return Err(server.finish().await.err().unwrap_or_else(|| {
                anyhow::anyhow!("the bench server side ended before it started; this is a bug")
            }))
        }
        Err(_) => anyhow::bail!(
            "the bench router did not start within {SETUP_WITHIN:?}; the machine may be \
             overloaded: retry, or use --pin none"
        ),
    };

    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let (size, warmup) = (load.size, load.warmup);
    let client = spawn_side("client", placement, Side::Client, move || async move {
        let node = secured(Node::builder(), client_security)
            .name("bench-client")
            .connect(&addr)
            .connect_timeout(Duration::from_secs(10))
            .start()
            .await
            .with_context(|| {
                format!(
                    "the bench client could not attach to its router at {addr}; check \
                     that loopback TCP works here"
                )
            })?;
        let r = drive(&node, size, warmup, stop, inflight, &p).await;
        node.shutdown().await;
        r
    })?;
    let measured = report::with_progress(
        &format!("meshwire bench {label}"),
        &progress,
        stop,
        warmup,
        client.finish(),
    )
    .await;
    drop(stop_tx);
    let served = server.finish().await;
    let measured = measured?;
    served?;
    Ok(measured)
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
