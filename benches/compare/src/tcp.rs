//! The floor: serial raw TCP ping-pong of the payload on 127.0.0.1, with
//! nothing but the kernel in the path. `tokio` is the same program as
//! `meshwire bench tcp-latency`; `blocking` is std sockets, no runtime.

use crate::pin::{join, spawn_blocking_side, spawn_side, Placement, Side};
use crate::report::{self, Latencies};
use crate::{Load, LATENCY_DEFAULT};
use std::io::{Read, Write};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `--mode`: which socket API does the ping-pong.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// std::net, blocking reads and writes.
    Blocking,
    /// tokio, one current-thread runtime per side.
    Tokio,
}

pub(crate) fn latency(mode: Mode, load: &Load, p: &Placement) -> anyhow::Result<serde_json::Value> {
    let stop = load.stop(LATENCY_DEFAULT);
    let (size, warmup) = (load.size.max(1), load.warmup);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (workload, (lat, elapsed)) = match mode {
        Mode::Blocking => {
            let server = spawn_blocking_side(p, Side::Server, move || {
                let (mut s, _) = listener.accept()?;
                s.set_nodelay(true)?;
                let mut buf = vec![0u8; size];
                while s.read_exact(&mut buf).is_ok() {
                    s.write_all(&buf)?;
                }
                Ok(())
            })?;
            let client = spawn_blocking_side(p, Side::Client, move || {
                let mut s = std::net::TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                let mut buf = vec![7u8; size];
                for _ in 0..warmup {
                    s.write_all(&buf)?;
                    s.read_exact(&mut buf)?;
                }
                let mut lat = Latencies::new()?;
                let started = Instant::now();
                while !stop.reached(lat.count(), started) {
                    let t = Instant::now();
                    s.write_all(&buf)?;
                    s.read_exact(&mut buf)?;
                    lat.record(t.elapsed());
                }
                Ok((lat, started.elapsed()))
            })?;
            let r = join(client)?;
            join(server)?;
            ("tcp-latency-blocking", r)
        }
        Mode::Tokio => {
            listener.set_nonblocking(true)?;
            let server = spawn_side(p, Side::Server, move || async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let (mut s, _) = listener.accept().await?;
                s.set_nodelay(true)?;
                let mut buf = vec![0u8; size];
                while s.read_exact(&mut buf).await.is_ok() {
                    s.write_all(&buf).await?;
                }
                Ok(())
            })?;
            let client = spawn_side(p, Side::Client, move || async move {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let mut buf = vec![7u8; size];
                for _ in 0..warmup {
                    s.write_all(&buf).await?;
                    s.read_exact(&mut buf).await?;
                }
                let mut lat = Latencies::new()?;
                let started = Instant::now();
                while !stop.reached(lat.count(), started) {
                    let t = Instant::now();
                    s.write_all(&buf).await?;
                    s.read_exact(&mut buf).await?;
                    lat.record(t.elapsed());
                }
                Ok((lat, started.elapsed()))
            })?;
            let r = join(client)?;
            join(server)?;
            ("tcp-latency-tokio", r)
        }
    };
    Ok(report::latency(
        report::header(workload, "tcp", p, size),
        &lat,
        elapsed,
    ))
}
