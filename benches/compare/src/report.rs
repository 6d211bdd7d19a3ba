//! Measurements and the one JSON object a run prints, in `meshwire
//! bench --json`'s shape (`workload`, `pin`, `tls`, `p50_us`..., or
//! `msgs_per_sec` / `calls_per_sec`), so scripts/compare.sh reads both
//! programs the same way.

use crate::pin::{Placement, Side};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::time::{Duration, Instant};

/// When a measurement stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// After exactly this many operations.
    Count(u64),
    /// After this long.
    After(Duration),
}

impl Stop {
    /// Whether a run that started at `started` and did `done` is over.
    pub(crate) fn reached(self, done: u64, started: Instant) -> bool {
        match self {
            Stop::Count(n) => done >= n,
            Stop::After(d) => started.elapsed() >= d,
        }
    }
}

/// Latencies in nanoseconds, up to a minute, 3 significant digits.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self(Histogram::new_with_bounds(1, 60_000_000_000, 3)?))
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(ns);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    fn percentiles(&self) -> Map<String, Value> {
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        let mut m = Map::new();
        for (k, q) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
        ] {
            m.insert(k.into(), us(self.0.value_at_quantile(q)).into());
        }
        m.insert("max_us".into(), us(self.0.max()).into());
        m.insert("mean_us".into(), round1(self.0.mean() / 1000.0).into());
        m.insert("min_us".into(), us(self.0.min()).into());
        m
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The fields every result starts with.
pub(crate) fn header(
    workload: &str,
    peer: &str,
    placement: &Placement,
    size: usize,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("workload".into(), workload.into());
    m.insert("peer".into(), peer.into());
    m.insert("pin".into(), json!(placement.effective));
    m.insert("pin_requested".into(), json!(placement.requested));
    if let Some(n) = &placement.note {
        m.insert("pin_note".into(), n.clone().into());
    }
    m.insert("server_cpu".into(), json!(placement.cpu(Side::Server)));
    m.insert("client_cpu".into(), json!(placement.cpu(Side::Client)));
    // None of the peers is run with TLS: they are compared with meshwire's
    // default (TLS on) and with --insecure; see docs/BENCHMARKS.md.
    m.insert("tls".into(), false.into());
    m.insert("size".into(), size.into());
    m
}

/// A serial latency result.
pub(crate) fn latency(mut h: Map<String, Value>, lat: &Latencies, elapsed: Duration) -> Value {
    let n = lat.count();
    let secs = elapsed.as_secs_f64();
    h.insert("round_trips".into(), n.into());
    h.insert("seconds".into(), ((secs * 1e6).round() / 1e6).into());
    h.insert(
        "round_trips_per_sec".into(),
        round1(n as f64 / secs.max(1e-9)).into(),
    );
    h.extend(lat.percentiles());
    Value::Object(h)
}

/// A rate result: `key` is `msgs_per_sec` or `calls_per_sec`.
pub(crate) fn rate(mut h: Map<String, Value>, key: &str, n: u64, elapsed: Duration) -> Value {
    let secs = elapsed.as_secs_f64();
    h.insert(key.replace("_per_sec", ""), n.into());
    h.insert("seconds".into(), ((secs * 1e6).round() / 1e6).into());
    h.insert(key.into(), round1(n as f64 / secs.max(1e-9)).into());
    Value::Object(h)
}

/// Serial round trips: `warmup` unmeasured, then until `stop`, each timed.
pub(crate) async fn serial<F, Fut>(
    warmup: u64,
    stop: Stop,
    mut call: F,
) -> anyhow::Result<(Latencies, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..warmup {
        call().await?;
    }
    let mut lat = Latencies::new()?;
    let started = Instant::now();
    while !stop.reached(lat.count(), started) {
        let t = Instant::now();
        call().await?;
        lat.record(t.elapsed());
    }
    Ok((lat, started.elapsed()))
}

/// `inflight` callers on the current task, each calling in a loop, so that
/// `inflight` calls are outstanding until `stop`; returns calls completed
/// in the measured part and its length. Warm-up: `warmup` calls spread the
/// same way, unmeasured.
pub(crate) async fn pipelined<F, Fut>(
    inflight: u32,
    warmup: u64,
    stop: Stop,
    call: F,
) -> anyhow::Result<(u64, Duration)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let run = |stop: Stop| {
        let done = std::cell::Cell::new(0u64);
        let started = Instant::now();
        let call = &call;
        async move {
            let loops = (0..inflight).map(|_| async {
                // The count is claimed before the call so that a Count stop
                // makes exactly that many calls.
                while !stop.reached(done.get(), started) {
                    done.set(done.get() + 1);
                    call().await?;
                }
                anyhow::Ok(())
            });
            for r in futures::future::join_all(loops).await {
                r?;
            }
            Ok((done.get(), started.elapsed()))
        }
    };
    run(Stop::Count(warmup)).await?;
    run(stop).await
}

/// The RPC peers' two workloads, `<peer>-latency` (serial) and
/// `<peer>-throughput` (`inflight` callers): their header and when they stop.
pub(crate) fn rpc_plan(
    peer: &str,
    load: &crate::Load,
    inflight: Option<u32>,
    p: &Placement,
) -> (Map<String, Value>, Stop) {
    let (kind, stop) = match inflight {
        None => ("latency", load.stop(crate::LATENCY_DEFAULT)),
        Some(_) => ("throughput", load.stop(crate::RATE_DEFAULT)),
    };
    (
        header(&format!("{peer}-{kind}"), peer, p, load.size.max(1)),
        stop,
    )
}

/// Runs `call` serially (latency percentiles) or with `inflight` calls
/// outstanding (calls per second), as `rpc_plan` planned.
pub(crate) async fn rpc_calls<F, Fut>(
    header: Map<String, Value>,
    inflight: Option<u32>,
    warmup: u64,
    stop: Stop,
    call: F,
) -> anyhow::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Ok(match inflight {
        None => {
            let (lat, elapsed) = serial(warmup, stop, call).await?;
            latency(header, &lat, elapsed)
        }
        Some(n) => {
            let (calls, elapsed) = pipelined(n, warmup, stop, call).await?;
            let mut v = rate(header, "calls_per_sec", calls, elapsed);
            v["inflight"] = n.into();
            v
        }
    })
}
