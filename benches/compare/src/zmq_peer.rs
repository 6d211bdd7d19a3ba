//! ZeroMQ over tcp://127.0.0.1 with the `zmq` crate (libzmq). Each side
//! has its own context, made on its pinned thread, so libzmq's I/O thread
//! (started with the context's first socket) inherits that side's CPU.
//!
//! - latency: REQ (client) -> REP (server), serial, each round trip timed.
//! - throughput: PUSH (client) -> PULL (server), counted at the receiver
//!   from the first measured message to the end marker. ZeroMQ
//!   acknowledges nothing; PUSH blocks at its high-water mark (1000).

use crate::pin::{join, spawn_blocking_side, Placement, Side};
use crate::report::{self, Latencies, Stop};
use crate::{Load, LATENCY_DEFAULT, RATE_DEFAULT};
use anyhow::Context as _;
use std::sync::mpsc;
use std::time::Instant;

/// Binds `kind` on an ephemeral loopback port; returns it and its endpoint.
fn bind(ctx: &zmq::Context, kind: zmq::SocketType) -> anyhow::Result<(zmq::Socket, String)> {
    let s = ctx.socket(kind)?;
    s.set_linger(0)?;
    // A run that loses its peer ends with an error, not a hang.
    s.set_rcvtimeo(10_000)?;
    s.bind("tcp://127.0.0.1:*")?;
    let ep = s
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("libzmq gave a non-UTF-8 endpoint"))?;
    Ok((s, ep))
}

fn connect(kind: zmq::SocketType, ep: &str) -> anyhow::Result<(zmq::Context, zmq::Socket)> {
    let ctx = zmq::Context::new();
    let s = ctx.socket(kind)?;
    s.set_linger(0)?;
    s.set_rcvtimeo(10_000)?;
    s.connect(ep)?;
    Ok((ctx, s))
}

pub(crate) fn latency(load: &Load, p: &Placement) -> anyhow::Result<serde_json::Value> {
    let stop = load.stop(LATENCY_DEFAULT);
    let (size, warmup) = (load.size.max(1), load.warmup);
    let (ep_tx, ep_rx) = mpsc::channel();
    let server = spawn_blocking_side(p, Side::Server, move || {
        let ctx = zmq::Context::new();
        let (rep, ep) = bind(&ctx, zmq::REP)?;
        ep_tx.send(ep)?;
        let mut msg = zmq::Message::new();
        loop {
            rep.recv(&mut msg, 0).context("REP receive")?;
            // An empty request is the client's goodbye.
            let last = msg.is_empty();
            rep.send(&*msg, 0)?;
            if last {
                return Ok(());
            }
        }
    })?;
    let ep = ep_rx.recv().context("the REP side did not start")?;
    let client = spawn_blocking_side(p, Side::Client, move || {
        let (_ctx, req) = connect(zmq::REQ, &ep)?;
        let payload = vec![7u8; size];
        let mut reply = zmq::Message::new();
        let mut round_trip = || -> anyhow::Result<()> {
            req.send(&payload[..], 0)?;
            req.recv(&mut reply, 0).context("REQ receive")?;
            Ok(())
        };
        for _ in 0..warmup {
            round_trip()?;
        }
        let mut lat = Latencies::new()?;
        let started = Instant::now();
        while !stop.reached(lat.count(), started) {
            let t = Instant::now();
            round_trip()?;
            lat.record(t.elapsed());
        }
        let elapsed = started.elapsed();
        req.send(&[][..], 0)?;
        req.recv(&mut reply, 0)?;
        Ok((lat, elapsed))
    })?;
    let (lat, elapsed) = join(client)?;
    join(server)?;
    Ok(report::latency(
        report::header("zmq-latency", "zeromq", p, size),
        &lat,
        elapsed,
    ))
}

pub(crate) fn throughput(load: &Load, p: &Placement) -> anyhow::Result<serde_json::Value> {
    let stop = load.stop(RATE_DEFAULT);
    let (size, warmup) = (load.size.max(1), load.warmup);
    let (ep_tx, ep_rx) = mpsc::channel();
    let server = spawn_blocking_side(p, Side::Server, move || {
        let ctx = zmq::Context::new();
        let (pull, ep) = bind(&ctx, zmq::PULL)?;
        ep_tx.send(ep)?;
        let mut msg = zmq::Message::new();
        for _ in 0..warmup {
            pull.recv(&mut msg, 0).context("PULL receive (warm-up)")?;
        }
        let mut n = 0u64;
        let mut started: Option<Instant> = None;
        loop {
            pull.recv(&mut msg, 0).context("PULL receive")?;
            // The clock starts at the first measured arrival.
            let t0 = *started.get_or_insert_with(Instant::now);
            if msg.is_empty() {
                return Ok((n, t0.elapsed()));
            }
            n += 1;
        }
    })?;
    let ep = ep_rx.recv().context("the PULL side did not start")?;
    let client = spawn_blocking_side(p, Side::Client, move || {
        let (_ctx, push) = connect(zmq::PUSH, &ep)?;
        let payload = vec![7u8; size];
        for _ in 0..warmup {
            push.send(&payload[..], 0)?;
        }
        let started = Instant::now();
        let mut sent = 0u64;
        // Checking the clock every message would cost more than a send.
        let check = match stop {
            Stop::Count(_) => 1,
            Stop::After(_) => 256,
        };
        while !(sent % check == 0 && stop.reached(sent, started)) {
            push.send(&payload[..], 0)?;
            sent += 1;
        }
        push.send(&[][..], 0)?;
        // Linger 0 would drop what is still queued when the socket closes:
        // give the receiver time to take it all.
        push.set_linger(5_000)?;
        Ok(sent)
    })?;
    let sent = join(client)?;
    let (n, elapsed) = join(server)?;
    let mut v = report::rate(
        report::header("zmq-throughput", "zeromq", p, size),
        "msgs_per_sec",
        n,
        elapsed,
    );
    v["sent"] = sent.into();
    Ok(v)
}
