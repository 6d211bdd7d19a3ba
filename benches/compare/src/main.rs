//! `compare`: the peers `meshwire bench` is raced against (issue 5), with
//! the same flags (`--pin`, `--size`, `--warmup`, `--count`/`--duration`,
//! `--inflight`) and the same JSON shape, so scripts/compare.sh can put a
//! meshwire run and a peer run in one row of one table.
//!
//! ```text
//!  scripts/compare.sh ──> target/release/meshwire bench <workload> --json
//!                    └──> compare <peer-workload> --json   (this program)
//!                                 │
//!        tcp.rs        raw TCP ping-pong, blocking and tokio (the floor)
//!        zmq_peer.rs   ZeroMQ REQ/REP latency, PUSH/PULL throughput
//!        nats.rs       nats-server + async-nats request/reply, pub -> sub
//!        tarpc_peer.rs tarpc echo over TCP (bincode), serial and in flight
//!        tonic_peer.rs tonic unary echo (HTTP/2), serial and in flight
//!        pin.rs        --pin same|split|none, pinned side threads
//!        report.rs     HDR latencies, loops, the JSON object
//! ```
//!
//! Every side runs on its own pinned OS thread (async peers on a
//! current-thread tokio runtime), as in `meshwire bench`; nats-server is a
//! process pinned with the server side.

mod nats;
mod pin;
mod report;
mod tarpc_peer;
mod tcp;
mod tonic_peer;
mod zmq_peer;

use clap::Parser;
use report::Stop;
use std::time::Duration;

/// The peer side of the meshwire comparison; prints one JSON object.
#[derive(Parser, Debug)]
#[command(name = "compare", version)]
struct Cli {
    /// Where the sides run: same = all on CPU 0, split = server side on
    /// CPU 1 and client side on CPU 0, none = the OS decides.
    #[arg(long, value_enum, default_value_t = pin::Pin::Split, global = true)]
    pin: pin::Pin,
    /// Accepted for symmetry with `meshwire bench`: the output is always JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Give up (and exit 1) after this many seconds, so no run hangs a script.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    workload: Workload,
}

/// The load flags every workload takes, as `meshwire bench` has them.
#[derive(clap::Args, Debug, Clone)]
struct Load {
    /// Payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Unmeasured operations first.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    warmup: u64,
    /// Measure exactly this many operations.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Measure for this many seconds instead (decimals allowed).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
}

impl Load {
    fn stop(&self, default: Stop) -> Stop {
        match (self.count, self.duration) {
            (Some(n), _) => Stop::Count(n.max(1)),
            (None, Some(s)) if s.is_finite() && s > 0.0 => Stop::After(Duration::from_secs_f64(s)),
            _ => default,
        }
    }
}

/// Latency runs default to 20 000 round trips, throughput runs to 5 s,
/// as in `meshwire bench`.
const LATENCY_DEFAULT: Stop = Stop::Count(20_000);
const RATE_DEFAULT: Stop = Stop::After(Duration::from_secs(5));

#[derive(clap::Subcommand, Debug)]
enum Workload {
    /// Serial raw TCP ping-pong (the floor), blocking std or tokio.
    TcpLatency {
        #[arg(long, value_enum, default_value_t = tcp::Mode::Blocking)]
        mode: tcp::Mode,
        #[command(flatten)]
        load: Load,
    },
    /// ZeroMQ REQ/REP, serial: latency percentiles.
    ZmqLatency(#[command(flatten)] Load),
    /// ZeroMQ PUSH -> PULL: messages per second at the receiver.
    ZmqThroughput(#[command(flatten)] Load),
    /// NATS request/reply through nats-server: latency percentiles.
    NatsLatency {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        server: nats::ServerArgs,
    },
    /// NATS pub -> nats-server -> sub: messages per second at the subscriber.
    NatsThroughput {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        server: nats::ServerArgs,
    },
    /// tarpc echo of a Vec<u8>, serial: latency percentiles.
    TarpcLatency(#[command(flatten)] Load),
    /// tarpc echo with N calls in flight: calls per second.
    TarpcThroughput {
        #[arg(long, value_name = "N", default_value_t = 64)]
        inflight: u32,
        #[command(flatten)]
        load: Load,
    },
    /// tonic unary echo of bytes, serial: latency percentiles.
    TonicLatency(#[command(flatten)] Load),
    /// tonic unary echo with N calls in flight: calls per second.
    TonicThroughput {
        #[arg(long, value_name = "N", default_value_t = 64)]
        inflight: u32,
        #[command(flatten)]
        load: Load,
    },
}

fn main() {
    let cli = Cli::parse();
    let timeout = Duration::from_secs(cli.timeout.max(1));
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        eprintln!("compare: gave up after {} s (--timeout)", timeout.as_secs());
        nats::kill_server();
        std::process::exit(1);
    });
    let placement = pin::plan(cli.pin);
    if let Some(note) = &placement.note {
        eprintln!("compare: warning: {note}");
    }
    match run(cli.workload, &placement) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            nats::kill_server();
            eprintln!("compare: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(w: Workload, p: &pin::Placement) -> anyhow::Result<serde_json::Value> {
    let inflight_ok = |n: u32| {
        anyhow::ensure!((1..=65_536).contains(&n), "--inflight must be 1..=65536");
        Ok(n)
    };
    match w {
        Workload::TcpLatency { mode, load } => tcp::latency(mode, &load, p),
        Workload::ZmqLatency(load) => zmq_peer::latency(&load, p),
        Workload::ZmqThroughput(load) => zmq_peer::throughput(&load, p),
        Workload::NatsLatency { load, server } => nats::latency(&load, &server, p),
        Workload::NatsThroughput { load, server } => nats::throughput(&load, &server, p),
        Workload::TarpcLatency(load) => tarpc_peer::run(&load, None, p),
        Workload::TarpcThroughput { inflight, load } => {
            tarpc_peer::run(&load, Some(inflight_ok(inflight)?), p)
        }
        Workload::TonicLatency(load) => tonic_peer::run(&load, None, p),
        Workload::TonicThroughput { inflight, load } => {
            tonic_peer::run(&load, Some(inflight_ok(inflight)?), p)
        }
    }
}
