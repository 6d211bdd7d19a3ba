//! Messaging workloads, the paths of DESIGN.md §5 that are not RPC:
//!
//! | workload | server side (pinned) | client side (pinned) | measures |
//! |---|---|---|---|
//! | `request-latency` | router + responder node | requester node | serial request → router → responder → reply, latency |
//! | `pubsub-throughput`, `fanout` | router | publisher and `--subs N` subscriber nodes | messages/s arriving at the subscribers |
//! | `stream-throughput` | router subscribing itself | publisher node | reliable one-way messages/s over one direct link |
//!
//! Every payload carries its sequence number in its first 8 bytes, so the
//! receivers tell warm-up traffic from measured traffic and check that
//! nothing arrives twice.

use super::harness::{self, Security, ServerUp};
use super::pin::Placement;
use super::report::{self, Header, Latencies, Outcome, Phase, Progress};
use super::rpc::{round6, LatencyArgs};
use super::{Load, Stop};
use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use meshwire::Node;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REQUEST_SUBJECT: &str = "bench.request";
const TOPIC: &str = "bench.stream";
/// Marks a warm-up payload (the measured ones count up from 0).
const WARMUP: u64 = u64::MAX;
/// Once the publisher is done, a receiver that heard nothing for this
/// long stops waiting (best effort may have dropped the rest).
const QUIET: Duration = Duration::from_millis(500);
/// The most a receiver waits for anything at all.
const GIVE_UP: Duration = Duration::from_secs(60);

/// pubsub-throughput and stream-throughput: one-way messages.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("count", |a| a.help("Publish exactly this many messages [default: 200000 unless --duration]")),
    mut_arg("duration", |a| a.help("Publish for this many seconds instead of --count (decimals allowed)")),
)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    load: Load,
    /// Best effort (at most once, never retransmitted) instead of reliable
    /// and ordered.
    #[arg(long)]
    best_effort: bool,
}

/// pubsub-throughput: publisher → router → subscribers.
#[derive(clap::Args, Debug)]
pub(crate) struct PubSubArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Subscribers, each a node of its own attached to the router; every
    /// message reaches each of them (fan-out).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_subs)]
    subs: u32,
}

fn parse_subs(s: &str) -> Result<u32, String> {
    super::parse_between(s, 1..=64, "use between 1 and 64 subscribers, e.g. --subs 4")
}

#[derive(Serialize)]
struct ThroughputJson {
    #[serde(flatten)]
    header: Header,
    delivery: &'static str,
    subs: u32,
    published: u64,
    /// Messages that arrived, summed over subscribers.
    delivered: u64,
    /// From the first measured arrival to the last, at the receivers.
    seconds: f64,
    /// Messages per second arriving at one subscriber (the publisher's
    /// rate as the mesh carried it).
    msgs_per_sec: f64,
    /// Deliveries per second, summed over subscribers.
    deliveries_per_sec: f64,
    /// Messages per second the publisher got the mesh to own (reliable:
    /// acknowledged by the router).
    published_per_sec: f64,
}

