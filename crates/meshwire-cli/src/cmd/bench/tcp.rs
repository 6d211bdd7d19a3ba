//! The floor the other workloads are compared with: a raw tokio TCP
//! ping-pong of the same payload, with the same pinning, and nothing of
//! meshwire in the path. What RPC costs on top of TCP is the difference.

use super::pin::{spawn_side, Placement, Side};
use super::report::{self, Header, Latencies, Outcome, Percentiles};
use super::{Load, Stop};
use anyhow::Context as _;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// tcp-latency: serial round trips of a raw payload over one TCP link.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("count", |a| a.help("Measure exactly this many round trips [default: 20000 unless --duration]")),
    mut_arg("duration", |a| a.help("Measure for this many seconds instead of --count (decimals allowed)")),
)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    load: Load,
}

#[derive(Serialize)]
struct LatencyJson {
    #[serde(flatten)]
    header: Header,
    round_trips: u64,
    seconds: f64,
    round_trips_per_sec: f64,
    #[serde(flatten)]
    lat: Percentiles,
}

pub(crate) async fn latency(a: &LatencyArgs, placement: &Placement) -> anyhow::Result<Outcome> {
    let stop = a.load.stop(Stop::Count(20_000));
    let size = a.load.size.max(1);
    let warmup = a.load.warmup;
    // Bound here, handed to the server side's runtime as a std listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot listen on 127.0.0.1; is the loopback interface up?")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let server = spawn_side("server", placement, Side::Server, move || async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        // Echo until the client hangs up.
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await?;
        }
        anyhow::Ok(())
    })?;
    let client = spawn_side("client", placement, Side::Client, move || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut buf = vec![7u8; size];
        for _ in 0..warmup {
            s.write_all(&buf).await?;
            s.read_exact(&mut buf).await?;
        }
        let mut lat = Latencies::new()?;
        let started = Instant::now();
        let mut n = 0u64;
        loop {
            match stop {
                Stop::Count(c) if n >= c => break,
                Stop::After(d) if started.elapsed() >= d => break,
                _ => {}
            }
            let t = Instant::now();
            s.write_all(&buf).await?;
            s.read_exact(&mut buf).await?;
            lat.record(t.elapsed());
            n += 1;
        }
        anyhow::Ok((lat, started.elapsed()))
    })?;
    let (lat, elapsed): (Latencies, Duration) = client.finish().await?;
    server.finish().await?;
    let n = lat.count();
    let secs = elapsed.as_secs_f64();
    let out = LatencyJson {
        header: Header::new("tcp-latency", placement, size, false),
        round_trips: n,
        seconds: (secs * 1e6).round() / 1e6,
        round_trips_per_sec: report::round1(n as f64 / secs.max(1e-9)),
        lat: lat.percentiles(),
    };
    let mut rows = vec![
        ("pin".to_owned(), placement.describe()),
        (
            "round trips".to_owned(),
            format!(
                "{n} in {secs:.2} s ({}/s)",
                report::rate(out.round_trips_per_sec)
            ),
        ),
    ];
    rows.extend(out.lat.rows());
    Ok(Outcome {
        json: serde_json::to_value(&out)?,
        title: format!(
            "tcp-latency: serial {size}-byte ping-pong over raw tokio TCP on 127.0.0.1 (the floor)"
        ),
        rows,
    })
}