/// The payload for message `seq`: the sequence number, then filler.
fn payload(seq: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(seq);
    b.resize(size.max(8), 0xA5);
    b.freeze()
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    payload
        .get(..8)
        .map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

// ---- request-latency -------------------------------------------------------

pub(crate) async fn request_latency(
    a: &LatencyArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let stop = a.load.stop(Stop::Count(20_000));
    let (size, warmup) = (a.load.size.max(8), a.load.warmup);
    let (lat, elapsed) = harness::run(
        "request-latency",
        placement,
        Security::new(tls)?,
        stop,
        warmup,
        |security| async move {
            let router = security.router().await?;
            let mut up = ServerUp::router(router)?;
            let responder = security.client("responder", &up.addr).await?;
            let mut requests = responder
                .subscribe(REQUEST_SUBJECT)
                .await
                .context("the bench responder could not subscribe; this is a bug")?;
            let answering = responder.clone();
            let task = tokio::spawn(async move {
                while let Some(m) = requests.recv().await {
                    let _ = answering.respond(&m, m.payload().clone()).await;
                }
            });
            up.keep.push(Box::new(AbortOnDrop(task)));
            up.nodes.insert(0, responder);
            Ok(up)
        },
        move |security, addr, progress| async move {
            let node = security.client("requester", &addr).await?;
            let r = requests(&node, size, warmup, stop, &progress).await;
            node.shutdown().await;
            r
        },
    )
    .await?;
    report::serial_outcome(
        Header::new("request-latency", placement, size, tls),
        placement.describe(),
        "requests",
        &lat,
        elapsed,
        format!(
            "request-latency: serial {size}-byte request → router → responder → reply on \
             127.0.0.1 ({warmup} warm-up requests)"
        ),
    )
}

/// Aborts a task when dropped (what the server side keeps alive).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The requester: warm up (waiting for the responder's subscription to
/// reach the router), then serial requests.
async fn requests(
    node: &Node,
    size: usize,
    warmup: u64,
    stop: Stop,
    progress: &Progress,
) -> anyhow::Result<(Latencies, Duration)> {
    let one = |seq: u64| {
        let p = payload(seq, size);
        async move {
            let reply = node
                .request(REQUEST_SUBJECT, p.clone())
                .timeout(Duration::from_secs(5))
                .await?;
            if reply.payload() != &p {
                anyhow::bail!("the responder answered other bytes than it was sent; a bug");
            }
            anyhow::Ok(())
        }
    };
    // The responder's subscription reaches the router asynchronously:
    // until then a request finds no responders.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while let Err(e) = one(WARMUP).await {
        if Instant::now() > ready_by {
            return Err(e.context("the bench responder never became reachable"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    progress.phase(Phase::Warmup);
    for _ in 0..warmup {
        one(WARMUP).await?;
        progress.tick();
    }
    progress.phase(Phase::Measuring);
    let mut lat = Latencies::new()?;
    let start = Instant::now();
    let mut end = start;
    let mut seq = 0u64;
    loop {
        let t = Instant::now();
        let more = match stop {
            Stop::Count(n) => seq < n,
            Stop::After(d) => t - start < d,
        };
        if !more {
            break;
        }
        one(seq).await?;
        end = Instant::now();
        lat.record(end - t);
        seq += 1;
        progress.tick();
    }
    Ok((lat, end - start))
}

// ---- one-way throughput ----------------------------------------------------

/// What the receivers saw, shared between them (and, for
/// stream-throughput, across the two sides).
#[derive(Debug, Default)]
struct Arrivals {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    span: Mutex<Option<(Instant, Instant)>>,
}

impl Arrivals {
    /// One measured message arrived.
    fn arrived(&self, at: Instant) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let mut span = self.span.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *span {
            Some((_, last)) => *last = at,
            None => *span = Some((at, at)),
        }
    }

    fn seconds(&self) -> f64 {
        match *self.span.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((first, last)) => (last - first).as_secs_f64(),
            None => 0.0,
        }
    }
}

/// Receives on `sub` until it has the `expected` measured messages (once
/// the publisher has said how many), or heard nothing for [`QUIET`] after
/// that; counts into `arrivals`. One interval timer checks, rather than a
/// timeout per message, to keep timers off the measured path.
async fn receive(
    mut sub: meshwire::Subscription,
    arrivals: Arc<Arrivals>,
    warm: Arc<AtomicU64>,
    expected: Arc<AtomicU64>,
) {
    let mut next = 0u64;
    let mut seen = 0u64;
    let mut heard = Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(50));
    loop {
        let target = expected.load(Ordering::Acquire);
        if seen >= target {
            return;
        }
        let m = tokio::select! {
            biased;
            m = sub.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = check.tick() => {
                let quiet = heard.elapsed();
                if (target != u64::MAX && quiet > QUIET) || quiet > GIVE_UP {
                    return;
                }
                continue;
            }
        };
        let at = Instant::now();
        heard = at;
        match seq_of(m.payload()) {
            Some(WARMUP) => {
                warm.fetch_add(1, Ordering::Relaxed);
            }
            Some(seq) => {
                if seq < next {
                    arrivals.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    next = seq + 1;
                }
                arrivals.arrived(at);
                seen += 1;
            }
            None => {}
        }
    }
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
struct Publishing {
    size: usize,
    warmup: u64,
    stop: Stop,
    best_effort: bool,
}

impl StreamArgs {
    fn publishing(&self) -> Publishing {
        Publishing {
            size: self.load.size.max(8),
            warmup: self.load.warmup,
            stop: self.load.stop(Stop::Count(200_000)),
            best_effort: self.best_effort,
        }
    }
}

/// Publishes warm-up messages until every receiver has seen one (their
/// subscriptions are in place), then `warmup` more, then the measured
/// ones; returns how many were measured and how long publishing took
/// (reliable: until the router acknowledged the last).
async fn publish_all(
    node: &Node,
    how: Publishing,
    warm: &AtomicU64,
    receivers: u64,
    progress: &Progress,
) -> anyhow::Result<(u64, Duration)> {
    let Publishing {
        size,
        warmup,
        stop,
        best_effort,
    } = how;
    let send = |seq: u64| {
        let p = node.publish(TOPIC, payload(seq, size));
        if best_effort {
            p.best_effort().send()
        } else {
            p.send()
        }
    };
    let ready_by = Instant::now() + Duration::from_secs(10);
    while warm.load(Ordering::Relaxed) < receivers {
        if Instant::now() > ready_by {
            anyhow::bail!("the bench subscribers never received anything; is the router up?");
        }
        send(WARMUP).await?;
        node.flush().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    progress.phase(Phase::Warmup);
    for _ in 0..warmup {
        send(WARMUP).await?;
        progress.tick();
    }
    node.flush().await?;
    progress.phase(Phase::Measuring);
    let start = Instant::now();
    let mut seq = 0u64;
    loop {
        let more = match stop {
            Stop::Count(n) => seq < n,
            Stop::After(d) => start.elapsed() < d,
        };
        if !more {
            break;
        }
        send(seq).await?;
        seq += 1;
        progress.tick();
    }
    node.flush().await?;
    Ok((seq, start.elapsed()))
}

/// pubsub-throughput, and fanout (the same with its own name in the
/// results, for runs with many subscribers).
pub(crate) async fn pubsub_throughput(
    workload: &'static str,
    a: &PubSubArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let how = a.stream.publishing();
    let subs = a.subs;
    let arrivals = Arc::new(Arrivals::default());
    let arr = arrivals.clone();
    let (published, publish_time) = harness::run(
        workload,
        placement,
        Security::new(tls)?,
        how.stop,
        how.warmup,
        |security| async move { ServerUp::router(security.router().await?) },
        move |security, addr, progress| async move {
            let warm = Arc::new(AtomicU64::new(0));
            let expected = Arc::new(AtomicU64::new(u64::MAX));
            let mut nodes = Vec::new();
            let mut receivers = Vec::new();
            for i in 0..subs {
                let node = security.client(&format!("sub-{i}"), &addr).await?;
                let sub = node.subscribe(TOPIC).await?;
                receivers.push(tokio::spawn(receive(
                    sub,
                    arr.clone(),
                    warm.clone(),
                    expected.clone(),
                )));
                nodes.push(node);
            }
            let publisher = security.client("publisher", &addr).await?;
            let r = publish_all(&publisher, how, &warm, u64::from(subs), &progress).await;
            if let Ok((n, _)) = &r {
                expected.store(*n, Ordering::Release);
            }
            for rx in receivers {
                let _ = rx.await;
            }
            publisher.shutdown().await;
            for n in nodes {
                n.shutdown().await;
            }
            r
        },
    )
    .await?;
    throughput_outcome(
        workload,
        &format!("publisher → router → {subs} subscriber(s)"),
        placement,
        tls,
        how,
        subs,
        (published, publish_time),
        &arrivals,
    )
}

pub(crate) async fn stream_throughput(
    a: &StreamArgs,
    placement: &Placement,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let how = a.publishing();
    let arrivals = Arc::new(Arrivals::default());
    // The receiver runs on the server side; the client side tells it how
    // many measured messages to expect, and how many warm-ups it saw.
    let warm = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let (arr, w, e) = (arrivals.clone(), warm.clone(), expected.clone());
    let tail = arrivals.clone();
    let (published, publish_time) = harness::run(
        "stream-throughput",
        placement,
        Security::new(tls)?,
        how.stop,
        how.warmup,
        move |security| async move {
            let router = security.router().await?;
            let sub = router.subscribe(TOPIC).await?;
            let mut up = ServerUp::router(router)?;
            up.keep
                .push(Box::new(AbortOnDrop(tokio::spawn(receive(sub, arr, w, e)))));
            Ok(up)
        },
        move |security, addr, progress| async move {
            let publisher = security.client("publisher", &addr).await?;
            let r = publish_all(&publisher, how, &warm, 1, &progress).await;
            if let Ok((n, _)) = &r {
                expected.store(*n, Ordering::Release);
                // The receiver is on the server side, which stops when
                // this side returns: let it take the tail first (all of
                // it when reliable; until it goes quiet when best effort).
                let (mut last, mut since) = (0, Instant::now());
                loop {
                    let now = tail.delivered.load(Ordering::Relaxed);
                    if now >= *n || since.elapsed() > QUIET {
                        break;
                    }
                    if now != last {
                        (last, since) = (now, Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            publisher.shutdown().await;
            r
        },
    )
    .await?;
    throughput_outcome(
        "stream-throughput",
        "publisher → router over one direct link",
        placement,
        tls,
        how,
        1,
        (published, publish_time),
        &arrivals,
    )
}

fn delivery(best_effort: bool) -> &'static str {
    if best_effort {
        "best-effort"
    } else {
        "reliable-ordered"
    }
}

/// The result of a one-way workload: `how` messages went along `path` to
/// `subs` subscribers; the publisher had `published` owned by the mesh
/// after `publish_time`.
#[allow(clippy::too_many_arguments)] // the run's settings and what it measured
fn throughput_outcome(
    workload: &'static str,
    path: &str,
    placement: &Placement,
    tls: bool,
    how: Publishing,
    subs: u32,
    (published, publish_time): (u64, Duration),
    arrivals: &Arrivals,
) -> anyhow::Result<Outcome> {
    let Publishing {
        size, best_effort, ..
    } = how;
    let title = format!(
        "{workload}: {size}-byte messages, {path}, {} on 127.0.0.1",
        delivery(best_effort)
    );
    let delivered = arrivals.delivered.load(Ordering::Relaxed);
    let duplicates = arrivals.duplicates.load(Ordering::Relaxed);
    if duplicates > 0 {
        anyhow::bail!("{duplicates} messages arrived twice; that is a bug, please report it");
    }
    if !best_effort && delivered < published * u64::from(subs) {
        anyhow::bail!(
            "only {delivered} of {} reliable messages arrived; that is a bug, please report it",
            published * u64::from(subs)
        );
    }
    let secs = arrivals.seconds().max(1e-9);
    let out = ThroughputJson {
        header: Header::new(workload, placement, size, tls),
        delivery: delivery(best_effort),
        subs,
        published,
        delivered,
        seconds: round6(secs),
        msgs_per_sec: report::round1(delivered as f64 / f64::from(subs) / secs),
        deliveries_per_sec: report::round1(delivered as f64 / secs),
        published_per_sec: report::round1(published as f64 / publish_time.as_secs_f64().max(1e-9)),
    };
    let rows = vec![
        ("pin".to_owned(), placement.describe()),
        report::tls_row(tls),
        ("delivery".to_owned(), out.delivery.to_owned()),
        (
            "published".to_owned(),
            format!(
                "{published} ({} msgs/s owned by the mesh)",
                report::rate(out.published_per_sec)
            ),
        ),
        (
            "delivered".to_owned(),
            format!("{delivered} to {subs} subscriber(s) in {secs:.2} s"),
        ),
        ("msgs/s".to_owned(), report::rate(out.msgs_per_sec)),
        (
            "deliveries/s".to_owned(),
            report::rate(out.deliveries_per_sec),
        ),
    ];
    Ok(Outcome {
        json: serde_json::to_value(&out)?,
        title,
        rows,
    })
}
